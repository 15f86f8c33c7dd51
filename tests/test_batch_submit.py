"""Batch submit (`POST /jobs:batch`) through functions-framework's test client, against real
PostgreSQL and the Pub/Sub emulator: per-item answers, one transaction, one publish batch,
batch-level refusals that write nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness

JOB = {"preset": "echo", "content": "hello"}


def post_batch(api: SubmitHarness, owner: str, body: Any, **headers: str) -> Any:
    return api.client.post("/jobs:batch", data=json.dumps(body), content_type="application/json",
                           headers={**api.auth(owner), **headers})


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def test_a_batch_creates_each_job_and_publishes_them_all(api: SubmitHarness,
                                                         engine: Engine) -> None:
    jobs = [{**JOB, "content": f"item {i}", "metadata": {"i": i}} for i in range(25)]
    resp = post_batch(api, "alice", {"jobs": jobs})
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["created"], body["replayed"], body["refused"]) == (25, 0, 0)
    assert [r["index"] for r in body["results"]] == list(range(25))
    assert all(r["outcome"] == "created" and r["problem"] is None for r in body["results"])
    ids = [r["job"]["id"] for r in body["results"]]
    assert [r["job"]["metadata"] for r in body["results"]] == [{"i": i} for i in range(25)]
    assert len(set(ids)) == 25
    published = api.pull(100)
    assert sorted(m["data"]["job_id"] for m in published) == sorted(ids)
    # One trace for the batch's request; every message carries it.
    assert len({m["attributes"]["traceparent"] for m in published}) == 1
    # Every job is its own row, owned by the caller, with its own content and stamped
    # dispatched (the publish succeeded, so nothing is left for the sweep).
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT owner_id, content, dispatched_at IS NOT NULL AS stamped FROM jobs "
            "ORDER BY content")).all()
    assert {(r.owner_id, r.stamped) for r in rows} == {("hs256:alice", True)}
    assert sorted(r.content for r in rows) == sorted(f"item {i}" for i in range(25))
    got = api.client.get(f"/jobs/{ids[3]}", headers=api.auth("alice")).get_json()
    assert got["metadata"] == {"i": 3} and got["state"] == "PENDING"


def test_each_item_keeps_its_key_replays_and_conflicts_per_item(api: SubmitHarness) -> None:
    first = post_batch(api, "alice", {"jobs": [{**JOB, "idempotency_key": "k1"},
                                               {**JOB, "idempotency_key": "k2"}]}).get_json()
    api.pull()
    again = post_batch(api, "alice", {"jobs": [
        {**JOB, "idempotency_key": "k1"},  # the same request: replayed
        {**JOB, "content": "different", "idempotency_key": "k2"},  # reused differently: refused
        {**JOB, "idempotency_key": "k3"},  # new: created
        {**JOB},  # no key: created
    ]})
    assert again.status_code == 200
    body = again.get_json()
    assert [r["outcome"] for r in body["results"]] == ["replayed", "refused", "created",
                                                       "created"]
    assert (body["created"], body["replayed"], body["refused"]) == (2, 1, 1)
    assert body["results"][0]["job"]["id"] == first["results"][0]["job"]["id"]
    assert body["results"][1]["problem"]["type"].endswith("/idempotency-conflict")
    assert body["results"][1]["problem"]["status"] == 409
    # Only the two new jobs are published: a replay publishes nothing.
    assert sorted(m["data"]["job_id"] for m in api.pull()) == sorted(
        r["job"]["id"] for r in body["results"][2:])
    # Keys are per owner: bob's k1 is his own new job.
    bob = post_batch(api, "bob", {"jobs": [{**JOB, "idempotency_key": "k1"}]}).get_json()
    assert bob["results"][0]["outcome"] == "created"


def test_an_invalid_item_is_refused_alone_with_the_problem_post_jobs_gives(
    api: SubmitHarness, engine: Engine
) -> None:
    items: list[Any] = [
        JOB,
        {"preset": "nope", "content": "x"},  # unknown preset: the store refuses it
        {**JOB, "max_attempts": 0},  # a field out of range
        {**JOB, "surprise": 1},  # an unknown field
        {"preset": "text-stats", "content": "x", "metadata": {"options": {"top": -1}}},
        {**JOB, "content": "\ud800"},  # a lone surrogate
        {**JOB, "delay_s": 10},  # valid, for later: created, not published now
    ]
    resp = post_batch(api, "alice", {"jobs": items})
    assert resp.status_code == 200
    results = resp.get_json()["results"]
    assert [r["outcome"] for r in results] == ["created", "refused", "refused", "refused",
                                               "refused", "refused", "created"]
    alone = [api.post_job("alice", item) for item in items[1:6]]
    for result, single in zip(results[1:6], alone, strict=True):
        problem = single.get_json()
        assert result["problem"]["status"] == single.status_code == problem["status"]
        assert result["problem"]["type"] == problem["type"]
        assert result["problem"]["invalid_params"] == problem["invalid_params"]
    assert results[1]["problem"]["invalid_params"][0]["name"] == "preset"
    assert results[2]["problem"]["invalid_params"][0]["name"] == "max_attempts"
    assert results[4]["problem"]["invalid_params"][0]["name"] == "metadata.options"
    assert results[5]["problem"]["invalid_params"][0]["name"] == "content"
    assert count_jobs(engine) == 2
    assert [m["data"]["job_id"] for m in api.pull()] == [results[0]["job"]["id"]]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"jobs": []}, 422, "jobs"),
        ({"jobs": [JOB] * 1001}, 422, "jobs"),
        ({"jobs": JOB}, 422, "jobs"),
        ({}, 422, "jobs"),
        ([JOB], 422, "body"),
        ({"jobs": [JOB], "extra": 1}, 422, "body"),
        ({"jobs": [JOB, "not a job"]}, 422, "jobs[1]"),
        ({"jobs": [{**JOB, "idempotency_key": "a"}, {**JOB, "idempotency_key": "b"},
                   {**JOB, "idempotency_key": "a"}]}, 409, "jobs[2].idempotency_key"),
    ],
)
def test_batch_level_faults_refuse_the_whole_batch_and_write_nothing(
    api: SubmitHarness, engine: Engine, body: Any, status: int, field: str
) -> None:
    resp = post_batch(api, "alice", body)
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.get_json()
    assert problem["status"] == status
    assert [p["name"] for p in problem["invalid_params"]] == [field]
    assert count_jobs(engine) == 0
    assert api.pull() == []


def test_the_largest_batch_is_one_statement_and_one_publish(
    api: SubmitHarness, engine: Engine
) -> None:
    """1,000 jobs: all created, all published (Pub/Sub's limit per Publish call is 1,000)."""
    resp = post_batch(api, "alice", {"jobs": [{**JOB, "content": str(i)} for i in range(1000)]})
    assert resp.status_code == 200 and resp.get_json()["created"] == 1000
    assert count_jobs(engine) == 1000
    seen: set[str] = set()
    for _ in range(40):
        seen |= {m["data"]["job_id"] for m in api.pull(1000)}
        if len(seen) == 1000:
            break
    assert len(seen) == 1000


def test_a_batch_whose_publish_fails_is_left_to_the_sweep(
    api: SubmitHarness, store: JobStore, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit stands; the stamps are released, so the sweep's next pass publishes them."""
    import common.messaging.dispatch as dispatch

    monkeypatch.setattr(dispatch, "publish_batch", lambda topic, messages, timeout: [False] *
                        len(messages))
    resp = post_batch(api, "alice", {"jobs": [JOB, JOB, JOB]})
    assert resp.status_code == 200 and resp.get_json()["created"] == 3
    with engine.connect() as conn:
        stamped = conn.execute(text(
            "SELECT count(*) FROM jobs WHERE dispatched_at IS NOT NULL")).scalar_one()
    assert stamped == 0 and count_jobs(engine) == 3
    assert len(store.take_due_for_dispatch(10)) == 3


def test_a_batch_needs_a_token_and_json(api: SubmitHarness) -> None:
    resp = api.client.post("/jobs:batch", data=json.dumps({"jobs": [JOB]}),
                           content_type="application/json")
    assert resp.status_code == 401
    resp = api.client.post("/jobs:batch", data="jobs", content_type="text/plain",
                           headers=api.auth("alice"))
    assert resp.status_code == 415
    resp = post_batch(api, "alice", {"jobs": [JOB]}, **{"Idempotency-Key": "k"})
    assert resp.status_code == 422
    assert resp.get_json()["invalid_params"][0]["name"] == "Idempotency-Key"


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=12,
)
items = st.fixed_dictionaries({}, optional={
    "preset": st.sampled_from(["echo", "nope", ""]) | st.text(max_size=6),
    "content": st.text(max_size=30) | st.integers(),
    "metadata": json_values,
    "idempotency_key": st.text(max_size=4) | st.none(),
    "delay_s": st.integers(min_value=-2, max_value=5) | st.none(),
}) | json_values
bodies = st.fixed_dictionaries({}, optional={"jobs": st.lists(items, max_size=5) | json_values,
                                             "extra": json_values}) | json_values


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies)
def test_any_json_body_gets_an_answer_never_a_5xx_and_a_refusal_writes_nothing(
    api: SubmitHarness, engine: Engine, body: Any
) -> None:
    before = count_jobs(engine)
    resp = post_batch(api, "fuzz", body)
    assert resp.status_code < 500, resp.data
    if resp.status_code != 200:
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert resp.get_json()["invalid_params"][0]["name"]
        assert count_jobs(engine) == before
        return
    answer = resp.get_json()
    assert count_jobs(engine) == before + answer["created"]
    assert len(answer["results"]) == len(body["jobs"])
    for cancel_or_retry in ("cancel", "retry"):
        bulk = api.client.post(f"/jobs:bulk-{cancel_or_retry}", data=json.dumps(body),
                               content_type="application/json", headers=api.auth("fuzz"))
        assert bulk.status_code < 500, bulk.data


def test_a_batch_counts_against_the_submit_rate_as_one_request_of_n_jobs(
    api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 submits a second: a batch of 10 is admitted (the bucket held a token) and leaves
    the bucket 7 in debt, so the next submit, single or batch, waits for the debt to be repaid
    (Retry-After 3 s); the clock is frozen and moved by hand: counts, not timing."""
    import functions.submit

    monkeypatch.setenv("OWNER_MAX_SUBMITS_PER_S", "3")
    now = [1000.0]
    functions.submit.get_api().submits._clock = lambda: now[0]
    assert post_batch(api, "alice", {"jobs": [JOB] * 10}).get_json()["created"] == 10
    refused = post_batch(api, "alice", {"jobs": [JOB]})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
    problem = refused.get_json()
    assert (problem["quota"], problem["limit"]) == ("max_submits_per_s", 3)
    assert api.post_job("alice", JOB).status_code == 429
    assert post_batch(api, "bob", {"jobs": [JOB] * 2}).status_code == 200  # bob's own bucket
    now[0] += 2.6  # 7 in debt + 1 token needed: 8 / 3 s
    assert api.post_job("alice", JOB).status_code == 429
    now[0] += 0.1
    assert api.post_job("alice", JOB).status_code == 202
    assert count_jobs(engine) == 13


def test_a_batch_fits_under_the_pending_quota_whole_or_not_at_all(
    api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_MAX_PENDING", "5")
    first = post_batch(api, "alice", {"jobs": [{**JOB, "idempotency_key": f"k{i}"}
                                               for i in range(3)]})
    assert first.get_json()["created"] == 3
    # 3 PENDING + 3 new > 5: the whole batch is refused, nothing written.
    over = post_batch(api, "alice", {"jobs": [JOB] * 3})
    assert over.status_code == 429 and over.headers["Retry-After"]
    assert over.get_json()["type"].endswith("/pending-limit-reached")
    assert over.get_json()["quota"] == "max_pending"
    assert count_jobs(engine) == 3
    # A replay adds nothing: three replays and two new jobs fit (3 + 2 = 5).
    fits = post_batch(api, "alice", {"jobs": [{**JOB, "idempotency_key": f"k{i}"}
                                              for i in range(5)]}).get_json()
    assert [r["outcome"] for r in fits["results"]] == ["replayed"] * 3 + ["created"] * 2
    assert count_jobs(engine) == 5
    # Full: a batch of replays is still answered, a new job is not taken.
    again = post_batch(api, "alice", {"jobs": [{**JOB, "idempotency_key": "k0"}]})
    assert again.status_code == 200 and again.get_json()["replayed"] == 1
    assert post_batch(api, "alice", {"jobs": [JOB]}).status_code == 429
    assert post_batch(api, "bob", {"jobs": [JOB] * 5}).get_json()["created"] == 5
