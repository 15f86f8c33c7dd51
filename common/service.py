"""The job manager above the repository: what a caller's request does, end to end.

A new job is committed first (row + first event in one statement), then published, then marked
dispatched. If the publish fails, or the instance dies between commit and publish, the job is
still accepted: it stays undispatched and the sweep publishes it.
"""

from __future__ import annotations

from uuid import UUID

from common.dispatch import Dispatcher
from common.models import DispatchItem, Job, NewJob
from common.repository import JobStore


class JobService:
    def __init__(self, store: JobStore, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def _dispatch(self, job: Job) -> None:
        published = self.dispatcher.publish([DispatchItem(id=job.id, attempts=job.attempts)])
        if published:
            self.store.mark_dispatched(published)

    def submit(self, owner: str, new: NewJob) -> tuple[Job, bool]:
        """Returns (job, created). A replayed request publishes nothing new."""
        job, created = self.store.create(owner, new)
        if created:
            self._dispatch(job)
        return job, created

    def retry(self, owner: str, job_id: UUID | str) -> Job:
        job = self.store.retry(owner, job_id)
        self._dispatch(job)
        return job
