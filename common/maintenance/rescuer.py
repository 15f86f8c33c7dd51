"""Rescue: PROCESSING jobs whose lease expired (their worker died or hung) go back to PENDING
while attempts remain, else end FAILED ('lease-expired'); a pending cancel ends them CANCELLED.
The store's statement is guarded by state and expiry and takes rows with SKIP LOCKED, so a worker
that completes first wins and two sweeps never rescue the same job."""

from __future__ import annotations

from collections import Counter
from typing import Any

from common.maintenance.budget import Budget
from common.messaging.notify import Notifier
from common.store.job_store import JobStore


def rescue(store: JobStore, notifier: Notifier, budget: Budget, batch_size: int) -> dict[str, Any]:
    moved: Counter[str] = Counter()

    def batch() -> int:
        rescued = store.rescue_expired(batch_size)
        moved.update(r.state.value for r in rescued)
        notifier.terminal((r.id, r.owner_id, r.state) for r in rescued)
        return len(rescued)

    total, more = budget.in_batches(batch_size, batch)
    return {"rescued": total, "to_state": dict(moved), "more": more}
