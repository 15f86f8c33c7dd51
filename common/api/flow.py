"""Flow control endpoints of the submit API: batch submit (`POST /jobs:batch`) and bulk actions
(`POST /jobs:bulk-cancel`, `POST /jobs:bulk-retry`).

Where a batch is refused whole and where one item is refused alone:

- The batch's own shape is checked first and refuses the whole request, writing nothing: the
  body is not `{"jobs": [...]}`, the list is empty or holds more than MAX_BATCH_ITEMS, an item
  is not a JSON object (422), or two items carry the same idempotency key (409, as the
  header/body key mismatch of POST /jobs: each key is valid, the request contradicts itself).
  Each problem names the field (`jobs`, `jobs[3]`, `jobs[7].idempotency_key`).
- The door's quotas (common/api/admission.py) take the batch as one request of as many jobs as
  it holds valid items: it spends that many of the owner's submits per second (it is admitted
  while the owner's bucket holds a token, and may leave it in debt), and its new jobs are
  written only if they all fit under the owner's PENDING quota. Either refusal is a 429 for the
  whole batch, with Retry-After, and writes nothing.
- An item that is a JSON object is then judged alone, exactly as POST /jobs would judge it:
  invalid fields, an unknown preset, options its preset refuses, a forbidden callback URL, a
  key reused with a different request. It gets its own problem in its own result; the others
  are created (or replayed) all the same, in one transaction.

A bulk action's filter is the caller's jobs in a state, of a preset, created before a time,
under a limit key.
A filter that names none of these matches every job the caller has: it needs `all: true`, else
422 naming `all`. `dry_run: true` counts what the action would move without writing (the
dashboard's confirmation names that count).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from common.api.admission import PendingHints, QuotaCache, SubmitBuckets, too_many
from common.api.http import Request, Response
from common.api.http import json_response as _json
from common.api.job_input import JobInput
from common.api.models import JobView
from common.api.problems import (
    InvalidParam,
    Problem,
    ProblemError,
    from_store_error,
    validation_problem,
)
from common.logs import current_traceparent, log
from common.presets.registry import Registry
from common.service import BulkResult, JobService
from common.settings import Settings
from common.store.batches import MAX_BATCH_ITEMS
from common.store.bulk import CANCEL_STATES, RETRY_STATES, BulkFilter
from common.store.errors import InvalidInput
from common.store.models import LIMIT_KEY_PATTERN, MAX_LIMIT_KEY, PRESET_PATTERN, NewJob
from common.store.states import JobState
from common.store.timing import parse_run_at

# A batch's body may be larger than one job's: 1,000 ordinary jobs, not 1,000 of the largest.
# Under Cloud Run's 32 MiB request limit.
BATCH_MAX_BODY_BYTES = 16 * 1024 * 1024


def _invalid(status: int, kind: str, title: str, name: str, reason: str) -> ProblemError:
    return ProblemError(status, kind, title, invalid=[InvalidParam(name=name, reason=reason)])


def _invalid_request(name: str, reason: str) -> ProblemError:
    return _invalid(422, "validation-error", "Invalid request", name, reason)


class BatchItemResult(BaseModel):
    """What became of one item of a batch, at its index in the request."""

    index: int = Field(ge=0)
    outcome: Literal["created", "replayed", "refused"]
    job: JobView | None = Field(description="The job, as POST /jobs answers it but without its "
                                "webhook's state (GET /jobs/{id} has it); null when refused.")
    problem: Problem | None = Field(description="Why the item was refused (the problem POST "
                                    "/jobs would answer for it alone); null otherwise.")


class BatchResult(BaseModel):
    """One result per item, in the request's order, and how many of each outcome."""

    created: int
    replayed: int
    refused: int
    results: list[BatchItemResult]


class BulkRequest(BaseModel):
    """Which of the caller's jobs a bulk action applies to. A filter naming no state, preset,
    time or limit key matches every job: it needs `all: true`."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    preset: str | None = Field(default=None, min_length=1, max_length=64, pattern=PRESET_PATTERN)
    created_before: str | None = Field(default=None, max_length=64)
    limit_key: str | None = Field(default=None, min_length=1, max_length=MAX_LIMIT_KEY,
                                  pattern=LIMIT_KEY_PATTERN)
    all: StrictBool = False
    dry_run: StrictBool = False

    @field_validator("state", "preset", "created_before", "limit_key", mode="before")
    @classmethod
    def _given_means_a_value(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value


class BulkOutcome(BaseModel):
    """What a bulk action did; with `dry_run`, what it would do now."""

    action: Literal["cancel", "retry"]
    dry_run: bool
    matched: int = Field(description="Dry run: the jobs the action would move now. Otherwise: "
                         "the matching jobs it looked at.")
    moved: int = Field(description="Jobs moved (0 in a dry run).")
    cancelled: int = Field(description="PENDING jobs now CANCELLED.")
    cancel_requested: int = Field(description="PROCESSING jobs asked to cancel (their worker "
                                  "stops them).")
    retried: int = Field(description="FAILED jobs back to PENDING with a fresh budget.")
    complete: bool = Field(description="False when the request's time budget ended first: "
                           "send the same request again for the rest.")
    as_of: datetime = Field(description="The action took the jobs created before this instant "
                            "(created_before, capped at the server's clock). Send it back as "
                            "created_before to act on exactly the jobs a dry run counted.")

    @classmethod
    def of(cls, action: Literal["cancel", "retry"], dry_run: bool, r: BulkResult) -> BulkOutcome:
        return cls(action=action, dry_run=dry_run, matched=r.matched,
                   moved=sum(r.moved.values()), cancelled=r.moved.get("cancelled", 0),
                   cancel_requested=r.moved.get("cancel_requested", 0),
                   retried=r.moved.get("retried", 0), complete=r.complete, as_of=r.as_of)


class FlowEndpoints:
    """Batch submit and bulk actions. SubmitApi builds one on the first such request and hands
    it the way it reads a request body (with the batch's larger limit)."""

    def __init__(
        self, service: JobService, registry: Registry, settings: Settings,
        body: Callable[[Request, int], Any], *, quotas: QuotaCache, submits: SubmitBuckets,
        pending: PendingHints,
    ) -> None:
        self.service = service
        self.registry = registry
        self.settings = settings
        self._body = body
        # The door's per-owner quotas (common/api/admission.py), shared with POST /jobs.
        self.quotas, self.submits, self.pending = quotas, submits, pending

    # -- batch submit ---------------------------------------------------------------------

    def _create_batch(self, request: Request, owner: str) -> Response:
        if request.headers.get("Idempotency-Key") is not None:
            raise _invalid_request("Idempotency-Key", "a batch takes no Idempotency-Key header: "
                                   "give each job its own idempotency_key")
        items = _batch_items(self._body(request, BATCH_MAX_BODY_BYTES))
        reader = JobInput(self.registry, self.settings, owner)
        results: list[BatchItemResult | None] = [None] * len(items)
        accepted: list[tuple[int, NewJob]] = []
        for index, item in enumerate(items):
            try:
                accepted.append((index, reader.read(item)))
            except ProblemError as exc:
                results[index] = _refused(index, exc)
        quota = self.quotas.get(owner)
        if accepted and quota.max_submits_per_s > 0:  # one request of len(accepted) jobs
            retry_in = self.submits.take(owner, quota.max_submits_per_s, len(accepted))
            if retry_in > 0:
                raise too_many(
                    "submit-rate-exceeded", "Too many submits",
                    f"an owner may submit at most {quota.max_submits_per_s} jobs a second to an "
                    "instance (a batch counts each of its jobs); retry after Retry-After",
                    "max_submits_per_s", quota.max_submits_per_s, retry_in)
        outcomes = self.service.submit_many(owner, [new for _, new in accepted],
                                            traceparent=current_traceparent(),
                                            max_pending=quota.max_pending)
        for (index, _), outcome in zip(accepted, outcomes, strict=True):
            if outcome.error is not None:
                results[index] = _refused(index, from_store_error(outcome.error))
            else:
                assert outcome.job is not None
                results[index] = BatchItemResult(
                    index=index, outcome="created" if outcome.created else "replayed",
                    job=JobView.of(outcome.job), problem=None)
        done = [r for r in results if r is not None]
        counts = {kind: sum(1 for r in done if r.outcome == kind)
                  for kind in ("created", "replayed", "refused")}
        if quota.max_pending > 0:
            for _ in range(counts["created"]):
                self.pending.added(owner)
        log("INFO", "batch accepted", owner=owner, **counts)
        return _json(200, BatchResult(**counts, results=done))

    # -- bulk actions ---------------------------------------------------------------------

    def _bulk_cancel(self, request: Request, owner: str) -> Response:
        flt, dry_run = self._bulk_request(request, CANCEL_STATES, "cancel")
        result = self.service.bulk_cancel(owner, flt, dry_run=dry_run)
        log("INFO", "bulk cancel", owner=owner, dry_run=dry_run, matched=result.matched,
            moved=sum(result.moved.values()))
        return _json(200, BulkOutcome.of("cancel", dry_run, result))

    def _bulk_retry(self, request: Request, owner: str) -> Response:
        flt, dry_run = self._bulk_request(request, RETRY_STATES, "retry")
        result = self.service.bulk_retry(owner, flt, dry_run=dry_run)
        log("INFO", "bulk retry", owner=owner, dry_run=dry_run, matched=result.matched,
            moved=sum(result.moved.values()))
        return _json(200, BulkOutcome.of("retry", dry_run, result))

    def _bulk_request(
        self, request: Request, states: tuple[JobState, ...], action: str
    ) -> tuple[BulkFilter, bool]:
        body = self._body(request, 4096)
        if not isinstance(body, dict):
            raise _invalid_request("body", "must be a JSON object")
        try:
            req = BulkRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        if req.state is not None and req.state not in states:
            names = " or ".join(s.value for s in states)
            raise _invalid_request("state", f"a {action} applies to {names} jobs")
        before = None
        if req.created_before is not None:
            try:
                _, before = parse_run_at(req.created_before)
            except InvalidInput:
                raise _invalid_request("created_before", "must be an RFC 3339 date-time with "
                                       "an offset, e.g. 2026-12-01T08:30:00Z") from None
            if before is None:  # before the year 1 in UTC: matches nothing, still a filter
                before = datetime.min.replace(tzinfo=UTC)
        flt = BulkFilter(state=req.state, preset=req.preset, created_before=before,
                         limit_key=req.limit_key)
        if flt.matches_everything and not req.all:
            raise _invalid_request("all", "this filter (no state, preset, created_before or "
                                   "limit_key) "
                                   "matches every job you have: send all=true to mean it")
        return flt, req.dry_run


def _refused(index: int, exc: ProblemError) -> BatchItemResult:
    return BatchItemResult(index=index, outcome="refused", job=None, problem=exc.problem)


def _batch_items(body: Any) -> list[dict[str, Any]]:
    """The batch's items, or the problem that refuses the whole batch (nothing is written)."""
    if not isinstance(body, dict):
        raise _invalid_request("body", "must be a JSON object: {\"jobs\": [...]}")
    extra = sorted(set(body) - {"jobs"})
    if extra:
        raise _invalid_request("body", "unknown field; a batch is {\"jobs\": [...]}")
    items = body.get("jobs")
    if not isinstance(items, list):
        raise _invalid_request("jobs", "must be an array of jobs")
    if not items:
        raise _invalid_request("jobs", "must hold at least one job")
    if len(items) > MAX_BATCH_ITEMS:
        raise _invalid_request("jobs", f"at most {MAX_BATCH_ITEMS} jobs per batch "
                               f"(this one has {len(items)})")
    first_with: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid_request(f"jobs[{index}]", "must be a JSON object (a job, as POST "
                                   "/jobs takes it)")
        key = item.get("idempotency_key")
        if isinstance(key, str):
            if key in first_with:
                raise _invalid(
                    409, "duplicate-idempotency-key", "Duplicate idempotency keys in the batch",
                    f"jobs[{index}].idempotency_key",
                    f"the same key as jobs[{first_with[key]}]; each job of a batch needs its "
                    "own key")
            first_with[key] = index
    return items
