"""Malformed Pub/Sub pushes at `process` (functions-framework's test client, real PostgreSQL):
each is acknowledged (200, recorded as poison or skipped) or refused by functions-framework
before our code runs (400), with exactly one log line of ours, never a 5xx, and no effect on any
other job."""

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
    st.just(b64(b"x" * 300_000)),                                   # large
    junk,                                                           # data not even a string
)
# Pub/Sub's own fields are well formed (it writes them); what a publisher controls -- the data
# and the attributes -- is anything at all.
message = st.fixed_dictionaries(
    {
        "messageId": st.integers(1, 10**12).map(str),
        "publishTime": st.just("2026-11-23T12:00:00.000Z"),
        "data": bad_data,  # functions-framework refuses (400) a message without it
    },
    optional={
        "attributes": st.dictionaries(st.text(max_size=10), st.text(max_size=20_000),
                                      max_size=3),
    },
)
# Top-level JSON objects only: Pub/Sub always sends one. (A body that is JSON but not an
# object makes functions-framework 3.10.2 itself fail with 500 in its legacy-event conversion,
# before any function code runs; see test_non_object_bodies_never_reach_our_code.)
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


def test_malformed_pushes_are_acknowledged_or_refused_with_one_line(
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
        assert resp.status_code in (200, 400), (resp.status_code, body)
        ours = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()
                if line.startswith("{")]
        ours = [m for m in ours if m in OUR_MESSAGES]
        if resp.status_code == 200:
            assert len(ours) == 1, (ours, body)
        else:  # functions-framework refused the envelope itself; our code never ran
            assert ours == []

    push()
    assert statuses.get(200, 0) >= 200, statuses  # at least 200 reached our code
    assert [snapshot(engine, j) for j in bystanders] == before
    with engine.connect() as conn:
        poison = conn.execute(text("SELECT count(*), max(length(excerpt)) FROM poison_messages"))
        count, longest = poison.one()
    assert count >= 50 and longest <= 200


def test_non_object_bodies_never_reach_our_code(
    process_client: Any, store: JobStore, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """functions-framework answers these itself (a 500 from its own conversion code for JSON
    scalars and lists): nothing of ours runs, nothing changes, and Pub/Sub never sends them."""
    bystander = job_in_state(store, JobState.PENDING)
    before = snapshot(engine, bystander)
    capsys.readouterr()
    for body in (b"0", b'"text"', b"[1, 2]", b"null", b"not json", b""):
        resp = process_client.post("/", data=body, content_type="application/json")
        assert resp.status_code in (400, 500), body
        assert not [line for line in capsys.readouterr().out.splitlines()
                    if any(m in line for m in OUR_MESSAGES)]
    assert snapshot(engine, bystander) == before
