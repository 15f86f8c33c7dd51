"""`sweep` as an HTTP function: only the scheduler's identity runs a pass; everyone else gets
401 or 403 and nothing runs. Through functions-framework's test client and a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from common.api.auth import issue_dev_token
from common.settings import load_settings
from common.store.job_store import JobStore
from localstack.function_server import FunctionServer
from localstack.postgres import PostgresServer
from tests.jobs_helpers import new_job
from tests.submit_fixtures import SECRET, SubmitHarness, reset_instance_state
from tests.support.paths import ROOT

SWEEP_URL = "https://sweep.example.test"
SCHEDULER = "scheduler@test-project.iam.gserviceaccount.com"


@pytest.fixture()
def sweep_env(
    submit_env: SubmitHarness, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> SubmitHarness:
    from google.cloud import pubsub_v1

    tag = submit_env.topic.rsplit("/", 1)[1]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for topic in (f"{tag}-dead", f"{tag}-results"):
        publisher.create_topic(request={"name": publisher.topic_path(emulator.project, topic)})
    subscriber.create_subscription(request={
        "name": subscriber.subscription_path(emulator.project, f"{tag}-dead-letters"),
        "topic": publisher.topic_path(emulator.project, f"{tag}-dead"),
    })
    subscriber.close()
    extra = {
        "DEAD_LETTER_SUBSCRIPTION": f"{tag}-dead-letters",
        "RESULTS_TOPIC": f"{tag}-results",
        "SWEEP_AUDIENCE": SWEEP_URL,
        "SWEEP_ALLOWED_INVOKERS": json.dumps([SCHEDULER, "local-scheduler"]),
        "SWEEP_ALLOW_DEV_TOKENS": "false",
    }
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    submit_env.env.update(extra)
    reset_instance_state()
    return submit_env


@pytest.fixture()
def client(sweep_env: SubmitHarness) -> Any:
    from functions_framework import create_app

    return create_app("sweep", str(ROOT / "main.py")).test_client()


@pytest.fixture()
def waiting_job(sweep_env: SubmitHarness, store: JobStore) -> Iterator[str]:
    """A job never published: any pass that runs would publish it."""
    job, _ = store.create("alice", new_job())
    yield str(job.id)


def _published(harness: SubmitHarness) -> list[str]:
    return [m["data"]["job_id"] for m in harness.pull()]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_scheduler_runs_a_pass(client: Any, sweep_env: SubmitHarness, waiting_job: str) -> None:
    token = sweep_env.google.token(sub="1234", aud=SWEEP_URL, email=SCHEDULER)
    resp = client.post("/", headers=_bearer(token))
    assert resp.status_code == 200, resp.get_json()
    summary = resp.get_json()
    assert summary["ok"] is True and summary["steps"]["redispatch"]["published"] == 1
    assert set(summary["steps"]) == {"rescue", "dead_letters", "schedules", "redispatch",
                                     "parked", "retention", "webhooks"}
    assert _published(sweep_env) == [waiting_job]


def _refusals(harness: SubmitHarness) -> list[tuple[str, dict[str, str], int]]:
    g = harness.google
    other_key = __import__(
        "cryptography.hazmat.primitives.asymmetric.rsa", fromlist=["rsa"]
    ).generate_private_key(public_exponent=65537, key_size=2048)
    return [
        ("no token", {}, 401),
        ("not a bearer", {"Authorization": "Basic abc"}, 401),
        ("garbage", _bearer("not.a.token"), 401),
        ("expired", _bearer(g.token(sub="1", aud=SWEEP_URL, email=SCHEDULER, ttl_s=-60)), 401),
        ("wrong audience", _bearer(g.token(sub="1", aud="https://other", email=SCHEDULER)), 401),
        ("wrong signature", _bearer(g.token(sub="1", aud=SWEEP_URL, email=SCHEDULER,
                                            key=other_key)), 401),
        ("submit's audience", _bearer(g.token(sub="1", aud="https://submit.example.test",
                                              email=SCHEDULER)), 401),
        ("dev token (not allowed here)", _bearer(issue_dev_token(SECRET, "local-scheduler")), 401),
        ("another service account", _bearer(g.token(sub="2", aud=SWEEP_URL,
                                                    email="intruder@x.iam.gserviceaccount.com")),
         403),
        ("unverified email", _bearer(g.token(sub="1", aud=SWEEP_URL, email=SCHEDULER,
                                             email_verified=False)), 403),
        ("no email", _bearer(g.token(sub=SCHEDULER, aud=SWEEP_URL)), 403),
    ]


def test_everyone_else_is_refused_and_nothing_runs(
    client: Any, sweep_env: SubmitHarness, waiting_job: str
) -> None:
    for name, headers, status in _refusals(sweep_env):
        resp = client.post("/", headers=headers)
        assert resp.status_code == status, name
        assert resp.content_type == "application/problem+json", name
        assert "steps" not in resp.get_json(), name
    assert _published(sweep_env) == []


def test_dev_tokens_only_where_allowed(
    sweep_env: SubmitHarness, monkeypatch: pytest.MonkeyPatch, waiting_job: str
) -> None:
    from functions_framework import create_app

    monkeypatch.setenv("SWEEP_ALLOW_DEV_TOKENS", "true")
    reset_instance_state()
    client = create_app("sweep", str(ROOT / "main.py")).test_client()
    resp = client.post("/", headers=_bearer(issue_dev_token(SECRET, "alice")))
    assert resp.status_code == 403  # a valid token, but not a listed invoker
    resp = client.post("/", headers=_bearer(issue_dev_token(SECRET, "local-scheduler")))
    assert resp.status_code == 200
    assert _published(sweep_env) == [waiting_job]


def test_the_body_chooses_steps_within_bounds(
    client: Any, sweep_env: SubmitHarness, waiting_job: str
) -> None:
    token = _bearer(sweep_env.google.token(sub="1", aud=SWEEP_URL, email=SCHEDULER))
    bad = [
        b"{not json",
        json.dumps({"steps": ["truncate"]}).encode(),
        json.dumps({"batch_size": 0}).encode(),
        json.dumps({"time_budget_s": -1}).encode(),
        json.dumps({"surprise": 1}).encode(),
        json.dumps([1, 2]).encode(),
    ]
    for body in bad:
        resp = client.post("/", data=body, headers=token, content_type="application/json")
        assert resp.status_code in (400, 422), body
        assert resp.get_json()["type"].startswith("https://jobs-pipeline.dev/problems/")
    assert client.post("/", data=b"x" * 5000, headers=token).status_code == 413
    assert client.get("/", headers=token).status_code == 405
    assert _published(sweep_env) == []
    resp = client.post("/", data=json.dumps({"steps": ["rescue", "retention"]}), headers=token,
                       content_type="application/json")
    assert resp.status_code == 200 and set(resp.get_json()["steps"]) == {"rescue", "retention"}
    assert _published(sweep_env) == []


def test_a_failed_step_answers_503_with_the_summary(
    sweep_env: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions_framework import create_app

    monkeypatch.setenv("DEAD_LETTER_SUBSCRIPTION", "no-such-subscription")
    reset_instance_state()
    client = create_app("sweep", str(ROOT / "main.py")).test_client()
    token = _bearer(sweep_env.google.token(sub="1", aud=SWEEP_URL, email=SCHEDULER))
    resp = client.post("/", headers=token)
    assert resp.status_code == 503
    problem = resp.get_json()
    assert problem["summary"]["steps"]["dead_letters"] == {"error": "NotFound"}
    assert problem["summary"]["steps"]["rescue"]["rescued"] == 0  # the other steps still ran


def test_through_a_real_server(sweep_env: SubmitHarness, waiting_job: str) -> None:
    server = FunctionServer("sweep", ROOT / "main.py", sweep_env.env)
    try:
        token = sweep_env.google.token(sub="1", aud=SWEEP_URL, email=SCHEDULER)
        req = urllib.request.Request(server.url, method="POST", data=b"", headers=_bearer(token))
        with urllib.request.urlopen(req, timeout=30) as resp:
            summary = json.loads(resp.read())
        assert summary["steps"]["redispatch"]["published"] == 1
        refused = urllib.request.Request(server.url, method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(refused, timeout=30)
        assert err.value.code == 401
        assert '"sweep pass"' in server.log_text()
    finally:
        server.close()
    assert _published(sweep_env) == [waiting_job]
    assert load_settings().sweep_audience == SWEEP_URL


def test_before_the_migrations_a_pass_answers_200_skipped(
    sweep_env: SubmitHarness, pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions_framework import create_app

    name = pg_server.create_database("jobs_not_migrated")
    try:
        monkeypatch.setenv("DATABASE_URL", pg_server.url(name))
        reset_instance_state()
        client = create_app("sweep", str(ROOT / "main.py")).test_client()
        token = _bearer(sweep_env.google.token(sub="1", aud=SWEEP_URL, email=SCHEDULER))
        capsys.readouterr()
        for _ in range(3):  # every scheduled call until the migrations run: the same answer
            resp = client.post("/", headers=token)
            assert resp.status_code == 200
            assert resp.get_json() == {"ok": True, "skipped": "schema-missing"}
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        warnings = [line for line in lines if line["severity"] != "INFO"]
        assert [w["severity"] for w in warnings] == ["WARNING"] * 3  # one line per call
    finally:
        reset_instance_state()
        pg_server.drop_database(name)


def test_an_overlapping_call_answers_200_and_runs_nothing(
    client: Any, sweep_env: SubmitHarness, store: JobStore, waiting_job: str
) -> None:
    token = _bearer(sweep_env.google.token(sub="1", aud=SWEEP_URL, email=SCHEDULER))
    running = store.sweep_lock()
    assert running.acquire() == "held"  # a pass that is still going
    try:
        resp = client.post("/", headers=token)
        assert resp.status_code == 200
        assert resp.get_json() == {"ok": True, "skipped": "another-pass-running"}
        assert _published(sweep_env) == []
    finally:
        running.release()
    resp = client.post("/", headers=token)
    assert resp.status_code == 200 and resp.get_json()["steps"]["redispatch"]["published"] == 1
