"""The client's transport: one request at a time over the standard library's urllib, JSON in
and out, with the retries that are safe (see jobs_client.client for why) and typed errors."""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from jobs_client.errors import ApiError, InvalidUrl, Unreachable, problem_error

TokenSource = Callable[[], str | None]
RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = "jobs-pipeline-client/1"


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


class Transport:
    """The API at `base_url`: how to reach it, with what token, and how patiently."""

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
        """`retries` more attempts after the first; `retry_limited=False` raises a 429 from the
        API's door (RateLimited) at once instead of sleeping out its Retry-After (a person at a
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
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        retries: int | None = None,
        retry_limited: bool | None = None,
    ) -> Any:
        """One request, JSON in and out, with the retries; the answer's JSON (None if empty).
        For endpoints without a method above, such as the sweep service's `POST /`.
        `idempotent` (default: GET only) allows retrying after a connection broke mid-way;
        `retries` overrides the client's own count for this call, `retry_limited` its way with
        a 429."""
        safe = method == "GET" if idempotent is None else idempotent
        limited_retried = self.retry_limited if retry_limited is None else retry_limited
        budget = self.retries if retries is None else retries
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
                retried = err.code in RETRY_STATUSES and (err.code != 429 or limited_retried)
                if retried and attempt <= budget:
                    self._sleep(self._delay(attempt, err.headers.get("Retry-After")))
                    continue
                error = problem_error(err.code, raw, str(err.reason))
                error.retry_after = parse_retry_after(err.headers.get("Retry-After"))
                raise error from None
            except (OSError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                never_sent = isinstance(reason, ConnectionRefusedError)
                if (safe or never_sent) and attempt <= budget:
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
