"""A small synchronous client of the jobs API, for services that submit jobs, and for the CLI.

It installs on its own (`pip install ./client`): pydantic is its one dependency, for the models
(jobs_client.models) that mirror the API's OpenAPI document; HTTP is the standard library's
urllib.

Why it is safe to retry: `submit` sends an Idempotency-Key (a new UUID per call unless the
caller gives one), so a retry after a 503 or a dropped connection, when the first request may
have been committed, returns the same job instead of a second one. 503 and 429 are retried
with backoff (full jitter), or after exactly the Retry-After the server asked for, capped.
Connection failures are retried for reads and submits; other writes are retried only when the
connection was refused (the request never left), since they are not idempotent.

The token comes from a callable, asked again on every attempt, so a Google ID token that
expires between two calls is refreshed by whatever the callable wraps. Redirects are never
followed: a bearer token must not travel to a host the caller did not name.
"""

from __future__ import annotations

import builtins
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

from pydantic import ValidationError

from jobs_client.errors import BadRequest, RateLimited, Unavailable, WaitTimeout
from jobs_client.models import (
    BatchResult,
    BulkOutcome,
    EventList,
    Health,
    History,
    JobEvent,
    JobList,
    JobState,
    JobTemplate,
    JobView,
    Limits,
    LimitView,
    NewJob,
    ScheduleEvent,
    ScheduleEventList,
    ScheduleList,
    ScheduleView,
    Stats,
    WebhookSecret,
)
from jobs_client.transport import TokenSource, parse_retry_after
from jobs_client.workflows import WorkflowCalls

__all__ = ["JobsClient", "TokenSource", "parse_retry_after", "template"]
PROBLEM_BASE = "https://jobs-pipeline.dev/problems/"
_M = TypeVar("_M", bound=JobTemplate)


class JobsClient(WorkflowCalls):
    """The jobs API at `base_url`, e.g. `JobsClient(url, token=lambda: fetch_id_token(...))`.
    `retries` more attempts after the first; `sleep` and `clock` (see Transport) are
    injectable so a test can count the waits instead of sitting through them."""

    # -- the API ------------------------------------------------------------------------------

    def submit(
        self,
        preset: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        run_at: str | None = None,
        delay_s: int | None = None,
        priority: int | None = None,
        limit_key: str | None = None,
    ) -> JobView:
        """Create a job (or, for a key used before with the same request, get that job); with
        `run_at` (RFC 3339 with an offset) or `delay_s`, one that runs no sooner. `priority`
        (0 to 9, the server's default 5) puts it ahead of lower ones where jobs compete for a
        slot; `limit_key` puts it under the caller's limits for that key (`set_limit`)."""
        key = idempotency_key or str(uuid.uuid4())
        later: dict[str, Any] = {"run_at": run_at} if run_at is not None else {}
        if delay_s is not None:
            later["delay_s"] = delay_s
        new = _checked(NewJob, preset=preset, content=content, metadata=metadata or {},
                       max_attempts=max_attempts, idempotency_key=key,
                       callback_url=callback_url, priority=priority, limit_key=limit_key,
                       **later)
        body = new.model_dump(mode="json", exclude_none=True, exclude={"idempotency_key"})
        answer = self.call("POST", "/jobs", body, headers={"Idempotency-Key": key},
                           idempotent=True)
        return JobView.model_validate(answer)

    def submit_many(self, jobs: Iterable[NewJob | dict[str, Any]]) -> BatchResult:
        """Create up to 1,000 jobs in one request (one transaction on the server), with one
        result per job, in order: created, replayed, or refused with its own problem. A dict is
        sent as it is (the server judges it, as the CLI's JSON Lines are). A job without an
        idempotency_key is given a new UUID, so the whole call is safe to retry (a retry
        answers `replayed` for what the first attempt created). Batch-level faults raise:
        BadRequest (empty, over 1,000), Conflict (two jobs with one key)."""
        items = []
        for new in jobs:
            item = (new.model_dump(mode="json", exclude_none=True) if isinstance(new, NewJob)
                    else dict(new))
            if item.get("idempotency_key") is None:
                item["idempotency_key"] = str(uuid.uuid4())
            items.append(item)
        answer = self.call("POST", "/jobs:batch", {"jobs": items}, idempotent=True)
        return BatchResult.model_validate(answer)

    def bulk_cancel(self, **filter_: Any) -> BulkOutcome:
        """Cancel every PENDING job and ask every PROCESSING one to cancel, among the caller's
        jobs matching the filter (see `bulk`)."""
        return self.bulk("cancel", **filter_)

    def bulk_retry(self, **filter_: Any) -> BulkOutcome:
        """Retry every FAILED job with attempts left among the caller's jobs matching the
        filter (see `bulk`)."""
        return self.bulk("retry", **filter_)

    def bulk(
        self, action: Literal["cancel", "retry"], *, state: JobState | str | None = None,
        preset: str | None = None, created_before: datetime | str | None = None,
        limit_key: str | None = None, all: bool = False, dry_run: bool = False,
        repeat: bool = True,
    ) -> BulkOutcome:
        """One bulk action over the caller's jobs in `state`, of `preset`, created before
        `created_before` (a timezone-aware datetime or RFC 3339 text), under `limit_key`; with
        none of these,
        `all=True` is required (else BadRequest naming `all`). `dry_run` counts without
        writing. A server that runs out of time answers complete=False; with `repeat` the
        call is sent again until complete, and the counts are summed. Not retried after a
        broken connection (the first attempt may have moved jobs)."""
        body: dict[str, Any] = {}
        if state is not None:
            body["state"] = str(state)
        body.update({k: v for k, v in (("preset", preset), ("limit_key", limit_key)) if v})
        if created_before is not None:
            body["created_before"] = (created_before.isoformat()
                                      if isinstance(created_before, datetime) else created_before)
        if all:
            body["all"] = True
        if dry_run:
            body["dry_run"] = True
        total: BulkOutcome | None = None
        while True:
            step = BulkOutcome.model_validate(self.call("POST", f"/jobs:bulk-{action}", body))
            if total is None:
                total = step
            else:
                counts = ("matched", "moved", "cancelled", "cancel_requested", "retried")
                total = total.model_copy(update={
                    **{k: getattr(total, k) + getattr(step, k) for k in counts},
                    "complete": step.complete})
            if step.complete or not repeat:
                return total

    def get(self, job_id: str | UUID, *, wait_s: float | None = None,
            retry_limited: bool | None = None) -> JobView:
        """The job; with `wait_s`, the server holds the answer up to that long (0 < wait_s ≤
        30) and answers as soon as the job ends. A wait past the caller's or the instance's
        share of waits is a 429 (RateLimited); `retry_limited=False` raises it at once."""
        query = f"?wait={wait_s:.3f}" if wait_s else ""
        return JobView.model_validate(self.call("GET", f"/jobs/{_segment(job_id)}{query}",
                                                retry_limited=retry_limited))

    def page(
        self, *, state: JobState | str | None = None, limit: int = 50, cursor: str | None = None,
        preset: str | None = None,
    ) -> JobList:
        """One page of the caller's jobs, newest first; pass `next_cursor` back for the next."""
        query = {"limit": str(limit)}
        if state:
            query["state"] = str(state)
        if preset:
            query["preset"] = preset
        if cursor:
            query["cursor"] = cursor
        return JobList.model_validate(
            self.call("GET", "/jobs?" + urllib.parse.urlencode(query))
        )

    def list(
        self, *, state: JobState | str | None = None, page_size: int = 50
    ) -> Iterator[JobView]:
        """Every one of the caller's jobs, newest first, fetching a page only when needed."""
        cursor: str | None = None
        while True:
            page = self.page(state=state, limit=page_size, cursor=cursor)
            yield from page.jobs
            if not page.next_cursor or not page.jobs:
                return
            cursor = page.next_cursor

    def events(self, job_id: str | UUID) -> builtins.list[JobEvent]:
        """The job's audit trail, oldest first."""
        answer = self.call("GET", f"/jobs/{_segment(job_id)}/events")
        return EventList.model_validate(answer).events

    def cancel(self, job_id: str | UUID) -> JobView:
        """PENDING ends CANCELLED at once; PROCESSING gets `cancel_requested`."""
        return JobView.model_validate(self.call("POST", f"/jobs/{_segment(job_id)}/cancel", {}))

    def retry(self, job_id: str | UUID) -> JobView:
        """A FAILED job goes back to PENDING and is dispatched again."""
        return JobView.model_validate(self.call("POST", f"/jobs/{_segment(job_id)}/retry", {}))

    def stats(self) -> Stats:
        """The caller's queue: jobs per state, the oldest due one, recent throughput."""
        return Stats.model_validate(self.call("GET", "/stats"))

    def history(self, window: Literal["hour", "day"] = "hour") -> History:
        """How many of the caller's jobs ended per minute (`hour`) or quarter hour (`day`),
        by end state, oldest bucket first, from the server's records."""
        return History.model_validate(self.call("GET", f"/stats/history?window={window}"))

    def health(self) -> Health:
        """Whether the service answers and reaches its database. A 503 here is an answer (the
        database is unreachable), not an error: it is returned, not raised or retried."""
        try:
            return Health.model_validate(self.call("GET", "/healthz", retries=0))
        except Unavailable as exc:
            if exc.status == 503 and "database" in exc.extra:
                return Health(status="unavailable", database=str(exc.extra["database"]))
            raise

    def limits(self) -> Limits:
        """How many of the caller's jobs may run at once (the stack's default and any
        override), its quotas at the door, its key limits and the deployment's preset limits."""
        return Limits.model_validate(self.call("GET", "/limits"))

    def get_limit(self, key: str) -> LimitView:
        """The caller's limit for `key`, with its jobs running and its next start slot
        (NotFound if it has none: another owner's key of the same name is not the caller's)."""
        return LimitView.model_validate(self.call("GET", f"/limits/{_segment(key)}"))

    def set_limit(
        self, key: str, *, max_running: int | None = None, max_starts: int | None = None,
        interval_s: float | None = None,
    ) -> LimitView:
        """Set the caller's limit for `key`, replacing it whole (what is not given is no
        limit): at most `max_running` of its jobs running at once, and/or at most `max_starts`
        starts per `interval_s` seconds (given together). Jobs submitted with
        `limit_key=key` fall under it. A bad value raises BadRequest naming the field, and
        changes nothing. Safe to retry: setting the same limit twice is setting it once."""
        body = {name: value for name, value in (("max_running", max_running),
                                                ("max_starts", max_starts),
                                                ("interval_s", interval_s)) if value is not None}
        return LimitView.model_validate(
            self.call("PUT", f"/limits/{_segment(key)}", body, idempotent=True))

    def delete_limit(self, key: str) -> None:
        """Remove the caller's limit for `key` (NotFound if it has none); the jobs it parked
        are let go."""
        self.call("DELETE", f"/limits/{_segment(key)}")

    def rotate_webhook_secret(self) -> WebhookSecret:
        """A new signing secret for the caller's webhooks, shown this once; the previous one
        keeps signing for the grace period. Not retried unless the request never left: a second
        rotation would replace the secret this call returned."""
        return WebhookSecret.model_validate(self.call("POST", "/webhook-secret/rotate", {}))

    # -- schedules ----------------------------------------------------------------------------

    def create_schedule(
        self,
        cron: str,
        job: JobTemplate,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        overlap: Literal["skip", "allow"] | None = None,
        catch_up: Literal["once", "all"] | None = None,
    ) -> ScheduleView:
        """A recurring job: `job` is created at each fire of `cron` in `timezone`."""
        body: dict[str, Any] = {"cron": cron, "timezone": timezone,
                                "job": job.model_dump(mode="json", exclude_none=True)}
        if not enabled:
            body["enabled"] = False
        if overlap is not None:
            body["overlap"] = overlap
        if catch_up is not None:
            body["catch_up"] = catch_up
        return ScheduleView.model_validate(self.call("POST", "/schedules", body))

    def schedules(self, *, limit: int = 50, cursor: str | None = None) -> ScheduleList:
        """One page of the caller's schedules, newest first."""
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return ScheduleList.model_validate(
            self.call("GET", "/schedules?" + urllib.parse.urlencode(query))
        )

    def schedule(self, schedule_id: str | UUID) -> ScheduleView:
        """One of the caller's schedules (another owner's is NotFound)."""
        return ScheduleView.model_validate(self.call("GET", f"/schedules/{_segment(schedule_id)}"))

    def update_schedule(
        self,
        schedule_id: str | UUID,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        job: JobTemplate | None = None,
        enabled: bool | None = None,
        overlap: Literal["skip", "allow"] | None = None,
        catch_up: Literal["once", "all"] | None = None,
    ) -> ScheduleView:
        """Change only what is given; `job` replaces the whole template (the API has no way to
        change one of its fields alone, and it does not echo the content back)."""
        patch: dict[str, Any] = {
            k: v for k, v in (("cron", cron), ("timezone", timezone), ("enabled", enabled),
                              ("overlap", overlap), ("catch_up", catch_up)) if v is not None
        }
        if job is not None:
            patch["job"] = job.model_dump(mode="json", exclude_none=True)
        if not patch:
            raise BadRequest(422, "Invalid request", PROBLEM_BASE + "validation-error",
                             detail="nothing to change")
        return ScheduleView.model_validate(
            self.call("PATCH", f"/schedules/{_segment(schedule_id)}", patch)
        )

    def delete_schedule(self, schedule_id: str | UUID) -> None:
        """Delete the schedule: it fires no more."""
        self.call("DELETE", f"/schedules/{_segment(schedule_id)}")

    def schedule_events(self, schedule_id: str | UUID) -> builtins.list[ScheduleEvent]:
        """The schedule's fires and skips, oldest first."""
        answer = self.call("GET", f"/schedules/{_segment(schedule_id)}/events")
        return ScheduleEventList.model_validate(answer).events

    def wait(
        self,
        job_id: str | UUID,
        timeout_s: float = 300.0,
        *,
        poll_s: float = 0.5,
        server_wait_s: float | None = None,
        on_change: Callable[[JobView], None] | None = None,
    ) -> JobView:
        """Poll until the job ends and return it; `on_change` sees each new state or progress
        (and the first). With `server_wait_s`, each poll is `GET /jobs/{id}?wait=N`: the server
        answers as soon as the job ends, so no sleep is needed between polls; a wait the server
        has no room for (429) is a plain poll that round. Raises WaitTimeout,
        holding the job as last seen, after `timeout_s`."""
        deadline = self._clock() + timeout_s
        last: tuple[JobState, Any] | None = None
        while True:
            remaining = deadline - self._clock()
            hold = min(server_wait_s, remaining) if server_wait_s and remaining > 0.05 else None
            try:
                job = self.get(job_id, wait_s=hold,
                               retry_limited=self.retry_limited if hold is None else False)
            except RateLimited:  # no room for another wait: poll this round instead
                job, hold = self.get(job_id), None
            seen = (job.state, job.progress)
            if seen != last:
                last = seen
                if on_change is not None:
                    on_change(job)
            if job.state.terminal:
                return job
            if self._clock() >= deadline:
                raise WaitTimeout(job, timeout_s)
            if hold is None:
                self._sleep(poll_s)

def template(
    preset: str, content: str, *, metadata: dict[str, Any] | None = None,
    max_attempts: int | None = None, callback_url: str | None = None,
    priority: int | None = None, limit_key: str | None = None,
) -> JobTemplate:
    """A schedule's job, checked as the API checks it (BadRequest before anything is sent);
    `callback_url` makes each job it fires POST its end there, signed, as `submit`'s does;
    `priority` and `limit_key` are each fired job's, as `submit`'s are."""
    return _checked(JobTemplate, preset=preset, content=content, metadata=metadata or {},
                    max_attempts=max_attempts, callback_url=callback_url, priority=priority,
                    limit_key=limit_key)


def _checked(model: type[_M], **fields: Any) -> _M:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise BadRequest(
            422, "Invalid request", PROBLEM_BASE + "validation-error",
            invalid_params=[{"name": ".".join(str(p) for p in e["loc"]) or "body",
                             "reason": e["msg"]} for e in exc.errors()],
        ) from None


def _segment(job_id: str | UUID) -> str:
    return urllib.parse.quote(str(job_id), safe="")
