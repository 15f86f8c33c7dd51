"""What the sweep's moves report for each job they moved (common/store/maintenance_queries.py)."""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

from common.store.states import JobState


class Rescued(NamedTuple):
    id: UUID
    state: JobState
    owner_id: str
    # A long job's execution of the lapsed attempt (issue 29): wedged or gone; the sweep
    # cancels it, so a wedged one stops billing and can write nothing anyway (fenced).
    execution: str | None = None


class DeliveryFailure(NamedTuple):
    id: UUID
    state: JobState  # PENDING (dispatched again later) or FAILED (undeliverable)
    owner_id: str
    failures: int
