"""The OpenAPI document's error answers: every status an operation answers with a problem, the
problem `type`s each status may carry, and the Retry-After header that a 429 (the limits at the
door, common/api/admission.py) and a 503 always send. A 429's body is `LimitProblem`, every
other one `Problem` (common/api/problems.py)."""

from __future__ import annotations

from typing import Any

from common.api.problems import TYPE_BASE

PROBLEM = "#/components/schemas/{model}"
# What each status means, per operation kind; the problem `type`s are listed in each response.
PROBLEM_TYPES: dict[int, tuple[str, ...]] = {
    400: ("malformed-json", "invalid-cursor"),
    401: ("unauthenticated",),
    403: ("forbidden",),
    404: ("not-found",),
    409: (
        "idempotency-conflict", "idempotency-key-mismatch", "illegal-transition",
        "attempt-limit-reached", "schedule-limit-reached", "duplicate-idempotency-key",
        "nothing-to-retry",
    ),
    413: ("payload-too-large",),
    415: ("unsupported-media-type",),
    422: ("validation-error", "unknown-preset"),
    429: ("submit-rate-exceeded", "pending-limit-reached", "wait-limit-reached", "waits-busy"),
    503: ("unavailable",),
}
RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
    },
}
SUBMIT_429 = ("the caller is over a quota: submits per second (submit-rate-exceeded) or PENDING "
              "jobs (pending-limit-reached); nothing was written")
WAIT_429 = ("with `wait`: the caller already holds as many waiting requests on this instance as "
            "it may (wait-limit-reached), or the instance's share for waits is taken "
            "(waits-busy); poll without `wait` or come back after Retry-After")


def problems(codes: dict[int, str]) -> dict[str, Any]:
    """The responses for these statuses, each described with why and its problem types."""
    out: dict[str, Any] = {}
    for code, why in codes.items():
        kinds = ", ".join(TYPE_BASE + k for k in PROBLEM_TYPES.get(code, ()))
        model = "LimitProblem" if code == 429 else "Problem"
        out[str(code)] = {
            "description": f"{why} (problem types: {kinds})" if kinds else why,
            "content": {"application/problem+json": {"schema": {
                "$ref": PROBLEM.format(model=model)}}},
        }
        if code in (429, 503):
            out[str(code)]["headers"] = RETRY_AFTER
    return out
