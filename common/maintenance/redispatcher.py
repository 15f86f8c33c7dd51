"""Re-dispatch: publish PENDING jobs that are due and unpublished (a publish that failed after
the commit, a rescued job, the end of a retry's backoff or of a delivery failure's delay), and
those whose message went unclaimed for REDISPATCH_AFTER_S. Jobs are taken with SKIP LOCKED and
stamped before the publish, so two sweeps never publish the same job.

A backlog merely waiting in Pub/Sub is not published again until REDISPATCH_AFTER_S: the worker
is busy with it. A stranded job is different: it was published more than STALL_AFTER_S ago into
a worker that showed no sign of life (no run overlapping the STALL_AFTER_S after the publish):
our worker or database was down. Pub/Sub backs off, or dead-letters it, and would leave it
waiting long after the worker is back; so it is published again now, and runs as soon as the
worker answers. During a long outage that republishes each job at most once per STALL_AFTER_S."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from common.maintenance.budget import Budget
from common.service import JobService


def redispatch(
    service: JobService,
    budget: Budget,
    batch_size: int,
    redispatch_after: timedelta,
    stall_after: timedelta | None = None,
) -> dict[str, Any]:
    # A short batch means all done, or Pub/Sub refused some: the next pass retries those.
    published, more = budget.in_batches(
        batch_size, lambda: service.dispatch_due(batch_size, redispatch_after=redispatch_after)
    )
    stranded = 0
    if stall_after is not None and not more:
        stranded, more = budget.in_batches(
            batch_size, lambda: service.dispatch_stranded(batch_size, stall_after=stall_after)
        )
    return {"published": published + stranded, "stalled": stranded > 0, "stranded": stranded,
            "more": more}
