"""Retention: terminal jobs older than RETENTION_DAYS are deleted with their events and results
(the foreign keys cascade), one short transaction per batch, oldest first; old poison-message
records go the same way. Whatever the budget leaves is for the next pass."""

from __future__ import annotations

from typing import Any

from common.maintenance.budget import Budget
from common.store.job_store import JobStore


def prune(store: JobStore, budget: Budget, batch_size: int, days: int) -> dict[str, Any]:
    deleted, more = budget.in_batches(
        batch_size, lambda: store.purge_terminal(days, batch_size=batch_size, max_batches=1)
    )
    poison = 0 if more else store.purge_poison(days, batch_size=batch_size)
    return {"deleted_jobs": deleted, "deleted_poison_messages": poison, "more": more}
