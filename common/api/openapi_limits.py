"""Flow limits in the OpenAPI document (common/api/openapi.py builds the rest): `GET /limits`
and `GET`, `PUT`, `DELETE /limits/{key}` (common/api/limits.py), and the two fields a job
takes for them, `priority` and `limit_key`.

`PUT`'s body is written out rather than generated, to state exactly what the store checks
(common/store/flow_limits.checked_limit): each number in its range, at least one field, and
max_starts with interval_s or neither (`dependentRequired`); explicit nulls and other fields
are refused. A key in the path has the store's pattern; one outside it answers 422 naming `key`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.api.limits import MAX_BODY_BYTES
from common.store.flow_limits import MAX_INTERVAL_S, MAX_RUNNING, MAX_STARTS
from common.store.models import (
    DEFAULT_PRIORITY,
    LIMIT_KEY_PATTERN,
    MAX_LIMIT_KEY,
    MAX_PRIORITY,
    MIN_PRIORITY,
)

KEY_TEXT = ("letters, digits and . _ : @ -, starting with a letter or digit, at most "
            f"{MAX_LIMIT_KEY} characters")
KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": f"One of the caller's limit keys: {KEY_TEXT}; another owner's key of the "
                   "same name is another limit.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LIMIT_KEY,
               "pattern": LIMIT_KEY_PATTERN},
}


def job_fields() -> dict[str, Any]:
    """`priority` and `limit_key`, as NewJob and JobTemplate take them (null: not given)."""
    return {
        "priority": {
            "anyOf": [{"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
                      {"type": "null"}],
            "description": f"{MIN_PRIORITY} to {MAX_PRIORITY}, default {DEFAULT_PRIORITY}: "
                           "where jobs compete for a slot (a running or rate limit, a parked "
                           "release), higher goes first, as a head start of five minutes per "
                           "level; so it never starves older work.",
        },
        "limit_key": {
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_LIMIT_KEY,
                       "pattern": LIMIT_KEY_PATTERN}, {"type": "null"}],
            "description": f"A key of the caller's ({KEY_TEXT}): the caller's limits for it "
                           "(PUT /limits/{key}), if any, apply to the job.",
        },
    }


def limit_schemas() -> dict[str, Any]:
    number = {"type": "integer", "minimum": 1}
    return {
        "LimitSpec": {
            "type": "object",
            "title": "LimitSpec",
            "description": "A key's whole limit (what is left out is no limit): at most "
                           "max_running of its jobs PROCESSING at once, and/or at most "
                           "max_starts starts per interval_s seconds (kept as even spacing).",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "max_running": {**number, "maximum": MAX_RUNNING},
                "max_starts": {**number, "maximum": MAX_STARTS},
                "interval_s": {"type": "number", "exclusiveMinimum": 0,
                               "maximum": MAX_INTERVAL_S},
            },
            "dependentRequired": {"max_starts": ["interval_s"], "interval_s": ["max_starts"]},
        },
    }


def limit_paths(op: Callable[..., dict[str, Any]], unavailable: dict[int, str]) -> dict[str, Any]:
    links = {name: {"operationId": name, "parameters": {"key": "$response.body#/name"}}
             for name in ("getLimit", "deleteLimit")}
    bad_key = {422: "the key is not a valid key"}
    by_key = {404: "the caller has no limit with this key (another owner's is not the "
                   "caller's)", **bad_key, **unavailable}
    delete = op("deleteLimit", "Remove one of the caller's key limits; the jobs it held are "
                "let go", {204: "none"}, by_key, params=[KEY])
    delete["responses"]["204"] = {"description": "deleted"}
    return {
        "/limits": {
            "get": op(
                "getLimits",
                "The limits over the caller's jobs: how many may run at once (the stack's "
                "default OWNER_MAX_RUNNING, the caller's override), its quotas at the door, "
                "its key limits and the deployment's preset limits",
                {200: "Limits"},
                unavailable,
            ),
        },
        "/limits/{key}": {
            "get": op("getLimit", "One of the caller's key limits, with its jobs running and "
                      "its next start slot", {200: "LimitView"}, by_key, params=[KEY]),
            "put": op(
                "setLimit",
                "Set (create or replace whole) the caller's limit for a key: jobs submitted "
                "with that limit_key fall under it",
                {200: "LimitView"},
                {400: "the body is not JSON",
                 404: "the path names no key the server can route (a key holding a line "
                      "break; any other invalid key is a 422)",
                 413: f"the body is larger than {MAX_BODY_BYTES} bytes",
                 415: "Content-Type is not application/json",
                 422: "the key or the limit is invalid (nothing written)", **unavailable},
                params=[KEY], body="LimitSpec", links=links,
            ),
            "delete": delete,
        },
    }
