"""Flow control in the OpenAPI document (common/api/openapi.py builds the rest): batch submit
and bulk actions (common/api/flow.py).

A batch's items are documented as JSON objects, not as `NewJob`: an item is judged alone and an
invalid one is refused in its own result (200), so a schema that called it invalid would be one
the server does not enforce. The batch's own rules are exact: 1 to 1,000 objects. Two items with
one idempotency key (409) is a rule JSON Schema cannot state, as the header/body mismatch of
POST /jobs is. A bulk filter's schema is exact, `all` rule included: it must name a state, a
preset or a time, or say `all: true`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from common.api.flow import BATCH_MAX_BODY_BYTES, BatchResult, BulkOutcome
from common.api.openapi_problems import SUBMIT_429
from common.store.batches import MAX_BATCH_ITEMS
from common.store.bulk import CANCEL_STATES, RETRY_STATES
from common.store.models import LIMIT_KEY_PATTERN, MAX_LIMIT_KEY, PRESET_PATTERN
from common.store.states import JobState
from common.store.timing import _OFFSET, _TIME

_LEAP_YEAR = ("(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])"
              "|(?:0[48]|[2468][048]|[13579][26])00)")
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_MONTH_DAY = ("(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
              "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              "|02-(?:0[1-9]|1[0-9]|2[0-8]))")
# An RFC 3339 date-time with an offset, on a real calendar date (leap days included), without
# leap seconds: exactly what common/store/timing.parse_run_at reads.
INSTANT_PATTERN = (f"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[Tt]{_TIME}{_OFFSET}$")
MAX_INSTANT_CHARS = 64
# The answers' models, for openapi.py's one models_json_schema call (shared $defs).
FLOW_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (BatchResult, "serialization"), (BulkOutcome, "serialization")]


def flow_schemas() -> dict[str, Any]:
    def bulk_request(states: tuple[JobState, ...], action: str) -> dict[str, Any]:
        return {
            "type": "object",
            "title": f"Bulk{action.title()}Request",
            "description": f"Which of the caller's jobs to {action}. Name a state, a preset, "
                           "a time or a limit key, or send all: true (a filter naming none "
                           "matches every job).",
            "additionalProperties": False,
            "properties": {
                "state": {"enum": [s.value for s in states]},
                "preset": {"type": "string", "minLength": 1, "maxLength": 64,
                           "pattern": PRESET_PATTERN},
                "created_before": {
                    "type": "string", "format": "date-time", "maxLength": MAX_INSTANT_CHARS,
                    "pattern": INSTANT_PATTERN,
                    "description": "Only jobs created strictly before this instant (RFC 3339 "
                                   "with an offset).",
                },
                "limit_key": {"type": "string", "minLength": 1, "maxLength": MAX_LIMIT_KEY,
                              "pattern": LIMIT_KEY_PATTERN,
                              "description": "Only jobs submitted with this limit_key."},
                "all": {"type": "boolean", "description": "Required (true) when no other "
                        "filter is given."},
                "dry_run": {"type": "boolean", "description": "Count the jobs the action "
                            "would move now; write nothing."},
            },
            "anyOf": [
                {"required": ["state"]},
                {"required": ["preset"]},
                {"required": ["created_before"]},
                {"required": ["limit_key"]},
                {"required": ["all"], "properties": {"all": {"const": True}}},
            ],
        }

    return {
        "BatchRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["jobs"],
            "properties": {
                "jobs": {
                    "type": "array", "minItems": 1, "maxItems": MAX_BATCH_ITEMS,
                    "description": "Each a job as POST /jobs takes it (NewJob), each with its "
                                   "own idempotency_key if any (distinct within the batch, else "
                                   "409). An item POST /jobs would refuse is refused alone, in "
                                   "its own result.",
                    "items": {"type": "object"},
                },
            },
        },
        "BulkCancelRequest": bulk_request(CANCEL_STATES, "cancel"),
        "BulkRetryRequest": bulk_request(RETRY_STATES, "retry"),
    }


def flow_paths(op: Callable[..., dict[str, Any]], unavailable: dict[int, str]) -> dict[str, Any]:
    def bulk(op_id: str, summary: str, body: str) -> dict[str, Any]:
        return op(
            op_id, summary, {200: "BulkOutcome"},
            {400: "the body is not JSON", 413: "the body is larger than 4096 bytes",
             415: "Content-Type is not application/json",
             422: "the filter is invalid, or names nothing and all is not true", **unavailable},
            body=body,
        )

    return {
        "/jobs:batch": {
            "post": op(
                "createJobs",
                f"Create up to {MAX_BATCH_ITEMS} jobs in one transaction and one publish batch, "
                "with an answer per job (created, replayed or refused)",
                {200: "BatchResult"},
                {
                    400: "the body is not JSON",
                    409: "two jobs of the batch have the same idempotency_key (nothing written)",
                    413: f"the body is larger than {BATCH_MAX_BODY_BYTES} bytes",
                    415: "Content-Type is not application/json",
                    422: "the body is not {\"jobs\": [...]} with 1 to "
                         f"{MAX_BATCH_ITEMS} objects (nothing written)",
                    429: SUBMIT_429 + "; a batch counts as one request of as many jobs as it "
                         "would create",
                    **unavailable,
                },
                body="BatchRequest",
            ),
        },
        "/jobs:bulk-cancel": {
            "post": bulk("bulkCancelJobs", "Cancel every PENDING job, and ask every PROCESSING "
                         "job to cancel, among the caller's jobs matching a filter",
                         "BulkCancelRequest"),
        },
        "/jobs:bulk-retry": {
            "post": bulk("bulkRetryJobs", "Retry every FAILED job (with attempts left) among "
                         "the caller's jobs matching a filter", "BulkRetryRequest"),
        },
    }
