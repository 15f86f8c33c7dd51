"""What the HTTP API returns: views of the store's models. The OpenAPI document derives from
these, so they are the single description of the API's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from common.messaging.executions import console_links
from common.settings import Settings
from common.store.flow_limits import FlowLimit
from common.store.models import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    JobEvent,
    JobResult,
)
from common.store.states import JobState


class Links(BaseModel):
    self: str
    events: str


class ProgressView(BaseModel):
    """The last progress the job's handler reported, stored by the worker's heartbeat."""

    fraction: float = Field(ge=0, le=1)
    note: str | None
    at: datetime
    attempt: int


WebhookState = Literal["awaiting-end", "pending", "delivered", "given_up"]
WaitingFor = Literal["job-end", "signing-secret", "first-attempt", "retry"]
_NOTES: dict[str, str] = {
    "job-end": "sent when the job ends",
    "signing-secret": "waiting for the owner's signing secret (POST /webhook-secret/rotate); "
                      "no attempt is spent while it waits",
    "first-attempt": "due: being sent",
    "retry": "the last attempt failed (see last_error); retried at next_attempt_at",
}


class WebhookView(BaseModel):
    """The job's completion webhook, for a job with a callback_url: the latest delivery once
    the job has ended, and what it is waiting for while it is not done."""

    state: WebhookState
    waiting_for: WaitingFor | None
    note: str | None
    webhook_id: str | None = Field(pattern=r"^msg_[0-9a-f]{32}$",
                                   description="the `webhook-id` header; also in the job's events")
    attempts: int = Field(ge=0, description="attempts spent (none while waiting for a secret)")
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, job: Job, row: dict[str, Any]) -> WebhookView:
        """From WebhookQueries.webhook_state's row."""
        ended = row["id"] is not None and job.state.terminal
        state: WebhookState = row["state"] if ended else "awaiting-end"
        waiting: WaitingFor | None = None
        if state in ("awaiting-end", "pending"):
            waiting = ("signing-secret" if not row["has_secret"]
                       or row.get("waiting_for_secret") else "job-end"
                       if state == "awaiting-end" else "retry" if row["attempts"] else
                       "first-attempt")
        return cls(
            state=state, waiting_for=waiting, note=_NOTES.get(waiting or ""),
            webhook_id=f"msg_{row['id'].hex}" if ended else None,
            attempts=row["attempts"] if ended else 0,
            next_attempt_at=(row["next_attempt_at"]
                             if state == "pending" and waiting != "signing-secret" else None),
            last_status=row["last_status"] if ended else None,
            last_error=row["last_error"] if ended else None,
            delivered_at=row["delivered_at"] if ended else None,
        )


WaitReason = Literal["running:owner", "running:preset", "running:key", "rate:preset", "rate:key",
                     "rate-reserved"]
WAIT_REASONS: frozenset[str] = frozenset(get_args(WaitReason))


class FlowWait(BaseModel):
    """Why a PENDING job waits on a flow limit (docs/flow-control.md), and until when. No
    attempt is spent while it waits."""

    reason: WaitReason = Field(description=(
        "running:owner, running:preset, running:key: that limit on running jobs is full; the "
        "job starts when one of the jobs under it ends (best priority, then oldest, first). "
        "rate:preset, rate:key: that limit on starts per interval has no slot near; the job "
        "is released when one is. rate-reserved: a start slot is booked for the job at "
        "`until`."))
    limit: str = Field(description=(
        "Which limit: the owner for running:owner, the preset for :preset, the key for :key; "
        "for rate-reserved the job's limit_key if it has one, else its preset."))
    until: datetime | None = Field(description=(
        "rate-reserved: the booked slot. rate:preset, rate:key: when that limit next has a "
        "free slot, in the answers of GET /jobs/{id} and POST /jobs only (null in lists and "
        "elsewhere). running:*: null (it depends on when other jobs end)."))

    @classmethod
    def of(cls, job: Job, until: datetime | None = None) -> FlowWait | None:
        """The job's wait, if it is PENDING on a limit; `until` is the rate's frontier, when
        the caller read it (store.rate_frontier)."""
        reason = job.wait_reason
        if job.state != JobState.PENDING or reason not in WAIT_REASONS:
            return None
        if reason == "running:owner":
            limit = job.owner_id
        elif reason.endswith(":preset"):
            limit = job.preset
        else:  # :key, or a booked slot (under the key's rate, the preset's or both)
            limit = job.limit_key or job.preset
        if reason == "rate-reserved":
            until = job.not_before
        elif not reason.startswith("rate:"):
            until = None
        return cls(reason=reason, limit=limit, until=until)


class ExecutionView(BaseModel):
    """The execution that runs, or ran, a long job's latest started attempt (issue 29): a
    Cloud Run job execution in production, a child process (`local-<pid>`) in make dev."""

    name: str = Field(description="The execution's name, as Cloud Run (or make dev) gave it.")
    attempt: int = Field(description="The attempt it runs or ran; below the job's `attempts` "
                         "while a later attempt has no execution yet.")
    logs_url: str | None = Field(description="Its logs in the Google Cloud console (Logs "
                                 "Explorer); null where executions are not Cloud Run's.")
    console_url: str | None = Field(description="Its page in the Cloud Run console; null where "
                                    "executions are not Cloud Run's.")

    @classmethod
    def of(cls, job: Job, settings: Settings) -> ExecutionView | None:
        if job.execution is None or job.execution_attempt is None:
            return None
        links = console_links(settings, job.execution)
        return cls(name=job.execution, attempt=job.execution_attempt,
                   logs_url=links.logs if links else None,
                   console_url=links.execution if links else None)


class JobView(BaseModel):
    """A job as its owner sees it. The content is not echoed back: it can be large."""

    id: str
    preset: str
    state: JobState
    attempts: int = Field(description="Attempts made so far, over every run of the job.")
    max_attempts: int = Field(description="Attempts each run may make: a retry of a FAILED job "
                              "gives it this many more.")
    attempt_limit: int = Field(description="The attempt at which the current run's budget ends: "
                               "max_attempts at first, attempts + max_attempts after a retry.")
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
    webhook: WebhookView | None = Field(
        default=None, description="For a job with a callback_url, in the answers of POST /jobs "
        "and GET /jobs/{id}; null in lists and elsewhere.")
    trace_id: str | None = Field(
        default=None, description="The W3C trace id (32 hex digits) the job was created under: "
        "its logs, its message and its webhook's `traceparent` carry it.")
    priority: int = Field(ge=MIN_PRIORITY, le=MAX_PRIORITY, description=(
        f"{MIN_PRIORITY} to {MAX_PRIORITY} (default {DEFAULT_PRIORITY}): where jobs compete "
        "for a slot, higher goes first, as a head start of five minutes per level."))
    limit_key: str | None = Field(default=None, description="The caller's key whose limits "
                                  "(PUT /limits/{key}) apply to the job, if any.")
    waiting: FlowWait | None = Field(default=None, description="Why the job waits on a flow "
                                     "limit, and until when; null unless it is PENDING on one.")
    workflow_id: str | None = Field(default=None, description="The workflow the job is a step "
                                    "of (GET /workflows/{id}), if any.")
    step: str | None = Field(default=None, description="The step's name in its workflow.")
    execution: ExecutionView | None = Field(
        default=None, description="For a long job (its preset runs in an execution of its "
        "own), the execution of its latest started attempt, in the answers of GET /jobs/{id}; "
        "null in lists, elsewhere, and for a job whose preset is not long.")
    links: Links

    @classmethod
    def of(cls, job: Job, until: datetime | None = None) -> JobView:
        """The job as its owner sees it; `until` is its rate limit's next free slot, when the
        caller read it (GET /jobs/{id} does, for a job parked by a rate)."""
        base = f"/jobs/{job.id}"
        shared = job.model_dump(
            include=set(cls.model_fields) - {"id", "links", "progress", "webhook", "waiting",
                                             "workflow_id", "execution"})
        progress = None
        if job.progress is not None and job.progress_at is not None:
            progress = ProgressView(fraction=job.progress, note=job.progress_note,
                                    at=job.progress_at, attempt=job.progress_attempt or 0)
        trace = job.traceparent.split("-")[1] if job.traceparent else None
        return cls(**shared, id=str(job.id), progress=progress, trace_id=trace,
                   waiting=FlowWait.of(job, until),
                   workflow_id=str(job.workflow_id) if job.workflow_id else None,
                   links=Links(self=base, events=base + "/events"))


class WebhookSecret(BaseModel):
    """A new signing secret, shown once. Deliveries are signed with it from now on, and also
    with the previous one until `previous_valid_until`, so receivers can switch without loss."""

    secret: str
    rotated_at: datetime
    previous_valid_until: datetime | None


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class EventList(BaseModel):
    events: list[JobEvent]


class Health(BaseModel):
    status: str
    database: str


class Stats(BaseModel):
    """The caller's own queue: jobs per state, how many PENDING ones are due and parked, how
    long the oldest due one has waited, recent throughput."""

    depth: dict[JobState, int]
    # PENDING jobs whose time has come and that are not parked: they wait on a worker.
    pending_due: int = 0
    # PENDING jobs parked by the owner's limit on running jobs: they wait for a free slot.
    pending_parked: int = 0
    # Seconds the oldest due job has waited since it became due; None when none is due. A job
    # for later (run_at, a retry's backoff) and a parked one are not late, so never counted.
    oldest_pending_age_s: float | None
    finished_last_5_min: int
    throughput_per_min: float


class HistoryBucket(BaseModel):
    at: datetime = Field(description="The bucket's start; it lasts `bucket_s` seconds.")
    counts: dict[Literal["COMPLETED", "FAILED", "CANCELLED"], int]


class History(BaseModel):
    """The caller's jobs that ended in each bucket of the window, by end state, oldest first,
    every bucket present: per minute over the last hour, per quarter hour over the last day."""

    window: Literal["hour", "day"]
    bucket_s: int
    buckets: list[HistoryBucket]


class LimitView(BaseModel):
    """A flow limit (docs/flow-control.md): on running jobs, on starts per interval, or both.
    A key's is its owner's (PUT /limits/{key}); a preset's is the deployment's (PRESET_LIMITS)."""

    name: str = Field(description="The key (a caller's limit) or the preset (the deployment's).")
    max_running: int | None = Field(description="At most this many of its jobs PROCESSING at "
                                    "once; null: no such limit.")
    max_starts: int | None = Field(description="At most this many starts per interval_s "
                                   "(kept as even spacing); null: no rate.")
    interval_s: float | None = Field(description="The rate's interval in seconds; null: no rate.")
    running: int = Field(description="Its jobs PROCESSING now, as counted under max_running "
                         "(0 without one).")
    next_at: datetime | None = Field(description="When the rate's next start slot is free (a "
                                     "time past means now); null without a rate.")
    updated_at: datetime

    @classmethod
    def of(cls, limit: FlowLimit) -> LimitView:
        fields = limit.model_dump()
        if limit.max_starts is None:  # a replaced rate leaves its frontier behind: not a slot
            fields["next_at"] = None
        return cls(**fields)


class Limits(BaseModel):
    """How many of the caller's jobs may be PROCESSING at once (0 = unlimited), the caller's
    limits at the door, and the flow limits over its jobs: its own keys' and the presets'."""

    default_max_running: int = Field(description="The stack's OWNER_MAX_RUNNING.")
    override: int | None = Field(description="An operator's limit for this owner, if any.")
    max_running: int = Field(description="The limit that applies: the override, else the "
                             "default.")
    running: int = Field(description="The caller's jobs PROCESSING now.")
    max_submits_per_s: int = Field(
        description="POST /jobs a second the caller may make to one instance (0 = unlimited): "
                    "an operator's override, else OWNER_MAX_SUBMITS_PER_S. Past it: 429 "
                    "submit-rate-exceeded.")
    max_pending: int = Field(
        description="PENDING jobs the caller may have (0 = unlimited): an operator's override, "
                    "else OWNER_MAX_PENDING. Past it: 429 pending-limit-reached.")
    max_waits: int = Field(
        description="`?wait=` requests the caller may hold on one instance at once "
                    "(OWNER_MAX_WAITS). Past it: 429 wait-limit-reached.")
    keys: list[LimitView] = Field(description=(
        "The caller's key limits, by name (PUT /limits/{key}); a job with that limit_key "
        "falls under it."))
    presets: list[LimitView] = Field(description=(
        "The deployment's preset limits (PRESET_LIMITS, as the workers last wrote them), by "
        "name; every owner's jobs of that preset fall under it."))
