"""Malformed Pub/Sub pushes at `process` (functions-framework's test client, real PostgreSQL):
each is acknowledged (200, recorded as poison or skipped) with exactly one log line of ours,
never a 4xx that Pub/Sub would deliver again, never a 5xx, and no effect on any other job."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from common.store.job_store import JobStore
from common.store.states import JobState
from common.worker.push_request import MAX_PUSH_BYTES
from tests.jobs_helpers import job_in_state, snapshot
from tests.submit_fixtures import SubmitHarness, reset_instance_state
from tests.support.paths import ROOT

EXAMPLES = 400
OUR_MESSAGES = {"poison message acknowledged", "message skipped", "job attempt finished"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2),
)
bad_data = st.one_of(
    st.text(max_size=60),                                           # not base64 at all
    st.binary(max_size=80).map(b64),                                # base64 of random bytes
    junk.map(lambda v: b64(json.dumps(v).encode())),                # JSON, not a job message
    st.fixed_dictionaries({"v": junk, "job_id": junk, "attempts": junk})
    .map(lambda v: b64(json.dumps(v).encode())),                    # wrong types
    st.fixed_dictionaries({"v": st.just(1), "job_id": st.uuids().map(str),
                           "attempts": st.integers(-5, 20_000)})
    .map(lambda v: b64(json.dumps(v).encode())),                    # unknown job or bad range
    st.just(b64(b"{" * 5000)),                                      # deep nesting
    st.just(b64(b"x" * 40_000)),                                    # large, under the cap
    st.just(b64(b"x" * 300_000)),                                   # over the cap
    junk,                                                           # data not even a string
)
# Pub/Sub's own fields are well formed (it writes them); what a publisher controls -- the data
# and the attributes -- is anything at all.
message = st.fixed_dictionaries(
    {
        "messageId": st.integers(1, 10**12).map(str),
        "publishTime": st.just("2026-11-23T12:00:00.000Z"),
        "data": bad_data,
    },
    optional={
        "attributes": st.dictionaries(st.text(max_size=10), st.text(max_size=20_000),
                                      max_size=3),
    },
)
# Mostly Pub/Sub's own shape; bodies that are not even JSON objects are below
# (test_bodies_that_are_no_push_at_all_are_poison).
push_envelope = st.fixed_dictionaries(
    {"message": message, "subscription": st.just("projects/test-project/subscriptions/push")}
)
envelope = st.one_of(
    push_envelope, push_envelope, push_envelope, push_envelope,  # most: Pub/Sub's own shape
    st.fixed_dictionaries({"message": junk}),
    st.dictionaries(st.text(max_size=8), junk, max_size=3),
)


@pytest.fixture()
def process_client(submit_env: SubmitHarness, monkeypatch: pytest.MonkeyPatch) -> Any:
    from functions_framework import create_app

    monkeypatch.setenv("RESULTS_TOPIC", "")
    reset_instance_state()
    return create_app("process", str(ROOT / "main.py")).test_client()


def test_malformed_pushes_are_acknowledged_with_one_line(
    process_client: Any, store: JobStore, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    bystanders = [job_in_state(store, s) for s in (JobState.PENDING, JobState.COMPLETED,
                                                    JobState.PROCESSING)]
    before = [snapshot(engine, j) for j in bystanders]
    statuses: dict[int, int] = {}
    capsys.readouterr()

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=envelope)
    def push(body: Any) -> None:
        raw = json.dumps(body).encode()
        resp = process_client.post("/", data=raw, content_type="application/json")
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        assert resp.status_code == 200, (resp.status_code, body)
        assert len(_our_lines(capsys)) == 1, body

    push()
    assert statuses == {200: EXAMPLES}, statuses
    assert [snapshot(engine, j) for j in bystanders] == before
    with engine.connect() as conn:
        poison = conn.execute(text("SELECT count(*), max(length(excerpt)) FROM poison_messages"))
        count, longest = poison.one()
    assert count >= 50 and longest <= 200


def _our_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    return [m for m in lines if m in OUR_MESSAGES]


@pytest.mark.parametrize("content_type", ["application/json", "application/cloudevents+json"])
def test_bodies_that_are_no_push_at_all_are_poison(
    process_client: Any, store: JobStore, engine: Engine, capsys: pytest.CaptureFixture[str],
    content_type: str,
) -> None:
    """JSON scalars and lists, text that is not JSON, an empty body, a body over the size cap:
    each is acknowledged and recorded as poison (functions-framework's CloudEvent path, before
    `process` read the body itself, answered 400 or 500 to these, and Pub/Sub would have
    delivered them again and again)."""
    bystander = job_in_state(store, JobState.PENDING)
    before = snapshot(engine, bystander)
    capsys.readouterr()
    bodies = (b"0", b'"text"', b"[1, 2]", b"null", b"not json", b"", b"\xff\xfe\x00",
              b'{"message": ' + b" " * MAX_PUSH_BYTES + b"{}}", b"[" * 5000)
    for body in bodies:
        resp = process_client.post("/", data=body, content_type=content_type)
        assert resp.status_code == 200, body[:40]
        assert _our_lines(capsys) == ["poison message acknowledged"], body[:40]
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT count(*) FROM poison_messages")).scalar_one()
    assert recorded == len(bodies)
    assert snapshot(engine, bystander) == before


def test_only_a_post_is_a_push(
    process_client: Any, store: JobStore, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """A health probe or a stray visitor is no message: 405, nothing recorded, nothing logged."""
    capsys.readouterr()
    for method in ("GET", "PUT", "DELETE"):
        resp = process_client.open("/", method=method, data=b"{}")
        assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert _our_lines(capsys) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM poison_messages")).scalar_one() == 0
