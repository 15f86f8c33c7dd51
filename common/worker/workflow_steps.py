"""The worker's side of workflows (issue 28): a step's parents read on demand, children spawned
from a handler, and the steps a step's end made due, published by the worker that ended it.

The moves themselves (a child unblocked or cancelled, the workflow's count) happen in the
database, in the statement that ends the step (migration 0021); this module only publishes
what they made due, so a fan-in starts as soon as its last parent ends, not at the next sweep.
A publish that fails, or a worker that dies first, leaves the step PENDING and undispatched:
the sweep's next pass publishes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from common.logs import log
from common.store.errors import InvalidInput, JobStoreError
from common.store.models import JobTemplate

if TYPE_CHECKING:
    from common.messaging.dispatch import Dispatcher
    from common.store.job_store import JobStore
    from common.store.models import Job
    from common.store.workflow_models import ParentOutcome


class LazyParents(Mapping[str, "ParentOutcome"]):
    """A step's parents, read from the database the first time the handler looks (one
    statement, then kept for the run)."""

    def __init__(self, load: Callable[[], dict[str, ParentOutcome]]) -> None:
        self._load = load
        self._parents: dict[str, ParentOutcome] | None = None
        self._lock = threading.Lock()

    def _all(self) -> dict[str, ParentOutcome]:
        with self._lock:
            if self._parents is None:
                self._parents = self._load()
            return self._parents

    def __getitem__(self, name: str) -> ParentOutcome:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


class WorkflowSteps:
    """Builds a running job's `parents` and `spawn`, and publishes the steps its end freed."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher | None) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def parents(self, job: Job) -> Mapping[str, Any]:
        if job.workflow_id is None:
            return {}
        return LazyParents(lambda: self.store.parents_of(job.id))

    def spawner(self, job: Job) -> Callable[..., str]:
        def spawn(preset: str, content: str, *, key: str,
                  metadata: dict[str, Any] | None = None, max_attempts: int | None = None,
                  priority: int | None = None, limit_key: str | None = None) -> str:
            try:
                template = JobTemplate(preset=preset, content=content, metadata=metadata or {},
                                       max_attempts=max_attempts, priority=priority,
                                       limit_key=limit_key)
            except ValueError as exc:  # pydantic's ValidationError: the handler's own bug
                raise InvalidInput("spawn", str(exc).splitlines()[0]) from None
            child_id, item = self.store.spawn(job.id, job.attempts, key, template)
            if item is not None and self.dispatcher is not None:
                self.dispatcher.publish_taken([item], self.store.release_dispatch)
            return str(child_id)

        return spawn

    def release_unblocked(self, job: Job) -> None:
        """Publish the steps this job's end made PENDING. Never fails the delivery."""
        if job.workflow_id is None or self.dispatcher is None:
            return
        try:
            self.dispatcher.publish_taken(self.store.take_unblocked(job.id),
                                          self.store.release_dispatch)
        except JobStoreError as exc:
            log("WARNING", "unblocked steps not published; the sweep will",
                error=type(exc).__name__)
