"""Edge inputs that broke the promise (issue #12, part 2), each on the real stack: submit through
functions-framework's test client, process as a real server fed by the emulator, PostgreSQL.

1. a bookkeeping failure after the commit never turns an accepted job into an error answer;
2. whatever a handler returns or raises, its attempt ends recorded, never stuck PROCESSING;
3. lone surrogates anywhere in a request are a 422 naming the field (401 in a token), and
   `log()` never raises;
4. attempt numbers have one bound that the API, the decoder and the backoff agree on;
5. an idempotent replay shows the job exactly as GET does, result included.
(Owner namespaces, item 6, are in test_owner_isolation.py and test_security_matrix.py.)
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import Engine, text

import functions.submit
from common.logs import MAX_TEXT, log
from common.maintenance.sweep import Sweeper, SweepRequest
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.service import JobService
from common.settings import get_settings
from common.store.errors import DatabaseUnavailable
from common.store.fragments import MAX_TOTAL_ATTEMPTS
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.conftest import table_counts
from tests.process_fixtures import Pipeline
from tests.submit_fixtures import SECRET, SubmitHarness
from tests.support.edge_presets import CASES

JOB = {"preset": "echo", "content": "top-secret-content", "metadata": {"ref": 7}}
ALICE = "hs256:alice"  # the owner an HS256 token for "alice" names


def _problem(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/problem+json", resp.data
    body: dict[str, Any] = json.loads(resp.data)
    assert body["status"] == resp.status_code
    return body


def _log_lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capfd.readouterr().out.splitlines()
            if line.startswith("{")]


# -- 1. committed means accepted ----------------------------------------------------------------


class _MarkFails:
    """The real store, except that recording a publish finds the database gone: the moment
    between the commit (and the publish) and the bookkeeping that the reviewer cut."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.marks = 0

    def mark_dispatched(self, *args: Any, **kwargs: Any) -> Any:
        self.marks += 1
        raise DatabaseUnavailable("cut between the publish and the mark")

    def release_dispatch(self, *args: Any, **kwargs: Any) -> Any:
        self.marks += 1
        raise DatabaseUnavailable("cut between the failed publish and the release")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture()
def mark_fails(api: SubmitHarness) -> Iterator[_MarkFails]:
    service = functions.submit.get_api().service
    wrapper = _MarkFails(service.store)
    service.store = wrapper  # type: ignore[assignment]
    yield wrapper


def _sweep_redispatch() -> dict[str, Any]:
    settings = get_settings()
    service = JobService(JobStore(functions.submit.get_api().service.store._engine, settings),
                         Dispatcher(settings))
    summary = Sweeper(service, Notifier(settings), settings).run(
        SweepRequest(steps=["redispatch"]))
    return summary


def test_submit_is_202_when_the_publish_and_the_release_after_it_fail(
    api: SubmitHarness, mark_fails: _MarkFails, engine: Engine,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new job is stamped dispatched as it is committed; a failed publish releases the stamp.
    When that release cannot be written either, the job is still accepted and not lost: the
    sweep publishes it once the stamp is older than REDISPATCH_AFTER_S."""
    dispatcher = functions.submit.get_api().service.dispatcher
    publish = dispatcher.publish
    monkeypatch.setattr(dispatcher, "publish", lambda items: [])
    token = api.token("alice")
    resp = api.client.post("/jobs", data=json.dumps(JOB), content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 202, resp.data
    job_id = resp.get_json()["id"]
    assert mark_fails.marks == 1 and table_counts(engine)[0] == 1
    assert api.pull() == []
    lines = _log_lines(capfd)
    assert any(line.get("job_id") == job_id and line["severity"] == "WARNING" for line in lines)
    assert token not in json.dumps(lines) and "top-secret-content" not in json.dumps(lines)
    monkeypatch.setattr(dispatcher, "publish", publish)
    assert _sweep_redispatch()["steps"]["redispatch"]["published"] == 0  # stamped, and fresh
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET dispatched_at = dispatched_at - "
                          "make_interval(secs => :s) WHERE id = :id"),
                     {"s": get_settings().redispatch_after_s + 1, "id": job_id})
    assert _sweep_redispatch()["steps"]["redispatch"]["published"] == 1
    assert [(m["data"]["job_id"], m["data"]["attempts"]) for m in api.pull()] == [(job_id, 0)]
    assert _sweep_redispatch()["steps"]["redispatch"]["published"] == 0  # now it is marked


def test_retry_is_202_when_the_mark_after_the_publish_fails(
    api: SubmitHarness, mark_fails: _MarkFails, store: JobStore
) -> None:
    job_id = api.post_job("alice", JOB).get_json()["id"]
    claimed = store.claim(job_id).job
    assert claimed is not None
    store.fail(claimed.id, claimed.attempts, "Broken", "no")
    api.pull()
    resp = api.client.post(f"/jobs/{job_id}/retry", headers=api.auth("alice"))
    assert resp.status_code == 202 and resp.get_json()["state"] == "PENDING"
    assert mark_fails.marks == 1  # the retry's (a new job is stamped as it is committed)
    assert [m["data"]["attempts"] for m in api.pull()] == [1]
    assert _sweep_redispatch()["steps"]["redispatch"]["published"] == 1


# -- 2. whatever a handler does, its attempt ends recorded ----------------------------------------


@pytest.fixture()
def edge_pipeline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The pipeline with tests/support/edge_presets.py as a user's PRESET_MODULES entry, for
    submit (in this process) and for the process server (its environment inherits ours)."""
    monkeypatch.setenv("PRESET_MODULES", json.dumps(["tests.support.edge_presets"]))
    pipeline: Pipeline = request.getfixturevalue("pipeline")
    return pipeline


def test_unstorable_output_and_errors_end_the_attempt_recorded(edge_pipeline: Pipeline) -> None:
    p = edge_pipeline
    ids = {name: p.submit(name, "the content") for name, _, _ in CASES}
    for name, _, (error_type, fragment) in CASES:
        job = p.wait(ids[name], JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED,
                     timeout=30)
        assert job.state is JobState.FAILED and job.attempts == 1, name
        assert job.result is not None and job.result.error_type == error_type, (name, job.result)
        assert fragment in (job.result.error_message or ""), (name, job.result.error_message)
        assert len(job.result.error_message or "") <= 2000
        reasons = [e.reason for e in p.store.events(ALICE, ids[name])]
        assert reasons[:2] == ["created", "claimed"] and len(reasons) == 3, (name, reasons)
        assert "rescued" not in reasons  # ended by its own attempt, not by a lease expiring
    log = p.process.log_text()
    assert "the content" not in log and " 500 " not in log and "Traceback" not in log


# -- 3. lone surrogates in a request; log() never raises -----------------------------------------

LONE = "\ud800"


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"content": "a" + LONE}, {}, "content"),
        ({"metadata": {"k" + LONE: 1}}, {}, "metadata"),
        ({"metadata": {"k": ["ok", "v" + LONE]}}, {}, "metadata"),
        ({"idempotency_key": "key" + LONE}, {}, "idempotency_key"),
        ({}, {"Idempotency-Key": "key" + LONE}, "idempotency_key"),
    ],
    ids=["content", "metadata-key", "metadata-value", "key-in-body", "key-in-header"],
)
def test_a_lone_surrogate_is_a_422_naming_the_field(
    api: SubmitHarness, engine: Engine, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    resp = api.post_job("alice", {"preset": "echo", "content": "x", **body}, **headers)
    assert resp.status_code == 422, resp.data
    problem = _problem(resp)
    assert [p["name"] for p in problem["invalid_params"]] == [field]
    reason = problem["invalid_params"][0]["reason"].lower()
    assert "surrogate" in reason or "unicode" in reason  # ours, or pydantic's for the key
    assert table_counts(engine) == (0, 0, 0) and api.pull() == []


def test_a_lone_surrogate_in_a_token_subject_is_a_401(
    api: SubmitHarness, engine: Engine
) -> None:
    now = int(time.time())
    for sub in ("al" + LONE + "ice", "a\x00b", "tab\there"):
        token = jwt.encode({"sub": sub, "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
        resp = api.client.post("/jobs", data=json.dumps(JOB), content_type="application/json",
                               headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401, (sub, resp.data)
        assert _problem(resp)["detail"] == "invalid token: bad subject"
    assert table_counts(engine)[0] == 0


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_log_never_raises_and_writes_valid_bounded_json(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    odd_fields: dict[str, Any] = {
        "surrogate": "a" + LONE,
        "nul": "a\x00b",
        "unprintable": _Unprintable(),
        "huge": "x" * 1_000_000,
        "huge_int": 10**5000,
        "nan": float("nan"),
        "cycle": cycle,
        "many": list(range(10_000)),
        "nested": {"k" + LONE: [_Unprintable(), {1, 2}, b"\xff"]},
    }
    log("INFO", "odd " + LONE, **odd_fields)
    log(_Unprintable(), _Unprintable())  # type: ignore[arg-type]
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert entry["message"] == "odd \ufffd" and entry["surrogate"] == "a\ufffd"
    assert entry["unprintable"].startswith("<unprintable _Unprintable")
    assert MAX_TEXT < len(entry["huge"]) < MAX_TEXT + 100 and len(lines[0]) < 100_000
    assert entry["nan"] == "nan" and entry["huge_int"].startswith("<int of")
    lines[0].encode("utf-8")  # strict: no surrogate left anywhere
    assert json.loads(lines[1])["message"].startswith("<unprintable")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    log("ERROR", "nowhere to go", surrogate=LONE)
    monkeypatch.setattr(sys, "stdout", None)
    log("ERROR", "no stdout at all")


# -- 4. one bound on attempts -----------------------------------------------------------------


def test_a_retry_past_the_attempt_bound_is_a_clear_409(
    api: SubmitHarness, store: JobStore, engine: Engine
) -> None:
    job_id = api.post_job("alice", {**JOB, "max_attempts": 5}).get_json()["id"]
    claimed = store.claim(job_id).job
    assert claimed is not None
    store.fail(claimed.id, claimed.attempts, "Broken", "no")
    with engine.connect() as conn:  # as if retried for years: 2 short of the bound
        conn.execute(text("UPDATE jobs SET attempts = :n, attempt_limit = :n WHERE id = :id"),
                     {"n": MAX_TOTAL_ATTEMPTS - 2, "id": job_id})
        conn.commit()
    resp = api.client.post(f"/jobs/{job_id}/retry", headers=api.auth("alice"))
    assert resp.status_code == 202  # two attempts left of the bound, not five
    assert store.get(ALICE, job_id).attempt_limit == MAX_TOTAL_ATTEMPTS
    for _ in range(2):
        job = store.claim(job_id).job
        assert job is not None
        store.retry_later(job.id, job.attempts, "Flaky", "again", delay=timedelta(0))
    assert store.get(ALICE, job_id).state is JobState.FAILED
    before = store.get(ALICE, job_id)
    refused = api.client.post(f"/jobs/{job_id}/retry", headers=api.auth("alice"))
    assert refused.status_code == 409
    problem = _problem(refused)
    assert problem["type"].endswith("/attempt-limit-reached")
    assert str(MAX_TOTAL_ATTEMPTS) in problem["detail"]
    assert problem["attempts"] == MAX_TOTAL_ATTEMPTS
    assert store.get(ALICE, job_id) == before  # nothing changed


# -- 5. a replay is the job as GET shows it ---------------------------------------------------


def test_an_idempotent_replay_of_a_finished_job_carries_its_result(
    api: SubmitHarness, store: JobStore
) -> None:
    first = api.post_job("alice", JOB, **{"Idempotency-Key": "order-7"})
    job_id = first.get_json()["id"]
    claimed = store.claim(job_id).job
    assert claimed is not None
    store.complete(claimed.id, claimed.attempts, {"echo": "done"})
    replay = api.post_job("alice", JOB, **{"Idempotency-Key": "order-7"})
    shown = api.client.get(f"/jobs/{job_id}", headers=api.auth("alice"))
    assert replay.status_code == 200
    assert replay.get_json() == shown.get_json()
    assert replay.get_json()["result"]["output"] == {"echo": "done"}
