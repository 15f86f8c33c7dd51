"""RFC 9457 problem details: every error the API answers, with a stable `type` per kind."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from common.store.errors import (
    AttemptLimitReached,
    DatabaseUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    InvalidCursor,
    InvalidInput,
    JobNotFound,
    JobStoreError,
    LimitNotFound,
    PendingLimitReached,
    ScheduleLimitReached,
    ScheduleNotFound,
    UnknownPreset,
    WorkflowNotFound,
)

TYPE_BASE = "https://jobs-pipeline.dev/problems/"
MEDIA_TYPE = "application/problem+json"
# A queue drains at its jobs' pace, which the door does not know: this is a polling pace for a
# caller over its PENDING quota, not a promise that room will be there by then.
PENDING_RETRY_AFTER_S = 5


class InvalidParam(BaseModel):
    name: str
    reason: str


class Problem(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invalid_params: list[InvalidParam] | None = None


class LimitProblem(Problem):
    """A 429: which limit at the door was reached (common/api/admission.py), its value, and the
    Retry-After header's seconds again."""

    quota: Literal["max_submits_per_s", "max_pending", "owner_max_waits", "wait_slots"]
    limit: int
    retry_after_s: int


class ProblemError(Exception):
    """Raised inside the HTTP adapter to answer with a problem; carries extra headers."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        *,
        invalid: list[InvalidParam] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.problem = Problem(
            type=TYPE_BASE + kind,
            title=title,
            status=status,
            detail=detail,
            invalid_params=invalid,
            **extra,
        )
        self.headers = headers or {}


def validation_problem(exc: ValidationError) -> ProblemError:
    """422 naming each invalid field (the first 20), from pydantic's own errors. Our own
    validators' reasons lose pydantic's "Value error, " prefix: they are written to be read."""
    invalid = [
        InvalidParam(name=".".join(str(p) for p in e["loc"]) or "body",
                     reason=e["msg"].removeprefix("Value error, "))
        for e in exc.errors()[:20]
    ]
    return ProblemError(422, "validation-error", "Invalid request", invalid=invalid)


def from_store_error(exc: JobStoreError) -> ProblemError:
    """Map the store's typed errors to problems; none of them carries internals."""
    if isinstance(exc, UnknownPreset):
        return ProblemError(
            422,
            "unknown-preset",
            "Unknown preset",
            str(exc),
            invalid=[InvalidParam(name="preset", reason=exc.message)],
            known_presets=exc.known,
        )
    if isinstance(exc, InvalidCursor):
        return ProblemError(
            400,
            "invalid-cursor",
            "Invalid cursor",
            invalid=[InvalidParam(name="cursor", reason=exc.message)],
        )
    if isinstance(exc, InvalidInput):
        return ProblemError(
            422,
            "validation-error",
            "Invalid request",
            invalid=[InvalidParam(name=exc.field, reason=exc.message)],
        )
    if isinstance(exc, ScheduleNotFound):
        return ProblemError(404, "not-found", "Schedule not found")
    if isinstance(exc, LimitNotFound):
        return ProblemError(404, "not-found", "Limit not found",
                            "you have no limit with this key (PUT /limits/{key} sets one)")
    if isinstance(exc, ScheduleLimitReached):
        return ProblemError(
            409, "schedule-limit-reached", "Too many schedules",
            f"an owner may keep at most {exc.limit} schedules; delete one first",
            schedule_limit=exc.limit,
        )
    if isinstance(exc, WorkflowNotFound):
        return ProblemError(404, "not-found", "Workflow not found")
    if isinstance(exc, JobNotFound):
        return ProblemError(404, "not-found", "Job not found")
    if isinstance(exc, IdempotencyConflict):
        return ProblemError(
            409,
            "idempotency-conflict",
            "Idempotency key reused",
            "This Idempotency-Key was used before with a different request.",
        )
    if isinstance(exc, AttemptLimitReached):
        return ProblemError(
            409,
            "attempt-limit-reached",
            "No attempts left",
            f"this job has used {exc.attempts} attempts; a job may have at most {exc.limit} "
            "in all, retries included, so it cannot be retried again",
            attempts=exc.attempts,
            attempt_limit=exc.limit,
        )
    if isinstance(exc, IllegalTransition):
        return ProblemError(
            409,
            "illegal-transition",
            "Not allowed in the job's state",
            f"cannot {exc.move} a job that is {exc.state}",
            state=exc.state,
        )
    if isinstance(exc, PendingLimitReached):
        return ProblemError(
            429, "pending-limit-reached", "Too many queued jobs",
            f"an owner may have at most {exc.limit} PENDING jobs; submit again once some "
            "have started", headers={"Retry-After": str(PENDING_RETRY_AFTER_S)},
            quota="max_pending", limit=exc.limit, retry_after_s=PENDING_RETRY_AFTER_S,
        )
    if isinstance(exc, DatabaseUnavailable):
        return ProblemError(
            503,
            "unavailable",
            "Service temporarily unavailable",
            "The job store cannot be reached; retry shortly.",
            headers={"Retry-After": "5"},
        )
    return ProblemError(500, "internal", "Internal error")
