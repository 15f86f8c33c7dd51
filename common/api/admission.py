"""Admission at the door: what one owner may take of a `submit` instance (issues 25 and 27).

Three limits, each refused with 429, a Retry-After and a problem naming it (`quota`, `limit`):

- `wait_slots` (the instance's share for waits). Under functions-framework a request is served by
  one of gunicorn's request threads (gthread worker, THREADS of them) from start to end: WSGI has
  no way to park a request and answer it later from another thread, so a `?wait=` request holds
  its thread while it waits, whatever wakes it. Not holding a thread would take an ASGI server and
  an async stack down to the database driver. Instead waits get a bounded share of the threads,
  `floor(THREADS x WAIT_SHARE)` (at least 1); the other threads always serve submits and reads.
  A wait past the share is refused at once rather than shortened to an immediate answer: a
  caller looping on `?wait=` would turn immediate answers into a busy loop, while a 429 says when
  to come back.
- `owner_max_waits` (per owner, per instance): so that one owner cannot fill the share either.
- `max_submits_per_s` (per owner, per instance): a token bucket, refilled at the owner's rate,
  holding at most one second's worth. Kept in memory: it costs no round trip and no hot row,
  and what it protects (an instance's threads and CPU) is per instance. The amount of queued work,
  which is global, is bounded in PostgreSQL instead (`max_pending`, common/store/callers.py).

Retry-After is whole seconds, rounded up, at least 1: when the owner's oldest wait ends at the
latest, or when the bucket holds a token again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from common.api.problems import ProblemError
from common.store.errors import DatabaseUnavailable

# With this many owners remembered, an instance forgets those it can forget without effect.
PRUNE_AT = 10_000


def too_many(kind: str, title: str, detail: str, quota: str, limit: int,
             retry_after_s: float) -> ProblemError:
    """429 naming the limit; Retry-After in whole seconds, at least 1."""
    seconds = max(1, math.ceil(retry_after_s))
    return ProblemError(429, kind, title, detail, headers={"Retry-After": str(seconds)},
                        quota=quota, limit=limit, retry_after_s=seconds)


class WaitGate:
    """The instance's waits: at most `slots` at once, at most `per_owner` of them one owner's.
    Never blocks: a wait is admitted or refused at once."""

    def __init__(self, slots: int, per_owner: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots, self.per_owner = slots, per_owner
        self._clock = clock
        self._lock = threading.Lock()
        self._ends: dict[str, list[float]] = {}  # owner -> when each of its waits ends
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def admit(self, owner: str, wait_s: float) -> Iterator[None]:
        now = self._clock()
        end = now + wait_s
        with self._lock:
            mine = self._ends.get(owner, [])
            if len(mine) >= self.per_owner:
                raise too_many(
                    "wait-limit-reached", "Too many waiting requests",
                    f"an owner may hold at most {self.per_owner} waiting requests on an "
                    "instance at once; retry after Retry-After, or poll without wait",
                    "owner_max_waits", self.per_owner, min(mine) - now)
            if self._held >= self.slots:
                soonest = min(t for ends in self._ends.values() for t in ends)
                raise too_many(
                    "waits-busy", "No room for another waiting request",
                    f"this instance serves at most {self.slots} waiting requests at once; retry "
                    "after Retry-After, or poll without wait",
                    "wait_slots", self.slots, soonest - now)
            self._ends.setdefault(owner, []).append(end)
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                mine = self._ends[owner]
                mine.remove(end)
                if not mine:
                    del self._ends[owner]
                self._held -= 1


@dataclass
class _Bucket:
    tokens: float
    at: float
    rate: int


class SubmitBuckets:
    """Per owner, at most `rate` submits a second on this instance, in bursts of at most `rate`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def take(self, owner: str, rate: int, n: int = 1) -> float:
        """0 if a submit of `n` jobs is admitted (`n` tokens spent), else the seconds until it
        would be. A batch (n > 1) is admitted while the bucket holds a token and may leave it in
        debt, down to 1 - n: the owner's next submit then waits until the debt is repaid at the
        owner's rate, so a batch counts as n submits over time without ever being refused for
        being larger than one second's worth."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(owner)
            if bucket is None:
                if len(self._buckets) >= PRUNE_AT:
                    self._prune(now)
                bucket = self._buckets[owner] = _Bucket(float(rate), now, rate)
            bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * rate)
            bucket.at, bucket.rate = now, rate
            if bucket.tokens >= 1:
                bucket.tokens -= n
                return 0.0
            return (1 - bucket.tokens) / rate

    def _prune(self, now: float) -> None:
        """Forget owners idle long enough for their bucket to be full again: forgetting them
        changes nothing (a new bucket starts full)."""
        idle = [o for o, b in self._buckets.items()
                if b.tokens + (now - b.at) * b.rate >= b.rate]
        for owner in idle:
            del self._buckets[owner]


@dataclass(frozen=True)
class Quota:
    """An owner's effective quotas at the door; 0 = unlimited."""

    max_submits_per_s: int
    max_pending: int


class QuotaCache:
    """Each owner's quotas: the override in `owner_limits` if it has one, else the default.
    Read from the database at most once per `ttl_s` per owner and instance, so an override
    reaches every instance within `ttl_s`; a submit in between costs a dictionary lookup."""

    def __init__(self, load: Callable[[str], tuple[int | None, int | None]], default: Quota,
                 ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._load, self._default, self._ttl = load, default, ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Quota, float]] = {}

    def get(self, owner: str) -> Quota:
        now = self._clock()
        known = self._known.get(owner)
        if known is not None and now - known[1] < self._ttl:
            return known[0]
        try:
            rate, pending = self._load(owner)  # outside the lock: a network call
        except DatabaseUnavailable:
            # The defaults until the database answers again (not remembered): the submit's own
            # INSERT answers 503 then anyway, and bad input is still told it is bad (4xx).
            return self._default
        quota = Quota(
            self._default.max_submits_per_s if rate is None else rate,
            self._default.max_pending if pending is None else pending,
        )
        with self._lock:
            if len(self._known) >= PRUNE_AT:
                self._known = {o: q for o, q in self._known.items() if now - q[1] < self._ttl}
            self._known[owner] = (quota, now)
        return quota


class PendingHints:
    """When to count an owner's PENDING jobs. The count (in the INSERT, common/store/callers.py)
    costs up to a millisecond or two for an owner with thousands queued, so an instance counts
    only when it must: when it has not counted for that owner in the last `recheck_s`, or when
    what it saw then, plus what it has accepted since, is at least half the quota. An owner far
    below its quota is counted about once a second per instance; one near it, on every submit.
    The price: between two counts an owner below half its quota may pass it by what it submits
    across instances within `recheck_s` (more than half its quota in a second: the submit rate
    quota keeps that from happening)."""

    def __init__(self, recheck_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._recheck_s, self._clock = recheck_s, clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float]] = {}  # owner -> (PENDING seen + added, when)

    def must_count(self, owner: str, quota: int) -> bool:
        seen = self._seen.get(owner)
        if seen is None or self._clock() - seen[1] >= self._recheck_s:
            return True
        return seen[0] * 2 >= quota

    def counted(self, owner: str, pending: int) -> None:
        """The count a submit's INSERT saw (its own job not included)."""
        now = self._clock()
        with self._lock:
            if len(self._seen) >= PRUNE_AT:
                self._seen = {o: s for o, s in self._seen.items()
                              if now - s[1] < self._recheck_s}
            self._seen[owner] = (pending, now)

    def added(self, owner: str) -> None:
        """A job accepted without a count: it is PENDING too, as far as this instance knows."""
        with self._lock:
            seen = self._seen.get(owner)
            if seen is not None:
                self._seen[owner] = (seen[0] + 1, seen[1])
