"""Typed errors of the job store.

Callers map these to responses (HTTP problem types, ack or redeliver); none of them ever carries
a raw driver exception, and raising one always means nothing was written.
"""

from __future__ import annotations

from typing import Any


class JobStoreError(Exception):
    """Base class of everything the job store raises on purpose."""


class InvalidInput(JobStoreError):
    """The caller sent something the store refuses; `field` names what, for error responses."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownPreset(InvalidInput):
    def __init__(self, preset: str, known: list[str]) -> None:
        super().__init__("preset", f"unknown preset {preset!r}; known presets: {', '.join(known)}")
        self.preset = preset
        self.known = known


class InvalidCursor(InvalidInput):
    def __init__(self) -> None:
        super().__init__("cursor", "malformed or foreign pagination cursor")


class JobNotFound(JobStoreError):
    """No such job for this owner: another owner's job is reported exactly like a missing one."""

    def __init__(self, job_id: object) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class IllegalTransition(JobStoreError):
    """The move is not allowed from the job's current state (or its guard did not hold)."""

    def __init__(self, job_id: object, move: str, state: str, detail: str = "") -> None:
        text = f"job {job_id}: cannot {move} from {state}"
        super().__init__(text + (f" ({detail})" if detail else ""))
        self.job_id = job_id
        self.move = move
        self.state = state


class StaleAttempt(IllegalTransition):
    """Fencing: the caller holds an attempt that is no longer the job's current one."""

    def __init__(self, job_id: object, move: str, state: str, held: int, current: int) -> None:
        super().__init__(job_id, move, state, f"attempt {held} is stale, current is {current}")
        self.held = held
        self.current = current


class AttemptLimitReached(IllegalTransition):
    """A retry refused because the job has used every attempt a job may ever have in all."""

    def __init__(self, job_id: object, attempts: int, limit: int) -> None:
        super().__init__(job_id, "retry", "FAILED", f"{attempts} of {limit} attempts used")
        self.attempts = attempts
        self.limit = limit


class ScheduleNotFound(JobNotFound):
    """No such schedule for this owner (another owner's is reported exactly like a missing one)."""


class LimitNotFound(JobNotFound):
    """No limit of this caller's has that key."""


class WorkflowNotFound(JobNotFound):
    """No such workflow for this owner (another owner's is reported exactly like a missing
    one)."""

    def __init__(self, workflow_id: object) -> None:
        JobStoreError.__init__(self, f"workflow {workflow_id} not found")
        self.job_id = workflow_id


class ScheduleLimitReached(JobStoreError):
    """The owner already has as many schedules as MAX_SCHEDULES_PER_OWNER allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} schedules per owner")
        self.limit = limit


class PendingLimitReached(JobStoreError):
    """A new job refused: the owner already has as many PENDING jobs as its quota allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} PENDING jobs per owner")
        self.limit = limit


class IdempotencyConflict(JobStoreError):
    """The idempotency key was used before by this owner with a different request."""

    def __init__(self, existing_job_id: object) -> None:
        super().__init__("idempotency key reused with a different request")
        self.existing_job_id = existing_job_id


class DatabaseUnavailable(JobStoreError):
    """The database could not be reached or timed out; the operation may be retried."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__("database unavailable")
        self.detail = detail
