"""A small synchronous client of the jobs API, for services that submit jobs, and for the CLI.

It speaks the API's own pydantic models (common.api.models, common.store.models), so a field
added to the API reaches callers without a second description of it. HTTP is the standard
library's urllib: a calling service needs nothing beyond pydantic, which the models need anyway.

Why it is safe to retry: `submit` sends an Idempotency-Key (a new UUID per call unless the
caller gives one), so a retry after a 503 or a dropped connection, when the first request may
have been committed, returns the same job instead of a second one. 503 and 429 are retried
with backoff (full jitter), or after exactly the Retry-After the server asked for, capped.
Connection failures are retried for reads and submits; `cancel` and `retry` are retried only
when the connection was refused (the request never left), since they are not idempotent.

The token comes from a callable, asked again on every attempt, so a Google ID token that
expires between two calls is refreshed by whatever the callable wraps. Redirects are never
followed: a bearer token must not travel to a host the caller did not name.
"""

from __future__ import annotations

import builtins
import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

from pydantic import ValidationError

from common.api.models import EventList, JobList, JobView, Stats
from common.store.models import JobEvent, NewJob
from common.store.states import JobState

TokenSource = Callable[[], str | None]
RETRY_STATUSES = frozenset({429, 503})
PROBLEM_BASE = "https://jobs-pipeline.dev/problems/"
USER_AGENT = "jobs-pipeline-client/1"


class ClientError(Exception):
    """Everything this client raises on purpose."""


class InvalidUrl(ClientError, ValueError):
    """The base URL is not http(s)."""


class Unreachable(ClientError):
    """No answer from the API, even after the retries (refused, reset, timed out)."""


class ApiError(ClientError):
    """The API answered with an RFC 9457 problem; its fields, as the server sent them."""

    def __init__(
        self,
        status: int,
        title: str,
        type: str = "about:blank",  # RFC 9457's name for it
        detail: str | None = None,
        instance: str | None = None,
        invalid_params: list[dict[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.status, self.title, self.type, self.detail = status, title, type, detail
        self.instance = instance
        self.invalid_params = invalid_params or []
        self.extra = extra or {}  # problem members beyond the standard ones (known_presets, …)
        self.retry_after: float | None = None  # from the Retry-After header, when it had one
        reasons = ", ".join(f"{p.get('name')}: {p.get('reason')}" for p in self.invalid_params)
        text = detail or reasons
        super().__init__(title + (f": {text}" if text else ""))


class BadRequest(ApiError):
    """400, 413, 415, 422, or refused before sending (what NewJob refuses): the request itself
    is wrong, and sending it again will not help."""


class Unauthorized(ApiError):
    """401 or 403: no usable token, or not allowed."""


class NotFound(ApiError):
    """404: no such job for this caller (another owner's job looks exactly the same)."""


class Conflict(ApiError):
    """409: not allowed in the job's state, or an idempotency key reused for another job."""


class Unavailable(ApiError):
    """503 or 429 still, after the retries."""


class RateLimited(Unavailable):
    """429 still, after the retries: the caller is over a limit at the door. `quota` names it
    (max_submits_per_s, max_pending, owner_max_waits, wait_slots), `limit` is its value and
    `retry_after` the seconds the server asked to wait (None if it did not say)."""

    @property
    def quota(self) -> str | None:
        value = self.extra.get("quota")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> int | None:
        value = self.extra.get("limit")
        return value if isinstance(value, int) else None

    def __str__(self) -> str:
        after = f" (retry after {self.retry_after:g} s)" if self.retry_after is not None else ""
        return super().__str__() + after


class WaitTimeout(ClientError):
    """The job had not ended when `wait` gave up; `job` is how it was last seen."""

    def __init__(self, job: JobView, timeout_s: float) -> None:
        super().__init__(f"job {job.id} still {job.state} after {timeout_s:g} s")
        self.job = job


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 413: BadRequest, 415: BadRequest, 422: BadRequest,
    401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
    429: RateLimited, 503: Unavailable,
}
_STANDARD = ("type", "title", "status", "detail", "instance", "invalid_params")


def problem_error(status: int, body: bytes, reason: str = "",
                  retry_after: str | None = None) -> ApiError:
    """The typed error for an error response: its problem's fields, or the bare status when
    the body is not a problem (a proxy's HTML page, say); `retry_after` is the header's value."""
    error = _problem_error(status, body, reason)
    error.retry_after = parse_retry_after(retry_after)
    return error


def _problem_error(status: int, body: bytes, reason: str) -> ApiError:
    cls = _BY_STATUS.get(status, ApiError)
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return cls(status, reason or f"HTTP {status}")
    params = problem.get("invalid_params")
    return cls(
        status,
        str(problem.get("title") or reason or f"HTTP {status}"),
        str(problem.get("type") or "about:blank"),
        problem.get("detail"),
        problem.get("instance"),
        [{"name": str(p.get("name")), "reason": str(p.get("reason"))}
         for p in params if isinstance(p, dict)] if isinstance(params, list) else None,
        {k: v for k, v in problem.items() if k not in _STANDARD},
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx becomes an error instead of a second request carrying the token elsewhere."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
        headers: http.client.HTTPMessage, newurl: str,
    ) -> urllib.request.Request | None:
        return None


class JobsClient:
    """The jobs API at `base_url`, e.g. `JobsClient(url, token=lambda: fetch_id_token(...))`."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_retry_after_s: float = 60.0,
        retry_limited: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`retries` more attempts after the first; `retry_limited=False` raises a 429 at the
        door (RateLimited) at once instead of sleeping out its Retry-After (a person at a
        terminal would rather be told); `sleep` and `clock` are injectable so a test can count
        the waits instead of sitting through them."""
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidUrl(f"not an http(s) URL: {base_url}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.retry_limited = retry_limited
        self._sleep, self._clock = sleep, clock
        self._opener = urllib.request.build_opener(_NoRedirects())

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
    ) -> JobView:
        """Create a job (or, for a key used before with the same request, get that job); with
        `run_at` (RFC 3339 with an offset) or `delay_s`, one that runs no sooner."""
        key = idempotency_key or str(uuid.uuid4())
        later: dict[str, Any] = {"run_at": run_at} if run_at is not None else {}
        if delay_s is not None:
            later["delay_s"] = delay_s
        try:
            new = NewJob(preset=preset, content=content, metadata=metadata or {},
                         max_attempts=max_attempts, idempotency_key=key,
                         callback_url=callback_url, **later)
        except ValidationError as exc:
            raise BadRequest(
                422, "Invalid request", PROBLEM_BASE + "validation-error",
                invalid_params=[{"name": ".".join(str(p) for p in e["loc"]) or "body",
                                 "reason": e["msg"]} for e in exc.errors()],
            ) from None
        body = new.model_dump(mode="json", exclude_none=True, exclude={"idempotency_key"})
        answer = self.call("POST", "/jobs", body, headers={"Idempotency-Key": key},
                           idempotent=True)
        return JobView.model_validate(answer)

    def get(self, job_id: str | UUID, *, wait_s: float | None = None,
            retry_limited: bool | None = None) -> JobView:
        """The job; with `wait_s`, the server holds the answer up to that long (0 < wait_s ≤
        30) and answers as soon as the job ends. A wait past the caller's or the instance's
        share of waits is a 429 (RateLimited); `retry_limited=False` raises it at once."""
        query = f"?wait={wait_s:.3f}" if wait_s else ""
        return JobView.model_validate(self.call("GET", f"/jobs/{_segment(job_id)}{query}",
                                                retry_limited=retry_limited))

    def page(
        self, *, state: JobState | str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobList:
        """One page of the caller's jobs, newest first; pass `next_cursor` back for the next."""
        query = {"limit": str(limit)}
        if state:
            query["state"] = str(state)
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
        return Stats.model_validate(self.call("GET", "/stats"))

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
        answers as soon as the job ends, so no sleep is needed between polls. Raises WaitTimeout,
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

    # -- transport ----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        retry_limited: bool | None = None,
    ) -> Any:
        """One request, JSON in and out, with the retries; the answer's JSON (None if empty).
        For endpoints without a method above, such as the sweep service's `POST /`.
        `idempotent` (default: GET only) allows retrying after a connection broke mid-way;
        `retry_limited=False` raises a 429 (RateLimited) at once instead of waiting it out
        (default: as the client was made)."""
        safe = method == "GET" if idempotent is None else idempotent
        if retry_limited is None:
            retry_limited = self.retry_limited
        data = json.dumps(body).encode() if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            req = self._request(method, path, data, headers or {})
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    raw, status = resp.read(), resp.status
            except urllib.error.HTTPError as err:
                raw = err.read()
                limited_now = err.code == 429 and not retry_limited
                if err.code in RETRY_STATUSES and attempt <= self.retries and not limited_now:
                    self._sleep(self._delay(attempt, err.headers.get("Retry-After")))
                    continue
                raise problem_error(err.code, raw, str(err.reason),
                                    err.headers.get("Retry-After")) from None
            except (OSError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                never_sent = isinstance(reason, ConnectionRefusedError)
                if (safe or never_sent) and attempt <= self.retries:
                    self._sleep(self._delay(attempt, None))
                    continue
                raise Unreachable(f"cannot reach {self.base_url}: {reason}") from None
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(status, "The answer is not JSON") from None

    def _request(
        self, method: str, path: str, data: bytes | None, extra: dict[str, str]
    ) -> urllib.request.Request:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **extra}
        if data is not None:
            headers["Content-Type"] = "application/json"
        token = self.token() if self.token is not None else None
        if token:  # asked on every attempt: a refreshed token is used at once
            headers["Authorization"] = f"Bearer {token}"
        # The scheme was checked in __init__: only http(s) is ever opened.
        return urllib.request.Request(  # noqa: S310
            self.base_url + path, data=data, method=method, headers=headers
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


def _segment(job_id: str | UUID) -> str:
    return urllib.parse.quote(str(job_id), safe="")
