"""Webhooks never let one owner's receivers hold up the sweep or another owner (issue 25):

- a receiver that drips its answer is cut at the attempt's one wall-clock deadline, and the
  sweep's lock is not held while any receiver is called, so another pass runs meanwhile;
- one owner's names that never resolve (a real blocked read stands in for the unanswered DNS
  query) neither delay another owner's delivery nor spend its attempts;
- in `process`, a receiver that never answers holds only its owner's lane: another owner's
  delivery goes out while that attempt is still waiting.

Real PostgreSQL, real receivers and peers on loopback sockets; nothing here asserts a time:
each bound is a count (connections, attempts, passes refused)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine

import functions.submit
from common.lazy import Lazy
from common.maintenance import webhooks as webhook_step
from common.maintenance.budget import Budget
from common.maintenance.sweep import Sweeper, SweepRequest
from common.messaging import callbacks, resolver
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.messaging.webhooks import PER_OWNER, WebhookDeliverer
from common.service import JobService
from common.settings import Settings
from common.store.job_store import JobStore
from common.store.models import NewJob
from localstack.postgres import free_port
from tests.process_fixtures import Pipeline
from tests.submit_fixtures import SubmitHarness
from tests.support.polling import wait_until
from tests.support.slow_peers import BlackHole, DripReceiver, Lookups, TlsReceiver
from tests.support.webhook_receiver import Receiver


@pytest.fixture(autouse=True)
def _webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_S", "0.1")
    monkeypatch.setenv("WEBHOOK_RETRY_CAP_S", "0.3")
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_S", "3")
    monkeypatch.setenv("WEBHOOK_PROCESS_TRIES", "5")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port())
    yield rec
    rec.stop()


@pytest.fixture()
def hole() -> Iterator[BlackHole]:
    peer = BlackHole()
    yield peer
    peer.stop()


def rotate(api: SubmitHarness, owner: str) -> str:
    resp = api.client.post("/webhook-secret/rotate", headers=api.auth(owner))
    assert resp.status_code == 200
    secret: str = resp.get_json()["secret"]
    return secret


def ended_with_callback(api: SubmitHarness, owner: str, url: str) -> str:
    """A job of `owner` with `url`, cancelled: its delivery is due."""
    resp = api.post_job(owner, {"preset": "echo", "content": "hi", "callback_url": url})
    assert resp.status_code == 202, resp.get_json()
    job_id: str = resp.get_json()["id"]
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth(owner)).status_code == 200
    return job_id


def instance_settings(**overrides: Any) -> Settings:
    settings: Settings = functions.submit.get_api().settings.model_copy(update=overrides)
    return settings


# -- 1: a dripping receiver ----------------------------------------------------------------


def test_a_dripping_answer_is_cut_at_the_deadline(loopback_drip: DripReceiver) -> None:
    """One deadline for the whole attempt: a byte every 0.2 s never trips a per-read timeout
    of 1 s, yet the attempt ends, and says why."""
    raised: list[BaseException] = []

    def attempt() -> None:
        try:
            callbacks.post(loopback_drip.url, b"{}", {}, allow_loopback=True, timeout_s=1.0,
                           max_read=1024)
        except Exception as exc:
            raised.append(exc)

    caller = threading.Thread(target=attempt, daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "the attempt is still reading the drip"
    assert [type(e).__name__ for e in raised] == ["DeadlineExceeded"]
    assert isinstance(raised[0], TimeoutError)
    wait_until(lambda: loopback_drip.cut == 1, timeout=30, what="the drip to be cut")
    assert loopback_drip.requests == 1


@pytest.fixture()
def loopback_drip() -> Iterator[DripReceiver]:
    drip = DripReceiver(interval_s=0.2)
    yield drip
    drip.stop()


def test_a_dripping_receiver_does_not_hold_the_sweep(
    api: SubmitHarness, engine: Engine, loopback_drip: DripReceiver
) -> None:
    rotate(api, "alice")
    job_id = ended_with_callback(api, "alice", loopback_drip.url)
    settings = instance_settings(webhook_timeout_s=1.5)
    store = JobStore(engine, settings)
    sweeper = Sweeper(JobService(store, Dispatcher(settings)), Notifier(settings), settings)
    first: dict[str, Any] = {}

    def pass_with_webhooks() -> None:
        first.update(sweeper.run(SweepRequest(steps=["rescue", "webhooks"], time_budget_s=4)))

    runner = threading.Thread(target=pass_with_webhooks, daemon=True)
    runner.start()
    try:
        assert loopback_drip.dripped.wait(30), "the receiver was never called"
        # The receiver is dripping its answer to the first pass right now: another pass runs.
        other = sweeper.run(SweepRequest(steps=["rescue"]))
        assert other.get("skipped") is None, other
        assert other["ok"] is True and "rescue" in other["steps"]
        runner.join(60)
        assert not runner.is_alive(), "the first pass never ended"
        wait_until(lambda: loopback_drip.cut == 1, timeout=30, what="us to hang up on it")
    finally:
        loopback_drip.stop()
        runner.join(30)
    assert first["steps"]["webhooks"]["outcomes"] == {"pending": 1}, first
    [row] = store.deliveries(job_id)
    assert row["state"] == "pending" and row["attempts"] == 1
    assert row["last_error"].startswith("DeadlineExceeded"), row["last_error"]


# -- 2: one owner's names that never resolve ------------------------------------------------


def test_unresolvable_names_of_one_owner_do_not_cost_another_owner(
    api: SubmitHarness, engine: Engine, receiver: Receiver, hole: BlackHole,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mallory's eight callback hosts never resolve: each lookup blocks (a real read nobody
    answers) for 10 s. Alice's delivery, in the same batch, goes out on its first attempt, and
    at most the per-owner share of Mallory's lookups ran at once."""
    receiver.secret = rotate(api, "alice")
    rotate(api, "mallory")
    receiver.start()
    store = JobStore(engine, instance_settings())
    mallory = "hs256:mallory"
    for i in range(8):  # written as submit would have accepted them (a name may resolve later)
        job, _ = store.create(mallory, NewJob(preset="echo", content="x",
                                              callback_url=f"https://h{i}.never.example/hook"))
        store.cancel(mallory, job.id)
    alice_job = ended_with_callback(api, "alice", receiver.url)
    lookups = Lookups(hole, wait_s=30.0)
    monkeypatch.setattr(socket, "getaddrinfo", lookups)
    dlv = WebhookDeliverer(store, instance_settings())
    try:
        report = webhook_step.deliver(dlv, Budget(60), 100)
        [alice_row] = store.deliveries(alice_job)
        assert (alice_row["state"], alice_row["attempts"]) == ("delivered", 1), (
            alice_row, report)
        assert len(receiver.received) == 1 and receiver.received[0].error is None
        assert hole.max_open <= resolver.PER_OWNER, hole.max_open  # Mallory's share of lookups
        spent = mallory_attempts(engine, mallory)
        assert spent == resolver.PER_OWNER, report  # one batch: at most the owner's share tried
        # Mallory's lookups are still blocked: the next pass cannot start any of Mallory's
        # attempts, and gives them back instead of spending them.
        # Past the retry backoff (at most 0.3 s here) and the give-back delay (1 s) of the
        # four that found Mallory's lookups busy later in the first pass.
        threading.Event().wait(1.1)
        again = webhook_step.deliver(dlv, Budget(60), 100)
        assert again["outcomes"] == {"released": 8}, again
        assert mallory_attempts(engine, mallory) == spent
        assert hole.max_open <= resolver.PER_OWNER
    finally:
        hole.stop()  # the blocked lookups end now


def mallory_attempts(engine: Engine, owner: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT sum(attempts) FROM webhook_deliveries WHERE owner_id = %s", (owner,)
        ).scalar_one())


def test_a_lookup_that_cannot_start_is_refused_at_once_and_others_go_on(
    hole: BlackHole
) -> None:
    lookups = Lookups(hole, wait_s=30.0)
    names = resolver.Resolver(per_owner=1, total=2, lookup=lambda h, p: lookups(h, p))
    blocked = threading.Thread(target=lambda: _swallow(
        lambda: names.lookup("a.never.example", 443, owner="mallory", timeout_s=30)),
        daemon=True)
    blocked.start()
    wait_until(lambda: hole.open == 1, timeout=30, what="the first lookup to block")
    with pytest.raises(resolver.LookupBusy):  # Mallory's share is in use: nothing tried
        names.lookup("b.never.example", 443, owner="mallory", timeout_s=30)
    assert hole.accepted == 1
    # Another owner's lookup starts and answers.
    infos = names.lookup("localhost", 443, owner="alice", timeout_s=30)
    assert {i[4][0] for i in infos} >= {"127.0.0.1"}
    # A lookup past its caller's deadline keeps its owner's share until it really ends.
    with pytest.raises(TimeoutError):
        names.lookup("c.never.example", 443, owner="bob", timeout_s=0.2)
    assert names.running("bob") == 1
    with pytest.raises(resolver.LookupBusy):  # the instance's total (2) is in use
        names.lookup("localhost", 443, owner="carol", timeout_s=30)
    hole.stop()
    wait_until(lambda: names.running("bob") == 0 and names.running("mallory") == 0,
               timeout=30, what="the blocked lookups to end")


def _swallow(call: Any) -> None:
    """Run a lookup whose end (a gaierror once the hole closes) is not this test's subject."""
    with contextlib.suppress(Exception):
        call()


# -- 5: head-of-line blocking in process ----------------------------------------------------


@pytest.fixture()
def slow_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by the process server when it starts: an attempt may wait 20 s for an answer."""
    monkeypatch.setenv("WEBHOOK_TIMEOUT_S", "20")


def test_a_receiver_that_never_answers_does_not_hold_back_another_owner(
    slow_attempts: None, hole: BlackHole, receiver: Receiver, pipeline: Pipeline
) -> None:
    receiver.secret = rotate(pipeline.api, "alice")
    rotate(pipeline.api, "mallory")
    receiver.start()
    pipeline.submit(owner="mallory", callback_url=f"http://127.0.0.1:{hole.port}/hook")
    wait_until(lambda: hole.accepted >= 1, timeout=60, what="mallory's first attempt")
    pipeline.submit(owner="alice", callback_url=receiver.url)
    got = receiver.wait_for(200, timeout_s=40)
    # Alice's delivery went out while Mallory's first attempt was still waiting for an answer.
    assert [r.answered for r in got] == [200], (len(got), hole.accepted)
    assert (hole.accepted, hole.open) == (1, 1)


# -- HTTPS: the pinned address, verified against the name, within the deadline ---------------


@pytest.fixture()
def trusting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TlsReceiver]]:
    """TLS receivers whose test CA the deliverer's TLS context trusts (instead of the system's
    CA store, which knows no certificate for localhost)."""
    made: list[TlsReceiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def _trust(monkeypatch: pytest.MonkeyPatch, receiver: TlsReceiver) -> None:
    monkeypatch.setattr(callbacks, "_tls_context", Lazy(receiver.client_context))


def test_https_is_verified_against_the_name_and_sent_to_the_checked_address(
    trusting: list[TlsReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = TlsReceiver()
    trusting.append(tls)
    _trust(monkeypatch, tls)
    answer = callbacks.post(tls.url, b'{"a":1}', {"X-Test": "1"}, allow_loopback=True,
                            timeout_s=10, max_read=1024)
    assert answer.status == 204
    [(headers, body)] = tls.received
    assert body == b'{"a":1}' and headers["host"] == f"localhost:{tls.port}"
    # Verification is against the URL's host: the same server named 127.0.0.1 does not hold
    # a certificate for that name, and a server whose CA is not trusted is refused too.
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        callbacks.post(f"https://127.0.0.1:{tls.port}/hooks/jobs", b"{}", {},
                       allow_loopback=True, timeout_s=10, max_read=1024)
    other = TlsReceiver()
    trusting.append(other)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"certificate verify failed"):
        callbacks.post(other.url, b"{}", {}, allow_loopback=True, timeout_s=10, max_read=1024)
    assert len(tls.received) == 1 and other.received == []


def test_a_tls_handshake_that_never_answers_ends_at_the_deadline(
    trusting: list[TlsReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = TlsReceiver(stall_handshake=True)
    trusting.append(stalled)
    _trust(monkeypatch, stalled)
    with pytest.raises(callbacks.DeadlineExceeded):
        callbacks.post(stalled.url, b"{}", {}, allow_loopback=True, timeout_s=1.0,
                       max_read=1024)
    assert stalled.hole.accepted == 1
    wait_until(lambda: stalled.hole.open == 0, timeout=30, what="the connection to be closed")


# -- many due deliveries of one owner; the pass's budget -------------------------------------


class _Counting(BaseHTTPRequestHandler):
    """A receiver that notes, when a delivery arrives, how many connections the black hole (the
    other owner's receiver) had accepted by then, and answers 204 after `delay_s`."""

    hole: BlackHole
    delay_s = 0.0
    seen: list[int]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.hole.accepted)
        threading.Event().wait(self.delay_s)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def counting_receiver(hole: BlackHole, delay_s: float = 0.0) -> Iterator[tuple[str, list[int]]]:
    seen: list[int] = []
    handler = type("Handler", (_Counting,), {"hole": hole, "delay_s": delay_s, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    finally:
        server.shutdown()
        server.server_close()


def ended(store: JobStore, owner: str, url: str) -> str:
    job, _ = store.create(owner, NewJob(preset="echo", content="x", callback_url=url))
    store.cancel(owner, job.id)
    return str(job.id)


def test_many_due_deliveries_of_one_owner_do_not_hold_back_another(
    api: SubmitHarness, engine: Engine, hole: BlackHole
) -> None:
    """Mallory has 40 deliveries due, older than Alice's one, to a receiver that never answers.
    Alice's goes out in the sweep's first round: by the time it arrives, at most Mallory's share
    (PER_OWNER) of attempts had reached the black hole. (Before: the oldest rows went first
    across owners and the step waited for each whole batch, so Alice's came after ~70 of
    Mallory's attempts.)"""
    rotate(api, "alice")
    rotate(api, "mallory")
    settings = instance_settings(webhook_timeout_s=1.0)
    store = JobStore(engine, settings)
    for i in range(40):
        ended(store, "hs256:mallory", f"http://127.0.0.1:{hole.port}/h{i}")
    with counting_receiver(hole) as (url, seen):
        alice_job = ended(store, "hs256:alice", url)
        report = webhook_step.deliver(WebhookDeliverer(store, settings), Budget(8), 100)
        [row] = store.deliveries(alice_job)
    assert (row["state"], row["attempts"]) == ("delivered", 1), (row, report)
    assert seen and seen[0] <= PER_OWNER, (seen, report)
    # Nothing was taken only to be given back: every attempt reached a receiver.
    assert report["outcomes"].get("released", 0) == 0, report
    assert report["attempted"] == hole.accepted + 1, (report, hole.accepted)


def test_an_attempt_that_does_not_fit_in_the_pass_is_given_back_not_cut(
    api: SubmitHarness, engine: Engine, hole: BlackHole
) -> None:
    """Alice's receiver answers in 1.2 s, well within WEBHOOK_TIMEOUT_S (2 s), but the pass has
    1 s left: the attempt is not started and spends nothing. (Before: it was started with its
    deadline cut to the pass's 1 s and recorded as a failed attempt, DeadlineExceeded.)"""
    rotate(api, "alice")
    settings = instance_settings(webhook_timeout_s=2.0)
    store = JobStore(engine, settings)
    with counting_receiver(hole, delay_s=1.2) as (url, seen):
        alice_job = ended(store, "hs256:alice", url)
        report = webhook_step.deliver(WebhookDeliverer(store, settings), Budget(1.0), 100)
        [row] = store.deliveries(alice_job)
        assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 0, None), (
            row, report)
        assert seen == [] and report["more"] is True, (seen, report)
        # The next pass, with time for a whole attempt, delivers it on its first attempt.
        again = webhook_step.deliver(WebhookDeliverer(store, settings), Budget(10), 100)
        [row] = store.deliveries(alice_job)
    assert (row["state"], row["attempts"], len(seen)) == ("delivered", 1, 1), (row, again)


def test_a_time_out_at_the_deadline_is_always_a_deadline_overrun(hole: BlackHole) -> None:
    """A receiver that never answers: the socket's per-read time-out (set to the time that
    remained) and the watchdog fire at the same moment, and whichever wins, the attempt ends
    as DeadlineExceeded. (Before: about one in six ended as a plain TimeoutError, recorded
    as `TimeoutError: no answer`.)"""
    ends: list[str] = []
    for _ in range(40):
        try:
            callbacks.post(f"http://127.0.0.1:{hole.port}/hook", b"{}", {}, allow_loopback=True,
                           timeout_s=0.2, max_read=1024)
        except Exception as exc:
            ends.append(type(exc).__name__)
    assert ends == ["DeadlineExceeded"] * 40, ends
