"""Dispatch without losing a job: a publish that fails after the commit still answers 202 and
leaves the job for sweep; a database that is down answers 503 with Retry-After."""

from __future__ import annotations

import json

import pytest

from common.store.job_store import JobStore
from localstack.postgres import free_port
from tests.submit_fixtures import SubmitHarness, reset_instance_state

JOB = {"preset": "echo", "content": "hello"}


def test_publish_failure_still_accepts_and_leaves_job_undispatched(
    api: SubmitHarness, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("PUBLISH_TIMEOUT_S", "1")
    reset_instance_state()
    resp = api.post_job("alice", JOB)
    assert resp.status_code == 202
    job_id = resp.get_json()["id"]
    pending = store.take_due_for_dispatch(10)
    assert [str(item.id) for item in pending] == [job_id]  # sweep will publish it


def test_database_down_answers_503_with_retry_after(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "1")
    reset_instance_state()
    for resp in (
        api.post_job("alice", JOB),
        api.client.get("/jobs", headers=api.auth("alice")),
        api.client.get("/healthz"),
    ):
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "5"
    body = json.loads(api.post_job("alice", JOB).data)
    assert body["type"].endswith("/unavailable") and "Traceback" not in json.dumps(body)
