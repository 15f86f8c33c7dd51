"""Schedules: fire every schedule that is due, each in one statement of its own.

The store's fire statement decides everything that must not happen twice (one job per fire
time, next_fire_at only forward), so two sweeps at once, or a pass retried after a crash, fire
each tick at most once: a schedule another sweep holds is passed by (SKIP LOCKED) and one
already moved on no longer matches. The jobs it creates are due now and unpublished, so the
re-dispatch step of the same pass publishes them. Old schedule events go with retention.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from common.logs import log
from common.maintenance.budget import Budget
from common.store import cron
from common.store.errors import InvalidInput
from common.store.job_store import JobStore


def fire_due(store: JobStore, budget: Budget, batch_size: int,
             retention_days: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()

    def batch() -> int:
        moved = 0
        for due in store.due_schedules(batch_size):
            if budget.spent():
                break
            try:
                fire_time, following, missed = cron.plan_fire(
                    due.cron, due.timezone, due.next_fire_at, datetime.now(UTC), due.catch_up
                )
            except InvalidInput as exc:  # e.g. a zone the zone database no longer has
                counts["unplannable"] += 1
                log("ERROR", "schedule cannot be planned", schedule_id=str(due.id),
                    reason=exc.message)
                continue
            taken, job_id = store.fire(due, fire_time, following, missed)
            if not taken:
                counts["raced"] += 1  # another sweep holds it, or already moved it on
                continue
            moved += 1
            counts["fired" if job_id else "skipped"] += 1
            counts["missed_ticks"] += missed
        return moved

    # Not Budget.in_batches: a catch-up of 'all' leaves its schedule due after each fire, so
    # a short batch does not mean done. Done is when nothing is due or nothing moved.
    total, more = 0, False
    while True:
        if budget.spent():
            more = True
            break
        moved = batch()
        total += moved
        if moved == 0:
            break
    purged = 0 if more else store.purge_schedule_events(retention_days, batch_size=batch_size)
    return {"schedules": total, **counts, "purged_events": purged, "more": more}
