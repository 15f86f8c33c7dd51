"""Structured JSON log lines that Cloud Logging understands.

One line per event on stdout with `severity`, `message` and fields such as job_id and owner. The
trace of the current request (from X-Cloud-Trace-Context or traceparent) rides along as
`logging.googleapis.com/trace`. Tokens and job content are never passed to these functions.

`log()` never raises: it is called on error paths, where a logging failure would replace the
real outcome with a crash. Whatever a field holds (lone surrogates, objects that cannot be
printed, huge values, cycles) becomes bounded, valid JSON text; a closed stdout loses the line.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# W3C: version 00 is the one we write; ff is invalid, and so are all-zero ids.
_VALID_TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-([0-9a-f]{2})$"
)
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{1,32})(?:/\d+)?(?:;o=\d)?$")
_SURROGATES = re.compile("[\ud800-\udfff]")
# Cloud Logging takes entries up to 256 KB: each text is cut well below, and so is nesting.
MAX_TEXT = 8192
MAX_ITEMS = 100
MAX_DEPTH = 6


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


def traceparent_from_headers(headers: Any) -> str:
    """The W3C `traceparent` this request's work continues: the caller's trace (from
    `traceparent`, else Cloud Run's `X-Cloud-Trace-Context`) with a new span of ours, or a new
    trace when neither is usable. It travels with the job (message attribute, database row)."""
    span = secrets.token_hex(8)
    if match := _VALID_TRACEPARENT.match(headers.get("traceparent", "") or ""):
        return f"00-{match.group(1)}-{span}-{match.group(2)}"
    if match := _CLOUD_TRACE.match(headers.get("X-Cloud-Trace-Context", "") or ""):
        trace_id = match.group(1).lower().rjust(32, "0")
        if trace_id != "0" * 32:
            sampled = (headers.get("X-Cloud-Trace-Context") or "").endswith(";o=1")
            return f"00-{trace_id}-{span}-{'01' if sampled else '00'}"
    return f"00-{secrets.token_hex(16)}-{span}-00"


def bind_traceparent(traceparent: str | None, project: str | None) -> bool:
    """Bind a job's W3C trace to this context, so every log line joins its trace in Cloud
    Logging. False (and nothing bound) if `traceparent` is missing or malformed."""
    match = _VALID_TRACEPARENT.match(traceparent or "")
    if match is None:
        return False
    _traceparent.set(traceparent)
    trace_id = match.group(1)
    _trace.set(f"projects/{project}/traces/{trace_id}" if project else trace_id)
    return True


def unbind_trace() -> None:
    _trace.set(None)
    _traceparent.set(None)


def current_traceparent() -> str | None:
    """The W3C trace bound to this context, to hand on to the work it starts."""
    return _traceparent.get()


def log(severity: str, message: str, **fields: Any) -> None:
    try:
        entry: dict[str, Any] = {
            "severity": _clean(severity),
            "message": _clean(message),
            "time": datetime.now(UTC).isoformat(),
        }
        if trace := _trace.get():
            entry["logging.googleapis.com/trace"] = _clean(trace)
        for key, value in fields.items():
            if value is not None:
                entry[_text(key)] = _clean(value)
        line = json.dumps(entry, ensure_ascii=False)
    except Exception as exc:  # cannot happen with _clean's output; still, never raise
        line = json.dumps({"severity": "ERROR", "message": "unloggable log entry",
                           "error": type(exc).__name__})
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except Exception:  # noqa: S110 - stdout closed or gone: nowhere left to report it
        pass


def _text(value: object) -> str:
    """Any object as bounded text that encodes as UTF-8: its __str__ may raise or lie."""
    try:
        text = str.__str__(value) if isinstance(value, str) else str(value)
        if not isinstance(text, str):
            raise TypeError
    except BaseException as exc:  # a user object's __str__: whatever it raises
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"...(+{len(text) - MAX_TEXT} chars)"
    return _SURROGATES.sub("\ufffd", text)


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of `value`: texts bounded and valid, containers bounded in size and
    depth (so cycles end), numbers JSON can hold; anything else as its text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, str) or depth >= MAX_DEPTH:
        return _text(value)
    if isinstance(value, dict):
        items = list(value.items())
        cleaned = {_text(k): _clean(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            cleaned["..."] = f"{len(items) - MAX_ITEMS} more"
        return cleaned
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        cleaned_list = [_clean(v, depth + 1) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            cleaned_list.append(f"... {len(items) - MAX_ITEMS} more")
        return cleaned_list
    return _text(value)
