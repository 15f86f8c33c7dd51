"""Re-dispatch: publish PENDING jobs that are due and unpublished (a publish that failed after
the commit, a rescued job, the end of a retry's backoff or of a delivery failure's delay), and
those whose message went unclaimed for REDISPATCH_AFTER_S. Jobs are taken with SKIP LOCKED and
stamped before the publish, so two sweeps never publish the same job.

A backlog merely waiting in Pub/Sub is not published again until REDISPATCH_AFTER_S: the worker
is busy with it. A stall is different: jobs published more than STALL_AFTER_S ago wait unclaimed
and the worker shows no sign of life in that window (no heartbeat, no finish). Pub/Sub then backs
off, or dead-letters, and would leave them waiting after the worker is back; so on a stall the
same statement takes them with STALL_AFTER_S instead, and they run as soon as the worker answers.
During a long outage that republishes each waiting job at most once per STALL_AFTER_S."""

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
    stalled = stall_after is not None and service.store.worker_stalled(
        stall_after.total_seconds()
    )
    after = min(redispatch_after, stall_after) if stalled and stall_after else redispatch_after
    # A short batch means all done, or Pub/Sub refused some: the next pass retries those.
    published, more = budget.in_batches(
        batch_size, lambda: service.dispatch_due(batch_size, redispatch_after=after)
    )
    return {"published": published, "stalled": stalled, "more": more}
