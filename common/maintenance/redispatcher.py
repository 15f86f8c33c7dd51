"""Re-dispatch: publish PENDING jobs that are due and unpublished (a publish that failed after
the commit, a rescued job, the end of a retry's backoff), and those whose message went
unclaimed for REDISPATCH_AFTER_S. Jobs are taken with SKIP LOCKED and stamped before the
publish, so two sweeps never publish the same job, and a backlog merely waiting in Pub/Sub is
not published again until that interval has passed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from common.maintenance.budget import Budget
from common.service import JobService


def redispatch(
    service: JobService, budget: Budget, batch_size: int, redispatch_after: timedelta
) -> dict[str, Any]:
    # A short batch means all done, or Pub/Sub refused some: the next pass retries those.
    published, more = budget.in_batches(
        batch_size, lambda: service.dispatch_due(batch_size, redispatch_after=redispatch_after)
    )
    return {"published": published, "more": more}
