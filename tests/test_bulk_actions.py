"""Bulk cancel and retry (`POST /jobs:bulk-cancel`, `/jobs:bulk-retry`) against real PostgreSQL
and the Pub/Sub emulator: owner-scoped, filtered, guarded like the single moves, in bounded
steps, with counts; a filter that matches everything needs `all`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.store import bulk
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import job_in_state, snapshot
from tests.submit_fixtures import SubmitHarness

ALICE, BOB = "hs256:alice", "hs256:bob"


def post(api: SubmitHarness, owner: str, action: str, body: Any) -> Any:
    return api.client.post(f"/jobs:bulk-{action}", data=json.dumps(body),
                           content_type="application/json", headers=api.auth(owner))


def states(engine: Engine, owner: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM jobs WHERE owner_id = :o "
                                 "GROUP BY state"), {"o": owner}).all()
    return {r[0]: int(r[1]) for r in rows}


def test_cancel_moves_only_the_callers_matching_jobs_with_counts(
    api: SubmitHarness, store: JobStore, engine: Engine
) -> None:
    for _ in range(3):
        job_in_state(store, JobState.PENDING, ALICE)
    running = job_in_state(store, JobState.PROCESSING, ALICE)
    done = job_in_state(store, JobState.COMPLETED, ALICE)
    job_in_state(store, JobState.PENDING, ALICE, preset="text-stats")
    bobs = [job_in_state(store, JobState.PENDING, BOB) for _ in range(2)]
    before_bob = [snapshot(engine, j) for j in bobs]

    dry = post(api, "alice", "cancel", {"preset": "echo", "dry_run": True})
    assert dry.status_code == 200
    counted = dry.get_json()
    assert counted.pop("as_of")
    assert counted == {"action": "cancel", "dry_run": True, "matched": 4, "moved": 0,
                       "cancelled": 0, "cancel_requested": 0, "retried": 0, "complete": True}
    assert states(engine, ALICE) == {"PENDING": 4, "PROCESSING": 1, "COMPLETED": 1}

    resp = post(api, "alice", "cancel", {"preset": "echo"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["moved"], body["cancelled"], body["cancel_requested"]) == (4, 3, 1)
    assert states(engine, ALICE) == {"PENDING": 1, "PROCESSING": 1, "COMPLETED": 1,
                                     "CANCELLED": 3}
    # The same moves as a single cancel: the running job is asked to stop, with its event.
    assert store.get(ALICE, running.id).cancel_requested
    assert [e.reason for e in store.events(ALICE, running.id)][-1] == "cancel-requested"
    assert store.get(ALICE, done.id).state is JobState.COMPLETED
    assert [snapshot(engine, j) for j in bobs] == before_bob  # another owner's are untouched
    # Again: nothing left to move (the running one was already asked).
    again = post(api, "alice", "cancel", {"preset": "echo"}).get_json()
    assert (again["matched"], again["moved"]) == (0, 0)


def test_retry_moves_failed_jobs_and_publishes_them(
    api: SubmitHarness, store: JobStore, engine: Engine
) -> None:
    failed = [job_in_state(store, JobState.FAILED, ALICE) for _ in range(3)]
    job_in_state(store, JobState.FAILED, BOB)
    job_in_state(store, JobState.COMPLETED, ALICE)
    api.pull()
    dry = post(api, "alice", "retry", {"state": "FAILED", "dry_run": True}).get_json()
    assert dry["matched"] == 3 and dry["moved"] == 0
    resp = post(api, "alice", "retry", {"state": "FAILED"})
    assert resp.status_code == 200 and resp.get_json()["retried"] == 3
    assert states(engine, ALICE) == {"PENDING": 3, "COMPLETED": 1}
    assert states(engine, BOB) == {"FAILED": 1}
    messages = api.pull()
    assert sorted(m["data"]["job_id"] for m in messages) == sorted(str(j.id) for j in failed)
    assert {m["data"]["attempts"] for m in messages} == {1}
    for job in failed:
        again = store.get(ALICE, job.id)
        assert again.dispatched_at is not None and again.result is None
        assert [e.reason for e in store.events(ALICE, job.id)][-1] == "retried"


def test_created_before_bounds_the_action(api: SubmitHarness, store: JobStore) -> None:
    old = job_in_state(store, JobState.PENDING, ALICE)
    cut = store.get(ALICE, old.id).created_at.isoformat()
    new = job_in_state(store, JobState.PENDING, ALICE)
    body = post(api, "alice", "cancel", {"created_before": cut.replace("+00:00", "Z")}).get_json()
    assert body["cancelled"] == 0  # strictly before: the old one itself is not
    later = store.get(ALICE, new.id).created_at.isoformat()
    body = post(api, "alice", "cancel", {"created_before": later}).get_json()
    assert body["cancelled"] == 1
    assert store.get(ALICE, old.id).state is JobState.CANCELLED
    assert store.get(ALICE, new.id).state is JobState.PENDING


def test_steps_are_bounded_and_the_loop_covers_every_job(
    api: SubmitHarness, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With steps of 4, 10 jobs take three statements; each job is moved exactly once."""
    monkeypatch.setattr(bulk, "BULK_BATCH", 4)
    steps: list[int] = []
    original = JobStore.bulk_cancel_step

    def counted(self: JobStore, *args: Any) -> Any:
        step = original(self, *args)
        steps.append(step.picked)
        return step

    monkeypatch.setattr(JobStore, "bulk_cancel_step", counted)
    jobs = [job_in_state(store, JobState.PENDING, ALICE) for _ in range(10)]
    body = post(api, "alice", "cancel", {"state": "PENDING"}).get_json()
    assert body["cancelled"] == 10 and body["complete"]
    assert steps == [4, 4, 2]
    for job in jobs:
        assert [e.reason for e in store.events(ALICE, job.id)] == ["created", "cancelled"]


def test_a_step_leaves_a_job_that_changed_state_alone(store: JobStore) -> None:
    """The guard is re-checked under the row lock: a job completed between pick and move (here:
    before the step) is not cancelled; one claimed is asked to cancel, as a single cancel
    would."""
    flt = bulk.BulkFilter(state=JobState.PENDING)
    pending = job_in_state(store, JobState.PENDING, ALICE)
    finished = job_in_state(store, JobState.COMPLETED, ALICE)
    before = store.bulk_start(flt)
    step = store.bulk_cancel_step(ALICE, JobState.PENDING, flt, before, bulk.Cursor())
    assert [str(r["id"]) for r in step.moved] == [str(pending.id)]
    assert store.get(ALICE, finished.id).state is JobState.COMPLETED


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("cancel", {}, "all"),
        ("retry", {"dry_run": True}, "all"),
        ("cancel", {"all": False}, "all"),
        ("cancel", {"all": "yes"}, "all"),
        ("cancel", {"state": "COMPLETED"}, "state"),
        ("retry", {"state": "PENDING"}, "state"),
        ("cancel", {"state": "BOGUS"}, "state"),
        ("cancel", {"preset": "Not A Preset"}, "preset"),
        ("cancel", {"created_before": "yesterday"}, "created_before"),
        ("cancel", {"created_before": "2026-02-30T00:00:00Z"}, "created_before"),
        ("cancel", {"created_before": None}, "created_before"),
        ("cancel", {"all": True, "owner": "bob"}, "owner"),
        ("retry", [], "body"),
        ("cancel", {"limit_key": "a b"}, "limit_key"),
        ("cancel", {"limit_key": None}, "limit_key"),
    ],
)
def test_bad_filters_answer_422_naming_the_field_and_change_nothing(
    api: SubmitHarness, store: JobStore, engine: Engine, action: str, body: Any, field: str
) -> None:
    jobs = [job_in_state(store, JobState.PENDING, ALICE),
            job_in_state(store, JobState.FAILED, ALICE)]
    before = [snapshot(engine, j) for j in jobs]
    resp = post(api, "alice", action, body)
    assert resp.status_code == 422
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert [p["name"] for p in resp.get_json()["invalid_params"]] == [field]
    assert [snapshot(engine, j) for j in jobs] == before


def test_all_true_moves_everything_the_action_can(
    api: SubmitHarness, store: JobStore, engine: Engine
) -> None:
    job_in_state(store, JobState.PENDING, ALICE)
    job_in_state(store, JobState.FAILED, ALICE)
    job_in_state(store, JobState.PENDING, BOB)
    assert post(api, "alice", "retry", {"all": True}).get_json()["retried"] == 1
    body = post(api, "alice", "cancel", {"all": True}).get_json()
    assert body["cancelled"] == 2  # the retried one is PENDING again
    assert states(engine, ALICE) == {"CANCELLED": 2}
    assert states(engine, BOB) == {"PENDING": 1}


def test_bulk_actions_need_a_token(api: SubmitHarness) -> None:
    for action in ("cancel", "retry"):
        resp = api.client.post(f"/jobs:bulk-{action}", data="{\"all\": true}",
                               content_type="application/json")
        assert resp.status_code == 401


def test_past_its_time_budget_an_action_says_incomplete_and_a_repeat_finishes(
    api: SubmitHarness, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.service

    monkeypatch.setattr(bulk, "BULK_BATCH", 2)
    monkeypatch.setattr(common.service, "BULK_TIME_BUDGET_S", 0.0)  # one step per request
    for _ in range(5):
        job_in_state(store, JobState.FAILED, ALICE)
    answers = []
    for _ in range(5):
        body = post(api, "alice", "retry", {"state": "FAILED"}).get_json()
        answers.append((body["retried"], body["complete"]))
        if body["complete"]:
            break
    assert answers == [(2, False), (2, False), (1, True)]
    assert store.owner_stats(ALICE)["depth"]["FAILED"] == 0


def test_a_dry_runs_as_of_sent_back_acts_on_exactly_the_jobs_it_counted(
    api: SubmitHarness, store: JobStore
) -> None:
    """What the dashboard does: count, confirm, then act with created_before = the count's
    as_of, so a job submitted while the person was reading the count is not cancelled."""
    counted = job_in_state(store, JobState.PENDING, ALICE)
    dry = post(api, "alice", "cancel", {"all": True, "dry_run": True}).get_json()
    assert dry["matched"] == 1
    newer = job_in_state(store, JobState.PENDING, ALICE)
    done = post(api, "alice", "cancel", {"created_before": dry["as_of"]}).get_json()
    assert done["cancelled"] == 1
    assert store.get(ALICE, counted.id).state is JobState.CANCELLED
    assert store.get(ALICE, newer.id).state is JobState.PENDING


def test_a_limit_key_takes_every_job_under_it(api: SubmitHarness, engine: Engine) -> None:
    for _ in range(2):
        api.post_job("alice", {"preset": "echo", "content": "x", "limit_key": "gpu"})
    api.post_job("alice", {"preset": "echo", "content": "x", "limit_key": "cpu"})
    api.post_job("bob", {"preset": "echo", "content": "x", "limit_key": "gpu"})
    body = post(api, "alice", "cancel", {"limit_key": "gpu"}).get_json()
    assert (body["matched"], body["cancelled"]) == (2, 2)
    assert states(engine, ALICE) == {"CANCELLED": 2, "PENDING": 1}
    assert states(engine, BOB) == {"PENDING": 1}
