"""Pydantic models of jobs as callers see them; the API's OpenAPI document derives from these."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from common.store.errors import InvalidInput
from common.store.states import JobState

PRESET_PATTERN = r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$"
MAX_METADATA_DEPTH = 6
MAX_CALLBACK_URL = 2048
MIN_PRIORITY, DEFAULT_PRIORITY, MAX_PRIORITY = 0, 5, 9
MAX_LIMIT_KEY = 128
# A key is a path segment (/limits/{key}) and a log field: letters, digits and . _ : @ -
LIMIT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"


def _check_json_value(value: Any, depth: int = 0) -> None:
    """PostgreSQL's jsonb refuses NUL characters and JSON has no NaN: refuse them here instead."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json_value(key, depth + 1)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)


class JobTemplate(BaseModel):
    """A job's own fields: what POST /jobs takes, and what a schedule creates on each fire.
    The owner is never part of it: it comes from the caller's token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = Field(min_length=1, max_length=64, pattern=PRESET_PATTERN)
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    # Flow control (issue 27, docs/flow-control.md): higher goes first where jobs compete for
    # a slot (absent: DEFAULT_PRIORITY); the owner's limits for `limit_key`, if any, apply.
    priority: int | None = Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    limit_key: str | None = Field(default=None, min_length=1, max_length=MAX_LIMIT_KEY,
                                  pattern=LIMIT_KEY_PATTERN)

    @field_validator("content")
    @classmethod
    def _content_no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_is_a_number(cls, value: Any) -> Any:
        """pydantic would read `"5"` and `true` as integers; the document says integer."""
        if isinstance(value, bool | str):
            raise ValueError("must be an integer from 0 to 9")
        return value

    @field_validator("max_attempts", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        """JSON `true` is not an attempt count, though pydantic would read it as 1; `28.0` is
        (JSON Schema's integer includes it)."""
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    @field_validator("metadata")
    @classmethod
    def _json_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json_value(value)
        return value


class NewJob(JobTemplate):
    """What a caller asks for with POST /jobs."""

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    # Where the job's end is POSTed, signed. The API checks it (scheme, SSRF) before the store.
    callback_url: str | None = Field(default=None, min_length=1, max_length=MAX_CALLBACK_URL)
    # Run later (common/store/timing.py): one or the other, never both, never null.
    run_at: str | None = Field(default=None, max_length=64)
    delay_s: int | None = Field(default=None, ge=0)

    @field_validator("run_at", "delay_s", mode="before")
    @classmethod
    def _given_means_a_value(cls, value: Any) -> Any:
        """Absent is fine, explicit null is not: the document says so (`not both` is a rule on
        which keys are present)."""
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value

    @field_validator("delay_s", mode="before")
    @classmethod
    def _seconds_are_a_number(cls, value: Any) -> Any:
        """pydantic would read `"5"` and `true` as integers; the document says integer."""
        if isinstance(value, bool | str):
            raise ValueError("must be an integer number of seconds")
        return value

    @model_validator(mode="after")
    def _one_time_at_most(self) -> NewJob:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        return self

    @field_validator("idempotency_key", "callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


def parse_new_job(data: Any) -> NewJob:
    """Validate untrusted input into a NewJob; the first problem raises the store's typed error."""
    try:
        return NewJob.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(field, first["msg"]) from None


class JobResult(BaseModel):
    status: Literal["succeeded", "failed"]
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    duration_ms: int | None = None
    created_at: datetime


class Job(BaseModel):
    id: UUID
    owner_id: str
    preset: str
    content: str
    metadata: dict[str, Any]
    state: JobState
    attempts: int
    max_attempts: int
    attempt_limit: int = Field(
        description="Absolute ceiling on `attempts`. Attempt numbers never repeat (they are the "
        "fencing token), so a retry raises the ceiling instead of resetting the count."
    )
    idempotency_key: str | None
    cancel_requested: bool
    lease_expires_at: datetime | None
    dispatched_at: datetime | None
    not_before: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: JobResult | None = None
    # The last progress its handler reported (through the heartbeat), and for which attempt.
    progress: float | None = None
    progress_note: str | None = None
    progress_at: datetime | None = None
    progress_attempt: int | None = None
    callback_url: str | None = None
    traceparent: str | None = None
    priority: int = DEFAULT_PRIORITY
    limit_key: str | None = None
    # Why a PENDING job waits on a limit: `running:owner`, `running:preset`, `running:key`,
    # `rate:preset`, `rate:key`, or `rate-reserved` (its start slot is booked: `not_before`).
    wait_reason: str | None = None
    # Workflows (issue 28): the workflow this job is a step of, and the step's name there.
    workflow_id: UUID | None = None
    step: str | None = None
    # Long jobs (issue 29): the execution that took the attempt `execution_attempt`, the latest
    # one started. Read by GET /jobs/{id} only (the dashboard links to its logs).
    execution: str | None = None
    execution_attempt: int | None = None


class JobEvent(BaseModel):
    id: int
    job_id: UUID
    from_state: JobState | None
    to_state: JobState
    reason: str
    attempt: int
    details: dict[str, Any]
    at: datetime


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class ClaimOutcome(BaseModel):
    """Why a claim did or did not take the job; a worker logs it and acknowledges the message."""

    job: Job | None
    reason: Literal[
        "claimed", "not-found", "in-progress", "terminal", "not-due", "stale-message", "deferred",
        "held",
    ]
    # The claimed job took one of its owner's fair-share slots (the owner has a limit): its
    # exit frees the slot, so the worker then releases the owner's parked jobs.
    holds_slot: bool = False
    # Flow control (issue 27): `held` means a rate slot is reserved for the job at
    # `hold_until`, so the delivery waits and claims again then. A claimed job that started
    # under a rate limit (`rated`) or took a running slot of one (`flow_held`) makes its worker
    # release the parked jobs those limits now have room for.
    hold_until: datetime | None = None
    hold_s: float = 0.0  # how long until hold_until, on the database's clock
    rated: bool = False
    flow_held: bool = False


class JobMove(BaseModel):
    """What a worker's exit left behind. Lean on purpose: the worker already has the job, and
    parsing a whole row back costs more than the rest of the call."""

    id: UUID
    state: JobState
    attempts: int
    not_before: datetime | None
    finished_at: datetime | None
    # A workflow's step (issue 28): it has children (its end moved them), and its workflow has
    # a webhook (its end may have enqueued it).
    has_children: bool = False
    workflow_hook: bool = False


class DispatchItem(BaseModel):
    """A job whose message must be published, with the attempt count it is published for."""

    id: UUID
    attempts: int
    # The W3C trace the job was created under, carried on its message as an attribute.
    traceparent: str | None = None
