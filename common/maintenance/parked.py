"""Parked jobs (fair share): the safety net behind the worker. A worker publishes an owner's
next parked job as soon as one of that owner's jobs ends; if it died in between, or a limit was
raised, this step publishes parked jobs of every owner with a free slot. Taking stamps them
dispatched (SKIP LOCKED), so two sweeps, or a sweep and a worker, never publish one twice; a
publish that fails is released for the next pass."""

from __future__ import annotations

from typing import Any

from common.maintenance.budget import Budget
from common.service import JobService


def release(service: JobService, budget: Budget, batch_size: int) -> dict[str, Any]:
    """Owners' parked jobs, then those of preset and key limits (issue 27) with room: a
    release counts the jobs still on their way, so the loop ends when the room is taken."""
    published, more = budget.in_batches(batch_size,
                                        lambda: service.dispatch_parked(batch_size))
    flow, flow_more = budget.in_batches(batch_size,
                                        lambda: service.dispatch_flow_parked(batch_size))
    return {"published": published, "more": more or flow_more, "flow_published": flow}
