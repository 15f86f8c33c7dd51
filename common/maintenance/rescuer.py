"""Rescue: PROCESSING jobs whose lease expired (their worker died or hung) go back to PENDING
while attempts remain, else end FAILED ('lease-expired'); a pending cancel ends them CANCELLED.
The store's statement is guarded by state and expiry and takes rows with SKIP LOCKED, so a worker
that completes first wins and two sweeps never rescue the same job.

A long job's attempt runs in an execution (issue 29). An execution whose lease lapsed has died,
or is wedged (alive, but heartbeating no more): the rescue cancels it through its executor, so
a wedged one stops running (and billing). Whatever it might still write is fenced by its
attempt either way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from common.maintenance.budget import Budget
from common.messaging.notify import Notifier
from common.store.job_store import JobStore


def rescue(store: JobStore, notifier: Notifier, budget: Budget, batch_size: int,
           cancel_execution: Callable[[str], None] | None = None) -> dict[str, Any]:
    moved: Counter[str] = Counter()
    cancelled = 0

    def batch() -> int:
        nonlocal cancelled
        rescued = store.rescue_expired(batch_size)
        moved.update(r.state.value for r in rescued)
        notifier.terminal((r.id, r.owner_id, r.state) for r in rescued)
        for r in rescued:
            if r.execution is not None and cancel_execution is not None:
                cancel_execution(r.execution)
                cancelled += 1
        return len(rescued)

    total, more = budget.in_batches(batch_size, batch)
    summary: dict[str, Any] = {"rescued": total, "to_state": dict(moved), "more": more}
    if cancelled:
        summary["executions_cancelled"] = cancelled
    return summary
