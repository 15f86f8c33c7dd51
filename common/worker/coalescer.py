"""Group commit for the worker's hot statements (issue 30).

A `process` instance holds several deliveries at once (concurrency 8 on Cloud Run). Each needs a
claim before its handler runs and an exit after; alone, each is a statement, a round trip and a
commit. Here, a delivery that arrives while a statement of its kind is running waits for it to
end and then goes out with every other delivery that arrived meanwhile, in one statement: the
batch forms from the concurrency the instance already has, with no timer. A lone delivery never
waits: if nothing of its kind is running, its statement starts at once (the single-row one, so
its cost and latency are today's). The wait of a delivery that does wait is bounded by one
statement's duration, and counted (`Stats`).

Only the thread whose request is in a batch runs it (the first of the batch leads), so a
handler's thread is never borrowed for other deliveries' work, and each delivery learns its
outcome only after the statement that wrote its row committed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

class Alone:
    """What `many` answers for a request it leaves to its own thread (to run `one`)."""


ALONE = Alone()

# A batch holds at most this many requests (a statement's arrays stay small; an instance runs
# 8 to 80 deliveries at once).
MAX_BATCH = 64


@dataclass
class Stats:
    """What the coalescer did: statements run, requests served, and the batch sizes."""

    statements: int = 0
    requests: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    waited_s: float = 0.0  # the time requests spent waiting for company, summed

    def as_dict(self) -> dict[str, object]:
        return {"statements": self.statements, "requests": self.requests,
                "sizes": dict(sorted(self.sizes.items())), "waited_s": round(self.waited_s, 3)}


class _Slot(Generic[In, Out]):
    __slots__ = ("batch", "done", "error", "item", "leads", "result")

    def __init__(self, item: In) -> None:
        self.item = item
        self.done = threading.Event()
        self.leads = False
        self.batch: list[_Slot[In, Out]] = []
        self.result: Out | Alone | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[In, Out]):
    """Runs `one` for a request alone, `many` for a batch (a result, an exception, or ALONE per
    request, in order: ALONE sends the request back to its own thread, which runs `one` for
    it, so work the batch cannot share never queues behind one thread). `many` raising fails
    every request of its batch with that exception, as each would have failed alone (the
    database was away)."""

    def __init__(self, one: Callable[[In], Out],
                 many: Callable[[Sequence[In]], Sequence[Out | BaseException | Alone]],
                 max_batch: int = MAX_BATCH) -> None:
        self._one = one
        self._many = many
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[In, Out]] = []
        self._busy = False
        self.stats = Stats()

    def submit(self, item: In) -> Out:
        slot: _Slot[In, Out] = _Slot(item)
        with self._lock:
            leads = not self._busy
            if leads:
                self._busy = True
                slot.leads, slot.batch = True, [slot]
            else:
                self._queue.append(slot)
        if not leads:
            started = time.monotonic()
            slot.done.wait()
            with self._lock:
                self.stats.waited_s += time.monotonic() - started
        if slot.leads:
            self._lead(slot.batch)
        if slot.error is not None:
            raise slot.error
        if isinstance(slot.result, Alone):
            return self._one(item)
        return slot.result  # type: ignore[return-value]

    def _lead(self, batch: list[_Slot[In, Out]]) -> None:
        """Run this batch, hand the lead to the next one (which formed meanwhile), then tell
        each member its outcome."""
        results: Sequence[Out | BaseException | Alone] | None = None
        failure: BaseException | None = None
        try:
            if len(batch) == 1:
                results = [self._one(batch[0].item)]
            else:
                results = self._many([s.item for s in batch])
                if len(results) != len(batch):  # never leave a member waiting for its answer
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as exc:  # each member gets it, as it would alone
            failure = exc
        finally:
            self._hand_on(len(batch))
        for index, member in enumerate(batch):
            outcome = failure if results is None else results[index]
            if isinstance(outcome, BaseException):
                member.error = outcome
            else:
                member.result = outcome
            member.leads = False
            if member is not batch[0]:
                member.done.set()

    def _hand_on(self, size: int) -> None:
        with self._lock:
            self.stats.statements += 1
            self.stats.requests += size
            self.stats.sizes[size] += 1
            if not self._queue:
                self._busy = False
                return
            following = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
        leader = following[0]
        leader.leads, leader.batch = True, following
        leader.done.set()
