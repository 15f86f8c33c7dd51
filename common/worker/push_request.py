"""A Pub/Sub push request as the worker's `Delivery`, read straight from its JSON body.

Three shapes carry the same message: the raw push envelope `{"message": {...}, "subscription":
...}` (our own push subscription), a binary CloudEvent (Eventarc: `ce-*` headers, the envelope
as the body) and a structured one (`application/cloudevents+json`, the envelope in `data`).
Whatever is none of them (not JSON, too large, no message object) becomes a delivery without
data, which the worker records as poison and acknowledges: delivering it again cannot help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from common.worker.outcomes import Delivery

# Our messages are a job id and an attempt count, with a few attributes: well under 1 KiB.
# Anything near this cap is not ours, and parsing it would only cost CPU.
MAX_PUSH_BYTES = 64 * 1024
STRUCTURED = "application/cloudevents+json"


def delivery_from_push(headers: Mapping[str, str], body: bytes) -> Delivery:
    """The Pub/Sub message in a push request's body (at most MAX_PUSH_BYTES of it)."""
    event_id = headers.get("ce-id")
    if len(body) > MAX_PUSH_BYTES:
        return delivery_from_envelope(None, event_id)
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8/16/32, or nested too deep
        return delivery_from_envelope(None, event_id)
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type == STRUCTURED and isinstance(document, dict):
        event_id = document.get("id") if isinstance(document.get("id"), str) else None
        document = document.get("data")
    return delivery_from_envelope(document, event_id)


def delivery_from_envelope(envelope: Any, event_id: str | None = None) -> Delivery:
    """The message inside a push envelope (or a messagePublished event's data)."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        return Delivery(data=None, message_id=event_id or "")
    message_id = message.get("messageId") or message.get("message_id") or event_id or ""
    attributes = message.get("attributes")
    return Delivery(
        data=message.get("data"),
        message_id=str(message_id),
        attributes=_text_attributes(attributes),
    )


def _text_attributes(attributes: Any) -> dict[str, str]:
    """Pub/Sub attributes are text to text; anything else in them is dropped, so the worker
    never sees a number where it reads a traceparent."""
    if not isinstance(attributes, dict):
        return {}
    return {k: v for k, v in attributes.items() if isinstance(k, str) and isinstance(v, str)}
