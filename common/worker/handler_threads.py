"""Threads for handlers: each run gets a thread of its own, and a thread whose handler returned
waits for the next run instead of exiting.

A handler runs on its own thread so that its time limit holds: the request thread waits for it
with a timeout and, past the limit, records the timeout and acknowledges while the handler is
abandoned (told so by `cancelled()`). Not a bounded pool: a handler that hangs keeps its thread
and no later job waits behind it, since a run finding no idle thread starts a new one.

Each run starts in an empty `contextvars` context, so nothing of the request or of an earlier
run reaches the handler; `threading.local` values, on the other hand, stay with the thread.

Why keep them: starting a thread, with the handshake `Thread.start` makes with it, cost about
230 µs of CPU per job more than handing a run to a waiting thread (364 vs 136 µs per run,
measured on this project's 2-core VM), a tenth of all the CPU `process` spends on a job.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from common.logs import bind_traceparent


class HandlerAborted(Exception):
    """A handler raised a BaseException that is not an Exception (SystemExit, say): on its own
    thread it ends only that run, which then counts as a transient failure like any other."""


_Run = tuple[Callable[..., Any], tuple[Any, ...], Future[Any], contextvars.Context]


class _HandlerThread:
    """One daemon thread that runs one handler at a time, handed over through `_go`."""

    def __init__(self, owner: HandlerThreads) -> None:
        self._owner = owner
        self._go = threading.Lock()
        self._go.acquire()
        self._next: _Run | None = None
        threading.Thread(target=self._loop, daemon=True, name="job-handler").start()

    def give(self, run: _Run) -> None:
        self._next = run
        self._go.release()

    def stop(self) -> None:
        """Wake this idle thread with nothing to run, so it exits."""
        self._next = None
        self._go.release()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            run, self._next = self._next, None
            if run is None:  # `close`, or given nothing: this thread is done
                return
            fn, args, future, context = run
            _settle(future, context, fn, args)
            del run, fn, args, future, context  # hold nothing of a finished job while idle
            if not self._owner.park(self):
                return


def request_threads() -> int:
    """How many requests an instance serves at once: functions-framework's gunicorn runs
    `THREADS` request threads (default 4 x CPUs). Each waits for its own handler, so more
    handlers than that run at once only when some were abandoned past their time limit."""
    return int(os.environ.get("THREADS") or (os.cpu_count() or 1) * 4)


class HandlerThreads:
    """Hands each run to an idle thread, or to a new one when none is idle. At most `keep`
    threads wait idle (by default as many as the instance's request threads); others exit
    when done."""

    def __init__(self, keep: int | None = None) -> None:
        self._keep = request_threads() if keep is None else keep
        self._lock = threading.Lock()
        self._idle: list[_HandlerThread] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` on a thread of its own; the future holds its value or exception.
        Each run starts in an empty `contextvars` context, as on a new thread: nothing of the
        request (Flask's request context, the push's headers) nor of an earlier run reaches
        it. What a run needs bound, it binds itself (the worker binds the job's trace)."""
        future: Future[Any] = Future()
        run: _Run = (fn, args, future, contextvars.Context())
        with self._lock:
            thread = self._idle.pop() if self._idle else None
        (thread or _HandlerThread(self)).give(run)
        return future

    def park(self, thread: _HandlerThread) -> bool:
        """Whether `thread`, its run over, should wait for another (else it exits)."""
        with self._lock:
            if len(self._idle) >= self._keep:
                return False
            self._idle.append(thread)
            return True

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Let the idle threads exit (tests; an instance simply stops). Running ones finish
        their run first, then find no place to park."""
        with self._lock:
            idle, self._idle, self._keep = self._idle, [], 0
        for thread in idle:
            thread.stop()


def _settle(future: Future[Any], context: contextvars.Context, fn: Callable[..., Any],
            args: tuple[Any, ...]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(context.run(fn, *args))
    except Exception as exc:
        future.set_exception(exc)
    except BaseException as exc:
        aborted = HandlerAborted(type(exc).__name__)
        aborted.__cause__ = exc
        future.set_exception(aborted)
    finally:
        # An exception's traceback holds this frame: drop the job's content and context now
        # rather than when the cycle collector finds them.
        del fn, args, context, future


def describe(exc: BaseException) -> tuple[str, str]:
    """An exception's type name and message, whatever the exception: its `__str__` may raise
    or return anything. The store makes both storable (no NUL, no lone surrogate, bounded)."""
    if isinstance(exc, HandlerAborted) and exc.args:
        return str(exc.args[0]), f"the handler raised {exc.args[0]}"
    try:
        message = str(exc)
    except BaseException as err:  # user code: whatever its __str__ raises
        message = f"(the exception's message could not be read: {type(err).__name__})"
    return type(exc).__name__, message


def run_traced(traceparent: str | None, project: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A handler's run under its job's trace (its thread starts with an empty context), so
    the lines it logs join the trace of the request that submitted the job."""
    bind_traceparent(traceparent, project)
    return fn(*args)
