"""Threads for handlers: each run gets a thread of its own, and a thread whose handler returned
waits for the next run instead of exiting.

A handler runs on its own thread so that its time limit holds: the request thread waits for it
with a timeout and, past the limit, records the timeout and acknowledges while the handler is
abandoned (told so by `cancelled()`). Not a bounded pool: a handler that hangs keeps its thread
and no later job waits behind it, since a run finding no idle thread starts a new one.

Why keep them: starting a thread, with the handshake `Thread.start` makes with it, cost about
230 µs of CPU per job more than handing a run to a waiting thread (364 vs 136 µs per run,
measured on this project's 2-core VM), a tenth of all the CPU `process` spends on a job.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


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

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            run, self._next = self._next, None
            if run is None:  # not given work: cannot happen, but never spin
                continue
            fn, args, future, context = run
            _settle(future, context, fn, args)
            del run, fn, args, future, context  # hold nothing of a finished job while idle
            if not self._owner.park(self):
                return


class HandlerThreads:
    """Hands each run to an idle thread, or to a new one when none is idle. At most `keep`
    threads wait idle (about the instance's request concurrency); others exit when done."""

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._idle: list[_HandlerThread] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` on a thread of its own; the future holds its value or exception.
        It runs in a copy of the caller's context, so the job's trace stays bound to it."""
        future: Future[Any] = Future()
        run: _Run = (fn, args, future, contextvars.copy_context())
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
