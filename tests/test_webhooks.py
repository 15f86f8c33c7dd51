"""Signed completion webhooks on the real stack: a real receiver (an HTTP server in the test)
verifies every request with the Standard Webhooks reference verifier."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import functions.submit
from common.maintenance import webhooks as webhook_step
from common.maintenance.budget import Budget
from common.messaging import callbacks
from common.messaging.signing import seal, signature_header
from common.messaging.webhooks import WebhookDeliverer
from common.settings import Settings
from common.store.job_store import JobStore
from common.store.states import JobState
from localstack.postgres import free_port
from tests.conftest import table_counts
from tests.process_fixtures import Pipeline
from tests.submit_fixtures import SubmitHarness
from tests.support.slow_peers import BlackHole, Lookups
from tests.support.webhook_receiver import Receiver


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoff, so a test sees several attempts; read by submit, process and the sweep."""
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_S", "0.1")
    monkeypatch.setenv("WEBHOOK_RETRY_CAP_S", "0.3")
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_S", "3")
    monkeypatch.setenv("WEBHOOK_PROCESS_TRIES", "5")


@pytest.fixture()
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in make dev: the receiver is on this machine."""
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port())
    yield rec
    rec.stop()


def rotate(api: SubmitHarness, owner: str = "alice") -> dict[str, Any]:
    resp = api.client.post("/webhook-secret/rotate", headers=api.auth(owner))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = resp.get_json()
    assert body["secret"].startswith("whsec_")
    return body


def submit(api: SubmitHarness, url: str, owner: str = "alice") -> dict[str, Any]:
    resp = api.post_job(owner, {"preset": "echo", "content": "hi", "callback_url": url})
    assert resp.status_code == 202, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    assert body["callback_url"] == url
    return body


def deliverer(engine: Engine, **overrides: Any) -> WebhookDeliverer:
    """The sweep's deliverer, with the settings the submit instance read."""
    settings: Settings = functions.submit.get_api().settings.model_copy(update=overrides)
    return WebhookDeliverer(JobStore(engine, settings), settings)


def sweep_until(dlv: WebhookDeliverer, done: Any, passes: int = 200) -> None:
    """Run the sweep's webhook step, pass after pass, until `done()`."""
    for _ in range(passes):
        webhook_step.deliver(dlv, Budget(30), 100)
        if done():
            return
        threading.Event().wait(0.05)
    raise AssertionError("not done after the sweep passes")


def events(api: SubmitHarness, job_id: str) -> list[dict[str, Any]]:
    resp = api.client.get(f"/jobs/{job_id}/events", headers=api.auth("alice"))
    found: list[dict[str, Any]] = resp.get_json()["events"]
    return found


def test_receiver_down_then_up_is_delivered_by_the_sweep(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.secret = rotate(api)["secret"]
    job = submit(api, receiver.url)
    # The owner cancels it: that statement's trigger queues the delivery with the move.
    cancelled = api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    assert cancelled.status_code == 200
    dlv = deliverer(engine)
    assert webhook_step.deliver(dlv, Budget(30), 100)["outcomes"] == {"pending": 1}  # nobody up
    receiver.start()
    sweep_until(dlv, lambda: receiver.received)
    [got] = receiver.received
    assert got.error is None and got.answered == 200
    assert got.verified["type"] == "job.cancelled"
    assert got.verified["data"]["id"] == job["id"] and got.verified["data"]["state"] == "CANCELLED"
    [row] = dlv.store.deliveries(job["id"])
    assert got.headers["webhook-id"] == f"msg_{row['id'].hex}"
    assert row["state"] == "delivered" and row["attempts"] == 2
    delivered = [e for e in events(api, job["id"]) if e["reason"] == "webhook-delivered"]
    assert len(delivered) == 1 and delivered[0]["details"]["delivery_attempts"] == 2
    # The job itself did not move: same state, no new transition.
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["state"] == "CANCELLED"
    assert all(e["from_state"] == e["to_state"] == "CANCELLED" for e in delivered)
    # Delivered: later passes send nothing more.
    assert webhook_step.deliver(dlv, Budget(30), 100)["attempted"] == 0


def test_a_receiver_answering_500_gets_it_once_it_answers_2xx(
    loopback: None, pipeline: Pipeline, receiver: Receiver
) -> None:
    """`process` delivers right after the job ends, retrying with backoff by itself."""
    receiver.secret = rotate(pipeline.api)["secret"]
    receiver.plan = [500, 500, 503]
    receiver.start()
    job = submit(pipeline.api, receiver.url)
    pipeline.wait(job["id"], JobState.COMPLETED)
    received = receiver.wait_for(200)
    assert [r.answered for r in received] == [500, 500, 503, 200]
    assert len({r.headers["webhook-id"] for r in received}) == 1  # one delivery, one id
    assert all(r.error is None for r in received)  # every attempt is signed afresh
    body = received[-1].verified
    assert body["type"] == "job.completed" and body["data"]["state"] == "COMPLETED"
    assert body["data"]["result"]["output"] == {"content": "hi"}
    assert body["data"]["result"]["status"] == "succeeded"
    assert pipeline.job(job["id"]).state.value == "COMPLETED"
    for _ in range(200):  # the receiver answered; process records it right after
        [row] = pipeline.store.deliveries(job["id"])
        if row["state"] != "pending":
            break
        threading.Event().wait(0.05)
    assert row["state"] == "delivered" and row["attempts"] == 4 and row["last_status"] == 200


def test_a_delivery_is_given_up_after_its_budget_with_an_event(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.secret = rotate(api)["secret"]
    receiver.plan = [500] * 50
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    dlv = deliverer(engine)
    sweep_until(dlv, lambda: dlv.store.deliveries(job["id"])[0]["state"] == "given_up")
    assert len(receiver.received) == 5  # WEBHOOK_MAX_ATTEMPTS
    [given_up] = [e for e in events(api, job["id"]) if e["reason"] == "webhook-given-up"]
    assert given_up["details"]["delivery_attempts"] == 5
    assert given_up["details"]["status"] == 500
    assert api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()[
        "state"] == "CANCELLED"


def test_delivery_checks_the_target_again(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    """Accepted where loopback was allowed; a deliverer where it is not refuses to call it."""
    receiver.secret = rotate(api)["secret"]
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    dlv = deliverer(engine, webhook_allow_loopback=False)
    assert webhook_step.deliver(dlv, Budget(30), 100)["outcomes"] == {"given_up": 1}
    assert receiver.received == []
    [given_up] = [e for e in events(api, job["id"]) if e["reason"] == "webhook-given-up"]
    assert given_up["details"]["error"].startswith("target refused")


def test_no_secret_waits_without_spending_attempts_until_the_owner_makes_one(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    dlv = deliverer(engine)
    for _ in range(7):  # more passes than WEBHOOK_MAX_ATTEMPTS (5), each past any backoff
        webhook_step.deliver(dlv, Budget(30), 100)
        threading.Event().wait(0.35)
    [row] = dlv.store.deliveries(job["id"])
    assert (row["state"], row["attempts"]) == ("pending", 0), row
    assert receiver.received == []  # never sent unsigned
    # The caller was told at submit, and GET /jobs/{id} says what the delivery waits for.
    assert job["webhook"]["waiting_for"] == "signing-secret"
    assert job["webhook"]["state"] == "awaiting-end"
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["webhook"]["state"] == "pending"
    assert shown["webhook"]["waiting_for"] == "signing-secret"
    assert shown["webhook"]["attempts"] == 0
    receiver.secret = rotate(api)["secret"]
    sweep_until(dlv, lambda: receiver.received)
    assert receiver.received[0].error is None
    [row] = dlv.store.deliveries(job["id"])
    assert (row["state"], row["attempts"]) == ("delivered", 1)


def due_count(engine: Engine, owner: str) -> int:
    """The owner's deliveries in every take's range (pending and due now)."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM webhook_deliveries WHERE owner_id = %s "
            "AND state = 'pending' AND next_attempt_at <= now()", (owner,)).scalar_one())


def test_deliveries_waiting_for_a_secret_leave_the_due_range_until_it_is_made(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    """400 deliveries of an owner with no secret: the first pass moves them out of the due
    range, so no later take reads them; making the secret brings them all back at once, and
    the next pass sends them. (Before: all 400 stayed due, at the head of the due index,
    and every take scanned past them.)"""
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    with engine.connect() as conn:  # the same job's snapshot, many times over
        conn.exec_driver_sql(
            "INSERT INTO webhook_deliveries (job_id, owner_id, url, payload, next_attempt_at) "
            "SELECT job_id, owner_id, url, payload, now() - interval '1 hour' "
            "FROM webhook_deliveries, generate_series(1, 399) WHERE job_id = %s",
            (job["id"],))
        conn.commit()
    assert due_count(engine, "hs256:alice") == 400
    dlv = deliverer(engine)
    first = webhook_step.deliver(dlv, Budget(30), 100)
    assert first["attempted"] == 0 and receiver.received == [], first
    assert due_count(engine, "hs256:alice") == 0
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["webhook"]["waiting_for"] == "signing-secret", shown["webhook"]
    assert (shown["webhook"]["attempts"], shown["webhook"]["next_attempt_at"]) == (0, None)
    receiver.secret = rotate(api)["secret"]
    assert due_count(engine, "hs256:alice") == 400  # due again in the rotation's statement
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["webhook"]["waiting_for"] == "first-attempt", shown["webhook"]
    sweep_until(dlv, lambda: due_count(engine, "hs256:alice") == 0 and all(
        r["state"] == "delivered" for r in dlv.store.deliveries(job["id"])))
    assert len(receiver.received) == 400 and {r.error for r in receiver.received} == {None}


def test_a_delivery_set_aside_as_the_secret_was_made_is_woken_by_the_next_pass(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    """A take that read "no secret" just before the rotation committed may set a delivery aside
    after the rotation woke the owner's others: the next pass wakes it (the owner's secret
    changed within the hour) and sends it."""
    receiver.secret = rotate(api)["secret"]
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    with engine.connect() as conn:  # what that late take leaves behind
        conn.exec_driver_sql(
            "UPDATE webhook_deliveries SET next_attempt_at = TIMESTAMPTZ '9999-01-01 00:00:00+00' "
            "WHERE job_id = %s", (job["id"],))
        conn.commit()
    report = webhook_step.deliver(deliverer(engine), Budget(30), 100)
    assert report["woken"] == 1 and report["outcomes"] == {"delivered": 1}, report
    assert receiver.received[0].error is None


def test_a_secret_the_servers_key_cannot_open_waits_without_spending_attempts(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    """The operator changed WEBHOOK_SECRET_KEY: the owner's stored secret no longer opens. The
    delivery waits, spending no attempt, and GET /jobs/{id} says why; the owner's new secret
    sends it (signed with the new secret only: the previous one does not open either). (Before:
    each pass spent an attempt, `signing secret unusable`, until it was given up.)"""
    old_key, new_key = (SecretStr(base64.b64encode(os.urandom(32)).decode()) for _ in "ab")
    store = JobStore(engine, functions.submit.get_api().settings)
    store.rotate_webhook_secret("hs256:alice", seal("whsec_" + "A" * 32, "hs256:alice",
                                                    old_key), 86_400)
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    dlv = deliverer(engine, webhook_secret_key=new_key)
    for _ in range(7):  # more passes than WEBHOOK_MAX_ATTEMPTS (5), each past any backoff
        webhook_step.deliver(dlv, Budget(30), 100)
        threading.Event().wait(0.35)
    [row] = dlv.store.deliveries(job["id"])
    assert (row["state"], row["attempts"], receiver.received) == ("pending", 0, []), row
    hook = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()["webhook"]
    assert hook["waiting_for"] == "signing-secret" and hook["attempts"] == 0, hook
    assert "cannot be opened with the server's key" in hook["last_error"], hook
    # The owner makes a new secret (sealed with the key in use now): sent at the next pass.
    receiver.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    store.rotate_webhook_secret("hs256:alice", seal(receiver.secret, "hs256:alice", new_key),
                                86_400)
    assert webhook_step.deliver(dlv, Budget(30), 100)["outcomes"] == {"delivered": 1}
    assert receiver.received[0].error is None
    assert receiver.received[0].headers["webhook-signature"].count("v1,") == 1


def test_get_job_shows_the_webhook_state_retrying_then_delivered(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.secret = rotate(api)["secret"]
    receiver.plan = [503]
    receiver.start()
    job = submit(api, receiver.url)
    assert job["webhook"] == {
        "state": "awaiting-end", "waiting_for": "job-end", "note": "sent when the job ends",
        "webhook_id": None, "attempts": 0, "next_attempt_at": None, "last_status": None,
        "last_error": None, "delivered_at": None,
    }
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    dlv = deliverer(engine)
    assert webhook_step.deliver(dlv, Budget(30), 100)["outcomes"] == {"pending": 1}
    hook = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()["webhook"]
    assert hook["state"] == "pending" and hook["waiting_for"] == "retry"
    assert hook["attempts"] == 1 and hook["last_status"] == 503
    assert hook["last_error"] == "answered 503" and hook["next_attempt_at"] is not None
    sweep_until(dlv, lambda: dlv.store.deliveries(job["id"])[0]["state"] == "delivered")
    hook = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()["webhook"]
    assert hook["state"] == "delivered" and hook["waiting_for"] is None
    assert hook["attempts"] == 2 and hook["last_status"] == 200 and hook["delivered_at"]
    assert hook["webhook_id"] == receiver.received[-1].headers["webhook-id"]
    # Lists do not read deliveries: the field is null there.
    listed = api.client.get("/jobs", headers=api.auth("alice")).get_json()["jobs"]
    assert [j["webhook"] for j in listed] == [None]
    # Another owner's job stays a 404, webhook and all.
    other = api.client.get(f"/jobs/{job['id']}", headers=api.auth("bob"))
    assert other.status_code == 404


def test_the_webhook_carries_the_jobs_trace_and_the_events_its_id(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.secret = rotate(api)["secret"]
    receiver.start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = api.post_job("alice", {"preset": "echo", "content": "hi",
                                  "callback_url": receiver.url},
                        traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    job = resp.get_json()
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    sweep_until(deliverer(engine), lambda: receiver.received)
    got = receiver.received[0]
    version, sent_trace, span, flags = got.headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01") and len(span) == 16
    [delivered] = [e for e in events(api, job["id"]) if e["reason"] == "webhook-delivered"]
    assert delivered["details"]["webhook_id"] == got.headers["webhook-id"]
    assert got.headers["webhook-id"].startswith("msg_")


def test_rotation_signs_with_both_secrets_during_the_grace_period(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    old = rotate(api)["secret"]
    new = rotate(api)
    assert new["previous_valid_until"] is not None and new["secret"] != old
    receiver.secret = old  # a receiver that has not switched yet
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    sweep_until(deliverer(engine), lambda: receiver.received)
    got = receiver.received[0]
    assert got.error is None and len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(new["secret"]).verify(got.body, got.headers)  # and the switched one too
    # Secrets are stored sealed or marked, never shown again, never logged.
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT secret FROM webhook_secrets").scalar_one()
    assert stored != new["secret"]


def test_a_replay_outside_the_tolerance_or_tampered_is_rejected(
    loopback: None, api: SubmitHarness, engine: Engine, receiver: Receiver
) -> None:
    receiver.secret = rotate(api)["secret"]
    receiver.start()
    job = submit(api, receiver.url)
    api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    sweep_until(deliverer(engine), lambda: receiver.received)
    got = receiver.received[0]
    verifier = Webhook(receiver.secret)
    verifier.verify(got.body, got.headers)  # the captured request, now: fine
    # The same request replayed six minutes later carries a timestamp six minutes old.
    msg_id, body = got.headers["webhook-id"], got.body.decode()
    then = datetime.now(UTC) - timedelta(minutes=6)
    replay = {**got.headers, "webhook-timestamp": str(int(then.timestamp())),
              "webhook-signature": signature_header([receiver.secret], msg_id, then, body)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(got.body, replay)
    # The captured signature on another body, or with a moved timestamp, matches nothing.
    tampered = json.dumps({**json.loads(body), "type": "job.completed"})
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verifier.verify(tampered, got.headers)
    moved = {**got.headers, "webhook-timestamp": str(int(got.headers["webhook-timestamp"]) - 1)}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verifier.verify(got.body, moved)


FORBIDDEN = [
    "https://169.254.169.254/computeMetadata/v1/",  # the metadata server
    "https://10.1.2.3/hook", "https://192.168.0.1/hook", "https://[fd00::1]/hook",
    "http://127.0.0.1:8080/hook", "https://localhost/hook", "https://[::1]/hook",  # loopback
    "http://hooks.example.com/x",  # not https
    "https://user:pw@hooks.example.com/x", "ftp://hooks.example.com/x", "hooks.example.com",
    "https://hooks.example.com:0/x", "https://hooks.example.com:65536/x",
    "https://hooks.example.com/a b", "https://hooks.exämple.com/x", "https://ex\u0000.com/",
    "https://hooks.example.com/\n", "https://" + "a" * 64 + ".com/", "https://x/",
    "https://hooks.example.com/" + "a" * 2048, "",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_forbidden_targets_are_refused_at_submit(
    api: SubmitHarness, engine: Engine, url: str
) -> None:
    before = table_counts(engine)
    resp = api.post_job("alice", {"preset": "echo", "content": "hi", "callback_url": url})
    assert resp.status_code == 422, resp.get_json()
    body = resp.get_json()
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert body["invalid_params"][0]["name"] == "callback_url"
    assert table_counts(engine) == before and api.pull() == []


@pytest.mark.parametrize("url", ["https://169.254.169.254/", "http://10.0.0.1/",
                                 "https://192.168.1.1/", "http://[fe80::1]/"])
def test_loopback_allowed_still_refuses_every_other_internal_target(
    loopback: None, api: SubmitHarness, url: str
) -> None:
    resp = api.post_job("alice", {"preset": "echo", "content": "hi", "callback_url": url})
    assert resp.status_code == 422


def test_names_are_checked_after_resolution() -> None:
    """`localhost` resolves (through this machine's real resolver) to a loopback address."""
    target = callbacks.Target("https", "localhost", 443, "/")
    with pytest.raises(callbacks.ForbiddenTarget, match="resolves to an address"):
        callbacks.resolve(target, allow_loopback=False)
    assert [str(a) for a in callbacks.resolve(target, allow_loopback=True)] == ["127.0.0.1"]
    # A public-looking name that does not resolve (yet) is not refused: each delivery checks.
    callbacks.check_at_submit("https://hooks.example.com/x", allow_loopback=False)


def test_a_public_callback_url_is_accepted_and_shown(api: SubmitHarness) -> None:
    job = submit(api, "https://hooks.example.com/jobs?token=abc")
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["callback_url"] == "https://hooks.example.com/jobs?token=abc"
    # Same key, different callback: a different request.
    first = api.post_job("alice", {"preset": "echo", "content": "hi", "idempotency_key": "k",
                                   "callback_url": "https://a.example.com/"})
    again = api.post_job("alice", {"preset": "echo", "content": "hi", "idempotency_key": "k",
                                   "callback_url": "https://b.example.com/"})
    assert first.status_code == 202 and again.status_code == 409


EMBEDDING_METADATA = [
    "64:ff9b::a9fe:a9fe",    # NAT64: 169.254.169.254
    "::a9fe:a9fe",           # IPv4-compatible
    "::ffff:0:a9fe:a9fe",    # IPv4-translated
    "2002:a9fe:a9fe::1",     # 6to4
    "::ffff:a9fe:a9fe",      # IPv4-mapped
    "64:ff9b::a00:1",        # NAT64: 10.0.0.1
    "2002:c0a8:101::1",      # 6to4: 192.168.1.1
    "64:ff9b:1::a9fe:a9fe",  # NAT64, local-use prefix
]


@pytest.mark.parametrize("address", EMBEDDING_METADATA)
def test_ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_inside(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not callbacks.address_allowed(ip, allow_loopback=False)
    assert not callbacks.address_allowed(ip, allow_loopback=True)


def test_public_ipv4_inside_ipv6_stays_allowed() -> None:
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111"):
        assert callbacks.address_allowed(ipaddress.ip_address(address), allow_loopback=False)
    # Loopback inside a translation prefix is not this machine: refused even where allowed.
    assert not callbacks.address_allowed(ipaddress.ip_address("64:ff9b::7f00:1"),
                                         allow_loopback=True)


@pytest.mark.parametrize("address", EMBEDDING_METADATA[:4])
def test_a_name_resolving_to_an_embedded_metadata_address_is_refused_at_submit_and_delivery(
    api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    """The name's DNS answer (a stand-in for the system resolver) is an IPv6 form of the
    metadata server: refused at submit; and when a name turns to it after submit, the
    delivery refuses to call it and gives up."""
    hole = BlackHole()
    lookups = Lookups(hole)
    monkeypatch.setattr(socket, "getaddrinfo", lookups)
    try:
        lookups.answers["meta.example.com"] = [address]
        resp = api.post_job("alice", {"preset": "echo", "content": "hi",
                                      "callback_url": "https://meta.example.com/hook"})
        assert resp.status_code == 422, resp.get_json()
        assert resp.get_json()["invalid_params"][0]["name"] == "callback_url"
        lookups.answers["turns.example.com"] = ["2606:4700::1111"]
        job = submit(api, "https://turns.example.com/hook")
        rotate(api)
        api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
        lookups.answers["turns.example.com"] = [address]
        assert webhook_step.deliver(deliverer(engine), Budget(30), 100)["outcomes"] == {
            "given_up": 1}
        [given_up] = [e for e in events(api, job["id"]) if e["reason"] == "webhook-given-up"]
        assert given_up["details"]["error"].startswith("target refused")
    finally:
        hole.stop()
