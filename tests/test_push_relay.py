"""make dev's push relay (localstack/push_relay.py) against the real emulator and a real HTTP
endpoint: it keeps `concurrency` requests in flight where the emulator's own push keeps about
two, posts the envelope production's push sends (which `process` reads as the same message),
acknowledges on a push success code and nacks otherwise, so the emulator redelivers with a
growing `deliveryAttempt` and finally dead-letters, as with the push subscription."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from common.worker.push_request import delivery_from_push
from localstack.push_relay import PushRelay
from localstack.topology import Topology
from tests.support.polling import wait_until
from tests.support.pubsub_pull import pull_acked


@dataclass
class Endpoint:
    """A loopback HTTP endpoint that records each push, counts how many are in flight at once
    and answers what `answer` says (holding a request while `hold` is clear)."""

    answer: dict[str, int] = field(default_factory=dict)  # message data -> status; else 200
    hold: threading.Event = field(default_factory=threading.Event)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Endpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                with endpoint._lock:
                    endpoint.bodies.append(body)
                    endpoint.in_flight += 1
                    endpoint.peak = max(endpoint.peak, endpoint.in_flight)
                endpoint.hold.wait(30)
                with endpoint._lock:
                    endpoint.in_flight -= 1
                data = base64.b64decode(delivery_from_push(dict(self.headers), raw).data or "")
                self.send_response(endpoint.answer.get(data.decode(), 200))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/"

    def stop(self) -> None:
        self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Relayed:
    topology: Topology
    endpoint: Endpoint
    publisher: Any

    def publish(self, data: str, **attributes: str) -> str:
        topic = self.topology.path("topics", self.topology.jobs_topic)
        return str(self.publisher.publish(topic, data.encode(), **attributes).result(timeout=30))

    def relay(self, concurrency: int) -> PushRelay:
        return PushRelay(self.topology.path("subscriptions", self.topology.push_subscription),
                         self.endpoint.url, concurrency=concurrency,
                         ack_deadline_s=self.topology.ack_deadline_s).start()


@pytest.fixture()
def relayed(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relayed]:
    from google.cloud import pubsub_v1

    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)

    tag = uuid.uuid4().hex[:8]
    topology = Topology(project=emulator.project, jobs_topic=f"relay-{tag}",
                        push_subscription=f"relay-{tag}-sub", dead_letter_topic=f"dead-{tag}",
                        dead_letter_subscription=f"dead-{tag}-reader", results_topic=f"res-{tag}",
                        max_delivery_attempts=5, min_backoff_s=0.1, max_backoff_s=0.5)
    topology.create(None, pull=True)
    endpoint = Endpoint().start()
    publisher = pubsub_v1.PublisherClient()
    try:
        yield Relayed(topology, endpoint, publisher)
    finally:
        endpoint.stop()


def test_it_keeps_as_many_pushes_in_flight_as_asked_and_no_more(relayed: Relayed) -> None:
    relay = relayed.relay(concurrency=4)
    try:
        for i in range(6):
            relayed.publish(f"m{i}")
        wait_until(lambda: relayed.endpoint.in_flight == 4, "four pushes in flight", timeout=30)
        assert len(relayed.endpoint.bodies) == 4  # the other two wait for a free slot
        relayed.endpoint.hold.set()
        wait_until(lambda: relay.acked == 6, "six acknowledged", timeout=30)
    finally:
        relay.stop()
    assert relayed.endpoint.peak == 4 and relay.nacked == 0
    assert len(relayed.endpoint.bodies) == 6  # acknowledged: none came back


def test_the_envelope_is_production_s_push_and_process_reads_it(relayed: Relayed) -> None:
    relayed.endpoint.hold.set()
    relay = relayed.relay(concurrency=2)
    try:
        message_id = relayed.publish('{"v": 1}', traceparent="00-" + "a" * 32 + "-" + "b" * 16
                                     + "-01")
        wait_until(lambda: relay.acked == 1, "one acknowledged", timeout=30)
    finally:
        relay.stop()
    body = relayed.endpoint.bodies[0]
    assert body["subscription"] == relayed.topology.path(
        "subscriptions", relayed.topology.push_subscription)
    assert body["deliveryAttempt"] == 1
    message = body["message"]
    assert message["messageId"] == message["message_id"] == message_id
    assert message["publishTime"] == message["publish_time"]
    assert message["publishTime"].endswith("Z")
    delivery = delivery_from_push({"Content-Type": "application/json"},
                                  json.dumps(body).encode())
    assert delivery.message_id == message_id and delivery.data == message["data"]
    assert delivery.attributes == {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}


def test_a_refused_push_is_redelivered_then_dead_lettered(relayed: Relayed) -> None:
    """503, and 203: a 2xx, but not one of push's success codes, so Pub/Sub would retry it."""
    relayed.endpoint.hold.set()
    relayed.endpoint.answer = {"refused": 503, "odd": 203}
    relay = relayed.relay(concurrency=2)
    try:
        for data in ("refused", "fine", "odd"):
            relayed.publish(data)
        dead = pull_acked(relayed.topology.path(
            "subscriptions", relayed.topology.dead_letter_subscription), wait_s=90, want=2)
    finally:
        relay.stop()
    assert sorted(m.data for m in dead) == [b"odd", b"refused"]
    assert {m.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] for m in dead} == {"5"}
    for data in ("refused", "odd"):
        encoded = base64.b64encode(data.encode()).decode()
        attempts = [b["deliveryAttempt"] for b in relayed.endpoint.bodies
                    if b["message"]["data"] == encoded]
        assert attempts == [1, 2, 3, 4, 5], (data, attempts)
    assert relay.acked == 1 and relay.nacked == 10
