"""A few sender threads shared by owners in turn: one owner's slow or failing receivers hold at
most `per_owner` of them, so they never make another owner's delivery wait behind theirs.

Owners with work take turns (round robin); a task whose owner already has `per_owner` tasks
running waits while other owners' tasks run. A task may be given a delay (a retry's backoff):
it waits in a heap, not on a thread. Threads are started on first use and live as long as the
instance (daemon threads: Cloud Run's shutdown does not wait for them; the outbox row is kept,
and the sweep sends what an instance could not).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Task = tuple[Callable[[], Any], "Future[Any]"]


class OwnerLanes:
    def __init__(self, *, workers: int, per_owner: int, name: str) -> None:
        self.workers = workers
        self.per_owner = per_owner
        self._name = name
        self._cond = threading.Condition()
        self._ready: OrderedDict[str, deque[Task]] = OrderedDict()  # owners in turn order
        self._delayed: list[tuple[float, int, str, Task]] = []
        self._order = itertools.count()
        self._running: Counter[str] = Counter()
        self._started = False

    def submit(self, owner: str, fn: Callable[[], Any], *, delay_s: float = 0.0) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if not self._started:
                for i in range(self.workers):
                    threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._name}-{i}").start()
                self._started = True
            if delay_s > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay_s, next(self._order),
                                               owner, (fn, future)))
            else:
                self._ready.setdefault(owner, deque()).append((fn, future))
            self._cond.notify_all()
        return future

    def running(self, owner: str) -> int:
        with self._cond:
            return self._running[owner]

    def waiting(self, owner: str) -> int:
        """Tasks of `owner` not yet running (ready or delayed)."""
        with self._cond:
            ready = len(self._ready.get(owner, ()))
            return ready + sum(1 for d in self._delayed if d[2] == owner)

    def _pick(self) -> tuple[str, Task] | None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, owner, task = heapq.heappop(self._delayed)
            self._ready.setdefault(owner, deque()).append(task)
        for owner in list(self._ready):
            if self._running[owner] >= self.per_owner:
                continue
            tasks = self._ready.pop(owner)
            task = tasks.popleft()
            if tasks:
                self._ready[owner] = tasks  # back of the line: the next owner goes first
            return owner, task
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._pick()
                while picked is None:
                    wait = self._delayed[0][0] - time.monotonic() if self._delayed else None
                    self._cond.wait(timeout=wait)
                    picked = self._pick()
                owner, (fn, future) = picked
                self._running[owner] += 1
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                with self._cond:
                    self._running[owner] -= 1
                    if self._running[owner] <= 0:
                        del self._running[owner]
                    self._cond.notify_all()
