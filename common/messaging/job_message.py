"""The job message on the jobs topic, both ways, and the retry backoff.

A message names a job and the attempt count it was published for; never the content. Anything
that cannot be decoded is a `PoisonMessage`: the worker acknowledges and records it, because
Pub/Sub would otherwise redeliver it forever.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from datetime import timedelta
from typing import Any
from uuid import UUID

from common.store.fragments import INT4_MAX
from common.store.models import DispatchItem

SCHEMA_VERSION = 1
MAX_EXCERPT = 200
# 2 ** 30 x any base is far past any cap; a larger exponent only risks float overflow.
MAX_BACKOFF_EXPONENT = 30


class PoisonMessage(Exception):
    """Undecodable message. `excerpt` is bounded and safe to log."""

    def __init__(self, reason: str, raw: bytes | str = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        self.excerpt = text[:MAX_EXCERPT]


def encode_message(item: DispatchItem) -> tuple[bytes, dict[str, str]]:
    """The message body and its attributes; the job's W3C `traceparent`, when it has one, is an
    attribute (as the OpenTelemetry Pub/Sub conventions carry it), so `process` joins the trace."""
    data = {"v": SCHEMA_VERSION, "job_id": str(item.id), "attempts": item.attempts}
    attributes = {"job_id": str(item.id)}
    if item.traceparent:
        attributes["traceparent"] = item.traceparent
    return json.dumps(data, separators=(",", ":")).encode(), attributes


def decode_message(data: Any) -> DispatchItem:
    """From the `data` of a Pub/Sub message: base64 text (push and CloudEvents) or bytes."""
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise PoisonMessage("data is not base64", data) from None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        raise PoisonMessage("no data", repr(data))
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise PoisonMessage("data is not JSON", raw) from None
    if not isinstance(body, dict):
        raise PoisonMessage("data is not a JSON object", raw)
    if body.get("v") != SCHEMA_VERSION:
        raise PoisonMessage(f"unknown schema version {body.get('v')!r}", raw)
    job_id, attempts = body.get("job_id"), body.get("attempts")
    if not isinstance(job_id, str) or not isinstance(attempts, int) or isinstance(attempts, bool):
        raise PoisonMessage("job_id must be a string and attempts an integer", raw)
    # Whatever the attempts column can hold is a real attempt count (the API bounds how many a
    # job gets); refusing a larger one than we expect would republish its job forever.
    if not 0 <= attempts <= INT4_MAX:
        raise PoisonMessage("attempts out of range", raw)
    try:
        return DispatchItem(id=UUID(job_id), attempts=attempts)
    except ValueError:
        raise PoisonMessage("job_id is not a UUID", raw) from None


def backoff(
    attempt: int, *, base_s: float = 10.0, cap_s: float = 600.0, rng: random.Random | None = None
) -> timedelta:
    """Delay before the attempt after `attempt` (1-based): exponential, capped, with full jitter
    so that jobs failing together do not come back together."""
    exponent = min(max(attempt - 1, 0), MAX_BACKOFF_EXPONENT)
    ceiling = min(cap_s, base_s * 2**exponent)
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))
