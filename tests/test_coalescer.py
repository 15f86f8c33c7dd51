"""The group commit (common/worker/coalescer.py): a lone request goes out at once, alone; requests
that arrive while a statement runs share the next one; each learns only its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from common.worker.coalescer import ALONE, Alone, Coalescer


class _Statements:
    """A stand-in for the database: each call is one 'statement', which blocks until released
    so that the test decides what arrives while it runs (no timing involved)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)

    def one(self, item: int) -> int:
        return self.many([item])[0]  # type: ignore[return-value]

    def many(self, items: Sequence[int]) -> list[int | BaseException | Alone]:
        self.calls.append(list(items))
        self.started.release()
        self.gate.acquire()
        return [ValueError(i) if i < 0 else ALONE if i == 0 else i * 10 for i in items]


def _submit_all(coalescer: Coalescer[int, int], items: list[int],
                results: dict[int, object]) -> list[threading.Thread]:
    def run(item: int) -> None:
        try:
            results[item] = coalescer.submit(item)
        except ValueError as exc:
            results[item] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for thread in threads:
        thread.start()
    return threads


def _queued(coalescer: Coalescer[int, int], n: int) -> None:
    while True:  # the requests are queued behind the running statement
        with coalescer._lock:
            if len(coalescer._queue) == n:
                return
        threading.Event().wait(0.001)


def test_requests_arriving_during_a_statement_share_the_next_one() -> None:
    db = _Statements()
    coalescer: Coalescer[int, int] = Coalescer(db.one, db.many)
    results: dict[int, object] = {}
    first = _submit_all(coalescer, [1], results)
    db.started.acquire()  # the lone request's statement runs: it did not wait for company
    assert db.calls == [[1]]
    rest = _submit_all(coalescer, [2, 3, -4, 5], results)
    _queued(coalescer, 4)
    db.gate.release()
    db.started.acquire()
    db.gate.release()
    for thread in first + rest:
        thread.join()
    assert db.calls[0] == [1] and sorted(db.calls[1]) == [-4, 2, 3, 5]
    assert {k: v for k, v in results.items() if k > 0} == {1: 10, 2: 20, 3: 30, 5: 50}
    assert isinstance(results[-4], ValueError)  # only its own request fails
    assert coalescer.stats.statements == 2 and coalescer.stats.requests == 5
    assert coalescer.stats.sizes == {1: 1, 4: 1}
    assert not coalescer._busy


def test_a_request_the_batch_leaves_alone_runs_alone_on_its_own_thread() -> None:
    db = _Statements()
    coalescer: Coalescer[int, int] = Coalescer(
        lambda i: i + 1000 if i == 0 else db.one(i), db.many)
    results: dict[int, object] = {}
    blocker = _submit_all(coalescer, [7], results)
    db.started.acquire()
    rest = _submit_all(coalescer, [0, 8], results)
    _queued(coalescer, 2)
    db.gate.release()
    db.started.acquire()
    db.gate.release()
    for thread in blocker + rest:
        thread.join()
    assert results == {7: 70, 0: 1000, 8: 80}


def test_a_failed_statement_fails_each_member_and_the_next_batch_still_runs() -> None:
    calls: list[list[int]] = []

    def many(items: Sequence[int]) -> list[int | BaseException | Alone]:
        calls.append(list(items))
        raise ConnectionError("database away")

    coalescer: Coalescer[int, int] = Coalescer(lambda i: many([i])[0], many)  # type: ignore[misc]
    with pytest.raises(ConnectionError):
        coalescer.submit(1)
    with pytest.raises(ConnectionError):
        coalescer.submit(2)
    assert calls == [[1], [2]] and not coalescer._busy
