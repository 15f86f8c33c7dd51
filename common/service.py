"""The job manager above the repository: what a caller's request does, end to end.

A new job is committed first (row + first event in one statement, stamped dispatched), then
published. If the publish fails, the stamp is released and the sweep's next pass publishes the
job. If the instance dies between commit and publish (or the release cannot be written), the
job is still accepted and not lost: the sweep publishes it again once its stamp is older than
REDISPATCH_AFTER_S, as it does for any message that went unclaimed. Stamping at creation saves
a statement (and a row version) per job; the price is that slower recovery in that rare case.
Once the row is committed the caller is told so, whatever happens to the bookkeeping after:
answering an error for a job that exists would make a client without an idempotency key submit
it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from common.logs import log
from common.messaging.dispatch import Dispatcher
from common.store.batches import BatchOutcome
from common.store.bulk import (
    CANCEL_STATES,
    RETRY_STATES,
    BulkFilter,
    Cursor,
    dispatch_items,
)
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.store.models import DispatchItem, Job, NewJob
from common.store.states import JobState

if TYPE_CHECKING:
    from common.store.workflow_models import NewWorkflow, Workflow

# A bulk action stops starting new steps after this long and says it is not complete; the
# caller repeats it for the rest (moved jobs no longer match). Well under a request's timeout.
BULK_TIME_BUDGET_S = 20.0


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action did (or, in a dry run, would do)."""

    matched: int  # dry run: jobs the action would move now; else jobs it looked at
    moved: dict[str, int]  # by outcome: cancelled / cancel_requested / retried
    complete: bool  # False: the time budget ended first; repeat the call for the rest
    as_of: datetime  # the action's set: jobs created before this instant


class JobService:
    def __init__(self, store: JobStore, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def _dispatch(self, job: Job, *, stamped: bool = False) -> None:
        """Publish a committed job and record that it was (`stamped`: it was recorded as it was
        committed, so only a failed publish is written, to release it). Never raises for the
        record: a job left unmarked is published again by the sweep, and the claim's fencing
        makes that second message harmless (it finds the job claimed, or stale, and is
        acknowledged)."""
        item = DispatchItem(id=job.id, attempts=job.attempts, traceparent=job.traceparent)
        published = self.dispatcher.publish([item])
        if stamped:
            if not published:
                try:
                    self.store.release_dispatch([item])
                except DatabaseUnavailable:
                    log("WARNING", "unpublished job not released; the sweep will publish it "
                        "after REDISPATCH_AFTER_S", job_id=str(job.id), attempts=job.attempts)
            return
        if not published:
            return
        try:
            self.store.mark_dispatched(published)
        except DatabaseUnavailable:
            log("WARNING", "published job not marked dispatched; the sweep will publish it again",
                job_id=str(job.id), attempts=job.attempts)

    def submit(
        self, owner: str, new: NewJob, *, traceparent: str | None = None, max_pending: int = 0,
        on_pending: Callable[[int], None] | None = None,
    ) -> tuple[Job, bool]:
        """Returns (job, created). A replayed request publishes nothing new, and a job for later
        is the sweep's to publish (it is created unstamped). The job keeps `traceparent`, and
        every message about it carries that trace. `max_pending` is the owner's PENDING quota
        to check (0 = none), `on_pending` hears the count (see JobStore.create)."""
        job, created = self.store.create(owner, new, traceparent=traceparent, dispatching=True,
                                         max_pending=max_pending, on_pending=on_pending)
        if created and job.not_before is None:
            self._dispatch(job, stamped=True)
        return job, created

    def submit_many(
        self, owner: str, items: Sequence[NewJob], *, traceparent: str | None = None,
        max_pending: int = 0,
    ) -> list[BatchOutcome]:
        """Create a batch in one statement, then publish its due jobs in one publish batch,
        with `submit`'s guarantees: a publish that fails releases those jobs' stamps (the sweep
        publishes them), and a crash between commit and publish is recovered by the sweep's
        re-dispatch. `max_pending`: the owner's PENDING quota (see JobStore.create_many)."""
        outcomes = self.store.create_many(owner, items, traceparent=traceparent,
                                          max_pending=max_pending)
        due = [DispatchItem(id=o.job.id, attempts=o.job.attempts, traceparent=o.job.traceparent)
               for o in outcomes if o.created and o.job is not None and o.job.not_before is None]
        self._publish_stamped(due)
        return outcomes

    def submit_workflow(
        self, owner: str, new: NewWorkflow, *, traceparent: str | None = None,
    ) -> tuple[Workflow, bool]:
        """Create a workflow whole (one statement), then publish its first steps in one batch,
        with submit_many's guarantees. Returns (workflow, created); a replay publishes
        nothing."""
        workflow, created, roots = self.store.create_workflow(owner, new,
                                                              traceparent=traceparent)
        self._publish_stamped(roots)
        return workflow, created

    def retry_workflow(self, owner: str, workflow_id: UUID | str,
                       step: str | None = None) -> tuple[Workflow, int]:
        """Retry a workflow's FAILED steps (or the one named) and publish them at once;
        returns the workflow and how many steps were retried."""
        workflow, taken = self.store.retry_workflow(owner, workflow_id, step)
        self._publish_stamped(taken)
        return workflow, len(taken)

    def _publish_stamped(self, items: list[DispatchItem]) -> None:
        """Publish jobs stamped dispatched when they were written; release the stamps of
        those Pub/Sub refused. Never raises for the release (see _dispatch)."""
        if not items:
            return
        published = {item.id for item in self.dispatcher.publish(items)}
        failed = [item for item in items if item.id not in published]
        if failed:
            try:
                self.store.release_dispatch(failed)
            except DatabaseUnavailable:
                log("WARNING", "unpublished jobs not released; the sweep will publish them "
                    "after REDISPATCH_AFTER_S", jobs=len(failed))

    def bulk_cancel(self, owner: str, flt: BulkFilter, *, dry_run: bool = False) -> BulkResult:
        """Cancel every PENDING job of `owner` matching `flt`, and ask every PROCESSING one to
        cancel, in bounded steps (common/store/bulk.py)."""
        states = (flt.state,) if flt.state is not None else CANCEL_STATES
        before = self.store.bulk_start(flt)
        if dry_run:
            return BulkResult(self.store.bulk_count(owner, states, flt, before), {}, True,
                              before)
        moved = {"cancelled": 0, "cancel_requested": 0}
        deadline = time.monotonic() + BULK_TIME_BUDGET_S
        matched, complete = 0, True
        for state in states:
            cursor: Cursor | None = Cursor()
            while cursor is not None and complete:
                step = self.store.bulk_cancel_step(owner, state, flt, before, cursor)
                matched += step.picked
                for row in step.moved:
                    moved["cancelled" if row["state"] == JobState.CANCELLED else
                          "cancel_requested"] += 1
                cursor = step.cursor
                complete = cursor is None or time.monotonic() < deadline
        return BulkResult(matched, moved, complete, before)

    def bulk_retry(self, owner: str, flt: BulkFilter, *, dry_run: bool = False) -> BulkResult:
        """Retry every FAILED job of `owner` matching `flt` that has attempts left, in bounded
        steps; each step's jobs are published at once (one publish batch per step) and marked
        dispatched, as a single retry's job is."""
        before = self.store.bulk_start(flt)
        if dry_run:
            return BulkResult(self.store.bulk_count(owner, RETRY_STATES, flt, before), {}, True,
                              before)
        retried, matched, complete = 0, 0, True
        deadline = time.monotonic() + BULK_TIME_BUDGET_S
        cursor: Cursor | None = Cursor()
        while cursor is not None and complete:
            step = self.store.bulk_retry_step(owner, flt, before, cursor)
            matched += step.picked
            retried += len(step.moved)
            self._publish_unstamped(dispatch_items(step.moved))
            cursor = step.cursor
            complete = cursor is None or time.monotonic() < deadline
        return BulkResult(matched, {"retried": retried}, complete, before)

    def _publish_unstamped(self, items: list[DispatchItem]) -> None:
        """Publish jobs written undispatched and mark those published (see _dispatch: a job
        left unmarked is published by the sweep)."""
        if not items:
            return
        published = self.dispatcher.publish(items)
        if published:
            try:
                self.store.mark_dispatched(published)
            except DatabaseUnavailable:
                log("WARNING", "published jobs not marked dispatched; the sweep will publish "
                    "them again", jobs=len(published))

    def retry(self, owner: str, job_id: UUID | str) -> Job:
        job = self.store.retry(owner, job_id)
        self._dispatch(job)
        return job

    def dispatch_due(self, limit: int, *, redispatch_after: timedelta | None = None) -> int:
        """Publish PENDING jobs that are due (new and never published, or back from a backoff),
        and with `redispatch_after` those whose message went unclaimed that long. Returns how
        many were published; the rest are released for the next pass."""
        return self._publish_taken(
            self.store.take_due_for_dispatch(limit, redispatch_after=redispatch_after)
        )

    def dispatch_stranded(self, limit: int, *, stall_after: timedelta) -> int:
        """Publish again PENDING jobs whose message went out while the worker showed no sign of
        life (see JobStore.take_stranded). Returns how many were published."""
        return self._publish_taken(self.store.take_stranded(limit, stall_after.total_seconds()))

    def dispatch_parked(self, limit: int) -> int:
        """Publish up to `limit` parked jobs of owners with a free slot (fair share's safety
        net: see JobStore.take_parked_all). Returns how many were published."""
        return self._publish_taken(self.store.take_parked_all(limit))

    def dispatch_flow_parked(self, limit: int) -> int:
        """Publish up to `limit` jobs parked by preset or key limits that now have room (flow
        control's safety net: see JobStore.take_flow_parked_all)."""
        return self._publish_taken(self.store.take_flow_parked_all(limit))

    def _publish_taken(self, taken: list[DispatchItem]) -> int:
        return self.dispatcher.publish_taken(taken, self.store.release_dispatch)
