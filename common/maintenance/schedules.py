"""Schedules: fire every schedule that is due, each in one statement of its own.

The store's fire statement decides everything that must not happen twice (one job per fire
time, next_fire_at only forward), so two sweeps at once, or a pass retried after a crash, fire
each tick at most once: a schedule another sweep holds is passed by (SKIP LOCKED) and one
already moved on no longer matches. The jobs it creates are due now and unpublished, so the
re-dispatch step of the same pass publishes them. Old schedule events go with retention.

Bounded per schedule: a fire is written only if its next fire time is strictly after both the
fire time and the time it was due (cron.fire_times guarantees it; this step checks it again, so
no library answer can make a schedule fire in place), and one pass fires one schedule at most
MAX_FIRES_PER_PASS times (a catch-up of 'all' over a long outage continues in the next pass),
so one schedule never holds the step, and the others behind it, for the whole pass budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from common.logs import log
from common.maintenance.budget import Budget
from common.store import cron
from common.store.errors import InvalidInput
from common.store.job_store import JobStore

MAX_FIRES_PER_PASS = 100


def _utc_now() -> datetime:
    return datetime.now(UTC)


def fire_due(store: JobStore, budget: Budget, batch_size: int, retention_days: int,
             clock: Callable[[], datetime] = _utc_now) -> dict[str, Any]:
    """`clock`: the pass's idea of now, for both what is due and how it is planned."""
    counts: Counter[str] = Counter()
    fires: Counter[UUID] = Counter()  # statements per schedule in this pass
    passed: set[UUID] = set()  # done for this pass: at its cap, or it cannot be planned

    def batch() -> int:
        moved = 0
        now = clock()
        for due in store.due_schedules(batch_size, now=now, passed=passed):
            if budget.spent():
                break
            try:
                fire_time, following, missed = cron.plan_fire(
                    due.cron, due.timezone, due.next_fire_at, now, due.catch_up
                )
                if following <= max(fire_time, due.next_fire_at):
                    raise InvalidInput("cron", f"the next fire time {following:%Y-%m-%d %H:%M} "
                                               "UTC does not move on")
            except InvalidInput as exc:  # e.g. a zone the zone database no longer has
                counts["unplannable"] += 1
                passed.add(due.id)
                log("ERROR", "schedule cannot be planned", schedule_id=str(due.id),
                    reason=exc.message)
                continue
            fires[due.id] += 1
            if fires[due.id] >= MAX_FIRES_PER_PASS:
                passed.add(due.id)
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
    capped = sum(1 for n in fires.values() if n >= MAX_FIRES_PER_PASS)  # the next pass goes on
    purged = 0 if more else store.purge_schedule_events(retention_days, batch_size=batch_size)
    return {"schedules": total, **counts, **({"capped": capped} if capped else {}),
            "purged_events": purged, "more": more}
