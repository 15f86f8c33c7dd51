"""The owner's history in the OpenAPI document (common/api/openapi.py builds the rest):
`GET /stats/history`. (`GET /limits` is with the other limits, common/api/openapi_limits.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def insight_paths(op: Callable[..., dict[str, Any]], unavailable: dict[int, str]) -> dict[str, Any]:
    return {
        "/stats/history": {
            "get": op(
                "getStatsHistory",
                "How many of the caller's jobs ended per minute over the last hour, or per "
                "quarter hour over the last day, by end state (from the server's records)",
                {200: "History"},
                {422: "window is not hour or day", **unavailable},
                params=[{
                    "name": "window",
                    "in": "query",
                    "description": "hour (default): 60 one-minute buckets; day: 96 quarter "
                                   "hours.",
                    "schema": {"enum": ["hour", "day"]},
                }],
            ),
        },
    }
