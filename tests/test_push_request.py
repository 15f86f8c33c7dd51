"""Reading a push request's body as a delivery: the three shapes Pub/Sub and Eventarc send, and
whatever else arrives (pure functions; the real server is in test_process_server.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.worker.push_request import MAX_PUSH_BYTES, delivery_from_push

MESSAGE = {"data": "eyJ2IjogMX0=", "messageId": "m-7", "publishTime": "2026-11-27T00:00:00Z",
           "attributes": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}}
ENVELOPE = {"message": MESSAGE, "subscription": "projects/p/subscriptions/s"}
JSON = {"Content-Type": "application/json"}


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_the_raw_push_envelope() -> None:
    d = delivery_from_push(JSON, _body(ENVELOPE))
    assert (d.data, d.message_id, dict(d.attributes)) == (
        MESSAGE["data"], "m-7", MESSAGE["attributes"])


def test_a_binary_cloudevent_carries_the_envelope_as_its_body() -> None:
    headers = {**JSON, "ce-id": "evt-1", "ce-specversion": "1.0"}
    without_id = {"message": {"data": MESSAGE["data"]}}
    assert delivery_from_push(headers, _body(ENVELOPE)).message_id == "m-7"
    assert delivery_from_push(headers, _body(without_id)).message_id == "evt-1"


def test_a_structured_cloudevent_carries_it_in_data() -> None:
    event = {"specversion": "1.0", "id": "evt-2", "type": "google.cloud.pubsub.topic.v1."
             "messagePublished", "data": {"message": {"data": MESSAGE["data"]}}}
    headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    d = delivery_from_push(headers, _body(event))
    assert (d.data, d.message_id) == (MESSAGE["data"], "evt-2")


def test_header_names_in_any_case() -> None:
    """As werkzeug hands them over: `Ce-Id`, `content-type` are the same headers."""
    from werkzeug.datastructures import Headers

    event = {"id": "evt-3", "data": {"message": {"data": MESSAGE["data"]}}}
    structured = Headers({"content-type": "Application/CloudEvents+JSON"})
    assert delivery_from_push(structured, _body(event)).message_id == "evt-3"
    binary = Headers({"Content-Type": "application/json", "CE-ID": "evt-4"})
    assert delivery_from_push(binary, _body({"message": {"data": "e30="}})).message_id == "evt-4"


def test_attributes_that_are_not_text_are_dropped() -> None:
    message = {**MESSAGE, "attributes": {"traceparent": 7, "ok": "yes", "list": ["x"]}}
    d = delivery_from_push(JSON, _body({"message": message}))
    assert dict(d.attributes) == {"ok": "yes"}


@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe", b"[1]", b"null", b"{}", b'{"message": "text"}',
    b'{"message": ' + b" " * MAX_PUSH_BYTES + b"{}}", b"[" * 5000, b'{"message": ' * 3000,
])
def test_anything_else_is_a_delivery_without_data(body: bytes) -> None:
    d = delivery_from_push(JSON, body)
    assert d.data is None and dict(d.attributes) == {}
