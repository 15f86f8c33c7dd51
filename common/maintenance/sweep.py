"""One sweep pass: the maintenance steps in order, within a time budget, and a JSON summary.

Rescue and dead letters run before re-dispatch, so a job they send back is published in the
same pass. Each step is bounded by the batch size and the budget, idempotent, and safe alongside
workers. A step that fails is reported and the others still run; the caller turns a failed step
into an error status so the scheduler shows the run as failed.

A pass holds an advisory lock while its database steps run, so an overlapping call (a slow pass,
a retried schedule) is a clean no-op rather than a second pass contending for the same rows.
The webhook step runs after the lock is released: it calls outside receivers, and a receiver
that answers slowly must never hold the lock (and with it every owner's maintenance).
Before the migrations have run there is nothing to maintain: the pass says so, once, and
succeeds, instead of failing every step every minute. With the database unreachable no step can
do anything (and dead letters must stay unacknowledged), so none runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from common.messaging.executions import Executor

Step = Literal[
    "rescue", "dead_letters", "schedules", "redispatch", "parked", "retention", "webhooks"
]
# Schedules come before re-dispatch, so the jobs a fire creates go out this pass; the parked
# step publishes what it releases itself. Webhooks last, outside the lock: they wait on
# outside endpoints.
ALL_STEPS: tuple[Step, ...] = (
    "rescue", "dead_letters", "schedules", "redispatch", "parked", "retention", "webhooks"
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
        from common.messaging.webhooks import WebhookDeliverer  # built with the sweeper

        self.webhooks = WebhookDeliverer(self.store, settings)
        self._executor: Executor | None = None

    def _cancel_execution(self, name: str) -> None:
        """A rescued long job's execution (issue 29): its executor is built on first use, so a
        deployment without long jobs never builds one."""
        if self._executor is None:
            from common.messaging.executions import executor_for

            self._executor = executor_for(self.settings)
        self._executor.cancel(name)

    def _webhooks(self, budget: Budget, batch: int) -> dict[str, Any]:
        from common.maintenance import webhooks

        return webhooks.deliver(self.webhooks, budget, batch)

    def run(self, request: SweepRequest | None = None) -> dict[str, Any]:
        request = request or SweepRequest()
        lock = self.store.sweep_lock()
        try:
            state = lock.acquire()
        except DatabaseUnavailable as exc:
            return self._unreachable(request, exc)
        if state == "busy":
            log("INFO", "sweep skipped: another pass is running")
            return {"ok": True, "skipped": "another-pass-running"}
        if state == "schema-missing":
            log("WARNING", "sweep skipped: the database has no jobs table yet; run the migrations")
            return {"ok": True, "skipped": "schema-missing"}
        s = self.settings
        # A caller may shorten the budget, never stretch it past the configured one.
        budget = Budget(min(request.time_budget_s or s.sweep_time_budget_s,
                            s.sweep_time_budget_s))
        try:
            summary = self._pass(request, budget)
        finally:
            lock.release()
        if "webhooks" in request.steps:
            self._unlocked_webhooks(request, budget, summary)
        # Not on any request's critical path here: let the pass's notifications go out.
        self.notifier.flush(max(min(budget.remaining(), 10.0), 1.0))
        summary["duration_ms"] = budget.elapsed_ms()
        log("INFO" if summary["ok"] else "ERROR", "sweep pass", summary=summary)
        return summary

    def _unlocked_webhooks(self, request: SweepRequest, budget: Budget,
                           summary: dict[str, Any]) -> None:
        """The webhook step, with the lock released (see the module's docstring)."""
        try:
            result = self._webhooks(budget, request.batch_size or self.settings.sweep_batch_size)
        except DatabaseUnavailable as exc:
            result, summary["ok"] = {"error": "database unavailable", "detail": str(exc)}, False
        except Exception as exc:
            result, summary["ok"] = {"error": type(exc).__name__}, False
        summary["steps"]["webhooks"] = result
        summary["budget_exhausted"] = summary["budget_exhausted"] or bool(result.get("more"))

    def _unreachable(self, request: SweepRequest, exc: DatabaseUnavailable) -> dict[str, Any]:
        error = {"error": "database unavailable", "detail": str(exc)}
        summary = {
            "ok": False,
            "steps": {name: dict(error) for name in ALL_STEPS if name in request.steps},
            "queue": None,
            "budget_exhausted": False,
        }
        log("ERROR", "sweep pass", summary=summary)
        return summary

    def _pass(self, request: SweepRequest, budget: Budget) -> dict[str, Any]:
        """The steps that run under the lock: all but the webhooks."""
        s = self.settings
        batch = request.batch_size or s.sweep_batch_size
        work: dict[Step, Callable[[], dict[str, Any]]] = {
            "rescue": lambda: rescuer.rescue(self.store, self.notifier, budget, batch,
                                             self._cancel_execution),
            "schedules": lambda: schedules.fire_due(self.store, budget, batch,
                                                    s.retention_days),
            "parked": lambda: parked.release(self.service, budget, batch),
            "redispatch": lambda: redispatcher.redispatch(
                self.service, budget, batch, timedelta(seconds=s.redispatch_after_s),
                timedelta(seconds=s.stall_after_s),
            ),
            "dead_letters": lambda: dead_letters.settle(
                self.store, self.notifier,
                subscription_path(s.google_cloud_project, s.dead_letter_subscription),
                budget, batch, s,
            ),
            "retention": lambda: retention.prune(self.store, budget, batch, s.retention_days),
        }
        steps: dict[str, Any] = {}
        failed = False
        for name in ALL_STEPS:
            if name not in request.steps or name not in work:
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
        return summary
