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

from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

from common.logs import log
from common.messaging.dispatch import Dispatcher
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.store.models import DispatchItem, Job, NewJob


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

    def _publish_taken(self, taken: list[DispatchItem]) -> int:
        return self.dispatcher.publish_taken(taken, self.store.release_dispatch)
