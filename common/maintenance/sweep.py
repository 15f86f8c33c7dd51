"""One sweep pass: the maintenance steps in order, within a time budget, and a JSON summary.

Rescue runs before re-dispatch so a rescued job is published in the same pass. Each step is
bounded by the batch size and the budget, idempotent, and safe alongside workers and another
sweep. A step that fails is reported and the others still run; the caller turns a failed step
into an error status so the scheduler shows the run as failed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.logs import log
from common.maintenance import (
    dead_letters,
    parked,
    redispatcher,
    rescuer,
    retention,
    schedules,
)
from common.maintenance.budget import Budget
from common.messaging.notify import Notifier
from common.messaging.pubsub import subscription_path
from common.service import JobService
from common.settings import Settings
from common.store.errors import DatabaseUnavailable

Step = Literal["rescue", "schedules", "parked", "redispatch", "dead_letters", "retention"]
# Schedules and parked jobs come before re-dispatch: the jobs they make due go out this pass.
ALL_STEPS: tuple[Step, ...] = (
    "rescue", "schedules", "parked", "redispatch", "dead_letters", "retention"
)


class SweepRequest(BaseModel):
    """The optional JSON body of a sweep call. Bounds keep a caller from asking for a pass
    that would outlive the function or hold long transactions."""

    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(default=list(ALL_STEPS), min_length=1, max_length=len(ALL_STEPS))
    batch_size: int | None = Field(default=None, ge=1, le=5000)
    time_budget_s: float | None = Field(default=None, gt=0, le=3600)


class Sweeper:
    def __init__(self, service: JobService, notifier: Notifier, settings: Settings) -> None:
        self.service = service
        self.store = service.store
        self.notifier = notifier
        self.settings = settings

    def run(self, request: SweepRequest | None = None) -> dict[str, Any]:
        request = request or SweepRequest()
        s = self.settings
        # A caller may shorten the budget, never stretch it past the configured one.
        budget = Budget(min(request.time_budget_s or s.sweep_time_budget_s,
                            s.sweep_time_budget_s))
        batch = request.batch_size or s.sweep_batch_size
        work: dict[Step, Callable[[], dict[str, Any]]] = {
            "rescue": lambda: rescuer.rescue(self.store, self.notifier, budget, batch),
            "schedules": lambda: schedules.fire_due(self.store, budget, batch,
                                                    s.retention_days),
            "parked": lambda: parked.release(self.service, budget, batch),
            "redispatch": lambda: redispatcher.redispatch(
                self.service, budget, batch, timedelta(seconds=s.redispatch_after_s)
            ),
            "dead_letters": lambda: dead_letters.settle(
                self.store, self.notifier,
                subscription_path(s.google_cloud_project, s.dead_letter_subscription),
                budget, batch,
            ),
            "retention": lambda: retention.prune(self.store, budget, batch, s.retention_days),
        }
        steps: dict[str, Any] = {}
        failed = False
        for name in ALL_STEPS:
            if name not in request.steps:
                continue
            try:
                steps[name] = work[name]()
            except DatabaseUnavailable as exc:
                steps[name], failed = {"error": "database unavailable", "detail": str(exc)}, True
            except Exception as exc:  # e.g. Pub/Sub unreachable: report it, run the other steps
                steps[name], failed = {"error": type(exc).__name__}, True
        summary: dict[str, Any] = {"ok": not failed, "steps": steps}
        try:
            summary["queue"] = self.store.queue_report()
        except DatabaseUnavailable:
            summary["queue"], summary["ok"] = None, False
        summary["budget_exhausted"] = any(
            isinstance(v, dict) and v.get("more") for v in steps.values()
        )
        # Not on any request's critical path here: let the pass's notifications go out.
        self.notifier.flush(max(min(budget.remaining(), 10.0), 1.0))
        summary["duration_ms"] = budget.elapsed_ms()
        log("INFO" if summary["ok"] else "ERROR", "sweep pass", summary=summary)
        return summary
