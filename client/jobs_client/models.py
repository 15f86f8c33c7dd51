"""What the jobs API sends and takes, as pydantic models: the client's own copy of the shapes
the API's OpenAPI document describes (tests/test_client.py checks the two agree field by field).

Kept here rather than imported from the server's code so that the client installs on its own
with pydantic as its one dependency. The answers' models ignore nothing: a field the server
adds later is kept (`extra="allow"`), so `model_dump()` shows it to a caller on an older client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESET_PATTERN = r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$"
# A limit key (PUT /limits/{key}, a job's limit_key): letters, digits and . _ : @ -
LIMIT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"


class JobState(StrEnum):
    """A job's state: PENDING, PROCESSING, then one of COMPLETED, FAILED and CANCELLED; a
    workflow's step with parents is WAITING before PENDING."""

    WAITING = "WAITING"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended: only a retry (of a FAILED job) moves it again."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Links(_Answer):
    """Where the job and its events are, as paths of the API."""

    self: str
    events: str


class ProgressView(_Answer):
    """The last progress the job's handler reported."""

    fraction: float
    note: str | None
    at: datetime
    attempt: int


class JobResult(_Answer):
    """How the job ended: its handler's output, or why it failed."""

    status: Literal["succeeded", "failed"]
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    duration_ms: int | None = None
    created_at: datetime


class WebhookView(_Answer):
    """A job's completion webhook (for a job with a callback_url): the latest delivery once the
    job has ended, and what it waits for while it is not done."""

    state: Literal["awaiting-end", "pending", "delivered", "given_up"]
    waiting_for: Literal["job-end", "signing-secret", "first-attempt", "retry"] | None
    note: str | None
    webhook_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class FlowWait(_Answer):
    """Why a PENDING job waits on a flow limit, and until when (no attempt is spent waiting).

    `reason`: `running:owner`, `running:preset` or `running:key` (that limit on running jobs
    is full: `until` is None), `rate:preset` or `rate:key` (that rate has no slot near:
    `until` is its next free slot, in `get()` only), `rate-reserved` (a start slot is booked
    at `until`). `limit` names it: the owner, the preset or the key."""

    reason: str
    limit: str
    until: datetime | None


class ExecutionView(_Answer):
    """A long job's execution (its preset runs in one of its own): the one that runs, or
    ran, its latest started attempt. `logs_url` and `console_url` open it in the Google Cloud
    console; both are None where executions are not Cloud Run's (`make dev`'s children)."""

    name: str
    attempt: int
    logs_url: str | None
    console_url: str | None


class JobView(_Answer):
    """A job as its owner sees it (the content is not echoed back)."""

    id: str
    preset: str
    state: JobState
    attempts: int
    max_attempts: int
    attempt_limit: int = 0  # servers before it was shown: 0
    metadata: dict[str, Any]
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None
    result: JobResult | None
    progress: ProgressView | None = None
    callback_url: str | None = None
    webhook: WebhookView | None = None
    trace_id: str | None = None
    priority: int = 5  # 0 to 9, higher first where jobs compete; servers before it: 5
    limit_key: str | None = None
    waiting: FlowWait | None = None
    workflow_id: str | None = None  # the workflow the job is a step of, and the step's name
    step: str | None = None
    execution: ExecutionView | None = None  # a long job's, in get() only
    links: Links


class JobList(_Answer):
    """One page of jobs, newest first; `next_cursor` asks for the next (None: the last)."""

    jobs: list[JobView]
    next_cursor: str | None


class JobEvent(_Answer):
    """One move of a job between states, and why: its audit trail is a list of these."""

    id: int
    job_id: str
    from_state: JobState | None
    to_state: JobState
    reason: str
    attempt: int
    details: dict[str, Any]
    at: datetime


class EventList(_Answer):
    """`GET /jobs/{id}/events`: the job's audit trail, oldest first."""

    events: list[JobEvent]


class Stats(_Answer):
    """The caller's own queue: jobs per state, how long the oldest due job has waited, how many
    PENDING jobs are due and how many parked, recent throughput."""

    depth: dict[JobState, int]
    oldest_pending_age_s: float | None
    pending_due: int = 0
    pending_parked: int = 0
    finished_last_5_min: int
    throughput_per_min: float


class Health(_Answer):
    """`GET /healthz`: the service, and whether it reaches its database."""

    status: str
    database: str


class HistoryBucket(_Answer):
    """One bucket of a History: how many jobs ended in each state from `at`, for `bucket_s`
    seconds."""

    at: datetime
    counts: dict[JobState, int]


class History(_Answer):
    """Jobs finished per bucket (a minute over an hour, a quarter hour over a day), by end state."""

    window: Literal["hour", "day"]
    bucket_s: int
    buckets: list[HistoryBucket]


class LimitView(_Answer):
    """A flow limit: at most `max_running` of its jobs PROCESSING at once, and at most
    `max_starts` starts per `interval_s` seconds (None: no such limit). `name` is the key (a
    caller's own limit) or the preset (the deployment's); `running` its jobs running now
    under max_running; `next_at` when its rate's next start slot is free."""

    name: str
    max_running: int | None
    max_starts: int | None
    interval_s: float | None
    running: int
    next_at: datetime | None
    updated_at: datetime


class Limits(_Answer):
    """How many of the caller's jobs may run at once: the stack's default and the caller's own;
    the caller's limits at the door (0 = unlimited; absent from an older server: 0); and the
    flow limits over its jobs: its own keys' (`keys`) and the deployment's presets'
    (`presets`), empty from an older server."""

    default_max_running: int
    max_running: int
    override: int | None
    running: int
    max_submits_per_s: int = 0
    max_pending: int = 0
    max_waits: int = 0
    keys: list[LimitView] = Field(default_factory=list)
    presets: list[LimitView] = Field(default_factory=list)


class WebhookSecret(_Answer):
    """A new signing secret, shown once."""

    secret: str
    rotated_at: datetime
    previous_valid_until: datetime | None


class TemplateView(_Answer):
    """A schedule's job as the API shows it (its content is not echoed back)."""

    preset: str
    metadata: dict[str, Any]
    max_attempts: int | None
    callback_url: str | None = None  # where each fired job's end is POSTed, signed
    priority: int = 5  # each fired job's
    limit_key: str | None = None  # the caller's limit key each fired job falls under


class ScheduleLinks(_Answer):
    """Where the schedule, its events and its last job are, as paths of the API."""

    self: str
    events: str
    last_job: str | None
    last_workflow: str | None = None


class ScheduleView(_Answer):
    """A recurring job: its cron and timezone, the job it creates, and its next fire."""

    id: str
    cron: str
    timezone: str
    job: TemplateView | None  # None: each fire starts `workflow` (jobs_client.workflows)
    workflow: dict[str, Any] | None = None
    enabled: bool
    overlap: Literal["skip", "allow"]
    catch_up: Literal["once", "all"]
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str | None
    last_workflow_id: str | None = None
    created_at: datetime
    updated_at: datetime
    links: ScheduleLinks


class ScheduleList(_Answer):
    """One page of schedules, newest first; `next_cursor` asks for the next."""

    schedules: list[ScheduleView]
    next_cursor: str | None


class ScheduleEvent(_Answer):
    """One fire of a schedule: the job it created, or why it skipped one."""

    id: int
    schedule_id: str
    fire_time: datetime
    kind: Literal["fired", "skipped"]
    job_id: str | None
    details: dict[str, Any]
    at: datetime


class ScheduleEventList(_Answer):
    """`GET /schedules/{id}/events`: the schedule's fires and skips, oldest first."""

    events: list[ScheduleEvent]


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class Problem(_Answer):
    """An RFC 9457 problem, as a refused item of a batch carries it."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invalid_params: list[dict[str, str]] | None = None


class BatchItemResult(_Answer):
    """What became of one job of a batch, at its index in the request."""

    index: int
    outcome: Literal["created", "replayed", "refused"]
    job: JobView | None
    problem: Problem | None


class BatchResult(_Answer):
    """`submit_many`'s answer: one result per job, in order, and the count of each outcome."""

    created: int
    replayed: int
    refused: int
    results: list[BatchItemResult]


class BulkOutcome(_Answer):
    """What a bulk cancel or retry did (with dry_run: how many jobs it would move now)."""

    action: Literal["cancel", "retry"]
    dry_run: bool
    matched: int
    moved: int
    cancelled: int
    cancel_requested: int
    retried: int
    complete: bool
    as_of: datetime  # send back as created_before to act on exactly what a dry run counted


class JobTemplate(BaseModel):
    """A job's own fields, checked as the API checks them, so that a request the API would
    refuse is refused before it is sent."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(min_length=1, max_length=64, pattern=PRESET_PATTERN)
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    callback_url: str | None = Field(default=None, min_length=1, max_length=2048)
    # Flow control: higher goes first where jobs compete for a slot (None: the server's 5);
    # the caller's limits for `limit_key` (JobsClient.set_limit), if any, apply to the job.
    priority: int | None = Field(default=None, ge=0, le=9, strict=True)
    limit_key: str | None = Field(default=None, min_length=1, max_length=128,
                                  pattern=LIMIT_KEY_PATTERN)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return _no_nul(value) or ""

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return _no_nul(value)


class NewJob(JobTemplate):
    """What `POST /jobs` takes."""

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    run_at: str | None = Field(default=None, max_length=64)
    delay_s: int | None = Field(default=None, ge=0)

    @field_validator("idempotency_key")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @model_validator(mode="after")
    def _one_time_at_most(self) -> NewJob:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        return self
