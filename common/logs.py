"""Structured JSON log lines that Cloud Logging understands.

One line per event on stdout with `severity`, `message` and fields such as job_id and owner. The
trace of the current request (from X-Cloud-Trace-Context or traceparent) rides along as
`logging.googleapis.com/trace`. Tokens and job content are never passed to these functions.
"""

from __future__ import annotations

import contextvars
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{1,32})(?:/\d+)?(?:;o=\d)?$")


def trace_from_headers(headers: Any, project: str | None) -> str | None:
    """The Cloud Logging trace name for a request, from either header, if well formed."""
    trace_id = None
    if (match := _CLOUD_TRACE.match(headers.get("X-Cloud-Trace-Context", "") or "")) or (
        match := _TRACEPARENT.match(headers.get("traceparent", "") or "")
    ):
        trace_id = match.group(1)
    if trace_id is None:
        return None
    return f"projects/{project}/traces/{trace_id}" if project else trace_id


def bind_trace(trace: str | None) -> None:
    _trace.set(trace)


def log(severity: str, message: str, **fields: Any) -> None:
    entry: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(),
    }
    if trace := _trace.get():
        entry["logging.googleapis.com/trace"] = trace
    entry.update({k: v for k, v in fields.items() if v is not None})
    sys.stdout.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()
