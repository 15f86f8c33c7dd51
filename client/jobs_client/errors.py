"""What the client raises: one class per kind of outcome a caller handles differently, each an
`ApiError` carrying the RFC 9457 problem the API answered with."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs_client.models import JobView


class ClientError(Exception):
    """Everything this client raises on purpose."""


class InvalidUrl(ClientError, ValueError):
    """The base URL is not http(s)."""


class Unreachable(ClientError):
    """No answer from the API, even after the retries (refused, reset, timed out)."""


class ApiError(ClientError):
    """The API answered with an RFC 9457 problem; its fields, as the server sent them, are
    attributes of the same names: `status`, `title`, `type`, `detail`, `instance`,
    `invalid_params` (a list of `{"name", "reason"}`) and `extra` (the problem's other
    members); `retry_after` is the seconds of the answer's Retry-After (None without one)."""

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
    """429 still, after the retries: the caller is over a limit at the API's door. `quota`
    names it (max_submits_per_s, max_pending, owner_max_waits, wait_slots), `limit` is its
    value and `retry_after` the seconds the server asked to wait (None if it did not say)."""

    @property
    def quota(self) -> str | None:
        """Which limit the caller is over (the problem's `quota`), None if it did not say."""
        value = self.extra.get("quota")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> int | None:
        """That limit's value (the problem's `limit`), None if it did not say."""
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


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 413: BadRequest, 415: BadRequest, 422: BadRequest,
    401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
    429: RateLimited, 503: Unavailable,
}
_STANDARD = ("type", "title", "status", "detail", "instance", "invalid_params")


def problem_error(status: int, body: bytes, reason: str = "") -> ApiError:
    """The typed error for an error response: its problem's fields, or the bare status when
    the body is not a problem (a proxy's HTML page, say)."""
    cls = BY_STATUS.get(status, ApiError)
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


