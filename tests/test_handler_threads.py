"""Handler threads: one per running handler, kept for the next run once it returns."""

from __future__ import annotations

import contextvars
import threading

import pytest

from common.worker.handler_threads import HandlerAborted, HandlerThreads
from tests.support.polling import wait_until

WAIT_S = 10  # generous bound on waits for another thread; nothing here is timed

job_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_var", default="unset")


def test_a_returned_handler_s_thread_runs_the_next_job() -> None:
    threads = HandlerThreads(keep=4)
    first = threads.start(threading.get_ident).result(WAIT_S)
    _wait_idle(threads, 1)
    second = threads.start(threading.get_ident).result(WAIT_S)
    assert first == second != threading.get_ident()
    assert threads.start(lambda: threading.current_thread().name).result(WAIT_S) == "job-handler"
    threads.close()


def test_a_hung_handler_keeps_its_thread_and_blocks_no_one() -> None:
    threads = HandlerThreads(keep=4)
    release = threading.Event()
    hung = threads.start(release.wait, WAIT_S)
    try:
        assert threads.start(lambda: 42).result(WAIT_S) == 42  # on a thread of its own
        assert not hung.done()
    finally:
        release.set()
    assert hung.result(WAIT_S) is True


def test_at_most_keep_threads_wait_idle() -> None:
    threads = HandlerThreads(keep=1)
    gate = threading.Barrier(3)

    def hold() -> threading.Thread:
        gate.wait(WAIT_S)
        return threading.current_thread()

    runs = [threads.start(hold) for _ in range(2)]
    gate.wait(WAIT_S)  # both runs hold a thread at once
    used = [run.result(WAIT_S) for run in runs]
    assert used[0] is not used[1]
    wait_until(lambda: sum(t.is_alive() for t in used) == 1,  # no place to park: it exits
               "one of the two threads to exit", timeout=WAIT_S, pause=0.001)
    assert threads.idle() == 1
    threads.close()
    for thread in used:
        thread.join(WAIT_S)
        assert not thread.is_alive()  # close lets idle threads exit


def test_each_run_starts_with_an_empty_context_and_leaks_none_into_the_next() -> None:
    """Nothing of the caller's context (on Cloud Run: Flask's request context) or of an
    earlier run reaches a handler: each run binds what it needs itself."""
    threads = HandlerThreads(keep=1)

    def read_then_write() -> str:
        seen = job_var.get()
        job_var.set("written by the handler")
        return seen

    token = job_var.set("the caller's")
    try:
        assert threads.start(read_then_write).result(WAIT_S) == "unset"
        _wait_idle(threads, 1)
        assert threads.start(read_then_write).result(WAIT_S) == "unset"
        assert job_var.get() == "the caller's"
    finally:
        job_var.reset(token)
    threads.close()


def test_exceptions_reach_the_future_and_the_thread_survives() -> None:
    threads = HandlerThreads(keep=1)

    def boom() -> None:
        raise ValueError("bad input")

    def leave() -> None:
        raise SystemExit(3)

    with pytest.raises(ValueError, match="bad input"):
        threads.start(boom).result(WAIT_S)
    _wait_idle(threads, 1)
    with pytest.raises(HandlerAborted) as aborted:
        threads.start(leave).result(WAIT_S)
    assert aborted.value.args == ("SystemExit",)
    assert isinstance(aborted.value.__cause__, SystemExit)
    _wait_idle(threads, 1)
    assert threads.start(lambda: "still serving").result(WAIT_S) == "still serving"


def _wait_idle(threads: HandlerThreads, count: int) -> None:
    """The future is settled just before the thread parks itself: wait for the park."""
    wait_until(lambda: threads.idle() >= count, f"{count} idle thread(s)", timeout=WAIT_S,
               pause=0.001)
