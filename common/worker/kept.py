"""Outcomes a worker could not write: kept in the instance until the database takes them.

A handler that ran to the end must not be lost to our own database being unreachable (issue
#25). When the final write keeps failing until the message's answer is due, the worker answers
non-2xx (Pub/Sub delivers the message again, it is not acknowledged) and keeps the outcome here,
by job id. A redelivery that reaches this instance writes the kept outcome (guarded by state and
attempt like any exit) instead of claiming, so the handler does not run again. A redelivery that
reaches another instance finds the job PROCESSING and passes; the lease then lapses and the
sweep's rescue gives the job another attempt, even on its last one (maintenance_queries,
LEASE_GRACES). Bounded: past KEPT_MAX outcomes the oldest is forgotten (its job is rescued).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar
from uuid import UUID

KEPT_MAX = 1000
T = TypeVar("T")


class KeptOutcomes(Generic[T]):
    """Thread-safe: `process` handles several pushes at once."""

    def __init__(self, limit: int = KEPT_MAX) -> None:
        self._limit = limit
        self._items: OrderedDict[UUID, T] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, job_id: UUID, kept: T) -> None:
        with self._lock:
            self._items[job_id] = kept
            self._items.move_to_end(job_id)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def take(self, job_id: UUID) -> T | None:
        with self._lock:
            return self._items.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
