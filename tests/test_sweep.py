"""The sweep against real PostgreSQL and the Pub/Sub emulator: each step alone, the
rescue/complete race, two sweeps at once, the time budget and the summary. (Its HTTP surface
and auth are in test_sweep_api.py.)"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

from common.maintenance import dead_letters, redispatcher, rescuer, retention
from common.maintenance.budget import Budget
from common.maintenance.sweep import Sweeper, SweepRequest
from common.messaging.dispatch import Dispatcher
from common.messaging.job_message import encode_message
from common.messaging.notify import Notifier
from common.service import JobService
from common.settings import Settings, load_settings
from common.store.errors import IllegalTransition
from common.store.job_store import JobStore
from common.store.models import DispatchItem
from common.store.states import JobState
from localstack.postgres import free_port
from tests.jobs_helpers import job_in_state, new_job
from tests.submit_fixtures import SubmitHarness
from tests.support.pubsub_pull import pull_acked

BIG = Budget(600)


@dataclass
class Maintenance:
    store: JobStore
    service: JobService
    notifier: Notifier
    sweeper: Sweeper
    settings: Settings
    harness: SubmitHarness
    dead_topic: str
    dead_sub: str
    results_sub: str

    def published(self) -> list[str]:
        """Job ids published to the jobs topic since the last look."""
        got: list[str] = []
        while batch := self.harness.pull(100):
            got += [m["data"]["job_id"] for m in batch]
        return got

    def notifications(self) -> list[dict[str, Any]]:
        assert self.notifier.flush()
        return [json.loads(m.data) for m in pull_acked(self.results_sub)]

    def dead_letter(self, data: bytes) -> None:
        pubsub_v1.PublisherClient().publish(self.dead_topic, data).result(timeout=10)


@pytest.fixture()
def maint(submit_env: SubmitHarness, engine: Engine, emulator: Any) -> Iterator[Maintenance]:
    project = emulator.project
    tag = submit_env.topic.rsplit("/", 1)[1]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    dead_topic = publisher.topic_path(project, f"{tag}-dead")
    results_topic = publisher.topic_path(project, f"{tag}-results")
    dead_sub = subscriber.subscription_path(project, f"{tag}-dead-letters")
    results_sub = subscriber.subscription_path(project, f"{tag}-results-reader")
    for topic in (dead_topic, results_topic):
        publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": dead_sub, "topic": dead_topic})
    subscriber.create_subscription(request={"name": results_sub, "topic": results_topic})
    subscriber.close()
    settings = load_settings(
        dead_letter_subscription=f"{tag}-dead-letters",
        results_topic=f"{tag}-results",
        redispatch_after_s=60,
        lease_seconds=30,
    )
    store = JobStore(engine, settings)
    service = JobService(store, Dispatcher(settings))
    notifier = Notifier(settings)
    yield Maintenance(
        store, service, notifier, Sweeper(service, notifier, settings), settings, submit_env,
        dead_topic, dead_sub, results_sub,
    )


def _expire(engine: Engine, *job_ids: UUID) -> None:
    with engine.connect() as conn:
        conn.execute(
            text("UPDATE jobs SET lease_expires_at = now() - interval '1 s' "
                 "WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [str(j) for j in job_ids]},
        )
        conn.commit()


def _age(engine: Engine, column: str, seconds: float, *job_ids: UUID) -> None:
    """Move a timestamp into the past, as time would."""
    assert column in {"finished_at", "dispatched_at", "created_at"}
    with engine.connect() as conn:
        conn.execute(
            text(f"UPDATE jobs SET {column} = {column} - make_interval(secs => :s) "
                 "WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"s": seconds, "ids": [str(j) for j in job_ids]},
        )
        conn.commit()


# -- rescue -----------------------------------------------------------------------------------


def test_rescue_expired_leases(maint: Maintenance, engine: Engine) -> None:
    store = maint.store
    retry = job_in_state(store, JobState.PROCESSING)
    last, _ = store.create("alice", new_job(max_attempts=1))
    store.claim(last.id)
    cancelled = job_in_state(store, JobState.PROCESSING)
    store.cancel("alice", cancelled.id)
    alive = job_in_state(store, JobState.PROCESSING)  # its lease still holds: untouched
    _expire(engine, retry.id, last.id, cancelled.id)
    result = rescuer.rescue(store, maint.notifier, BIG, batch_size=2)
    assert result == {
        "rescued": 3, "to_state": {"PENDING": 1, "FAILED": 1, "CANCELLED": 1}, "more": False,
    }
    assert store.get("alice", retry.id).state is JobState.PENDING
    failed = store.get("alice", last.id)
    assert failed.state is JobState.FAILED and failed.result is not None
    assert failed.result.error_type == "LeaseExpired"
    assert [e.reason for e in store.events("alice", last.id)][-1] == "lease-expired"
    assert store.get("alice", cancelled.id).state is JobState.CANCELLED
    assert store.get("alice", alive.id).state is JobState.PROCESSING
    notes = {n["job_id"]: n["state"] for n in maint.notifications()}
    assert notes == {str(last.id): "FAILED", str(cancelled.id): "CANCELLED"}


def test_a_worker_completing_just_before_the_rescue_wins(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    jobs = []
    for i in range(40):
        job, _ = store.create("alice", new_job(content=str(i)))
        claimed = store.claim(job.id).job
        assert claimed is not None
        jobs.append(claimed)
    _expire(engine, *(j.id for j in jobs))
    completed: set[UUID] = set()
    go = threading.Barrier(2)

    def worker() -> None:
        go.wait()
        for job in jobs:
            try:
                store.complete(job.id, job.attempts, {"n": job.content})
                completed.add(job.id)
            except IllegalTransition:
                pass

    def sweep() -> None:
        go.wait()
        for _ in range(40):
            rescuer.rescue(store, maint.notifier, BIG, batch_size=1)

    threads = [threading.Thread(target=worker), threading.Thread(target=sweep)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rescuer.rescue(store, maint.notifier, BIG, batch_size=100)
    states: Counter[JobState] = Counter()
    for job in jobs:
        final = store.get("alice", job.id)
        reasons = [e.reason for e in store.events("alice", job.id)]
        if job.id in completed:  # the worker won: the rescue never touched it
            assert final.state is JobState.COMPLETED and "lease-expired-retry" not in reasons
        else:  # the rescue won: the late completion wrote nothing
            assert final.state is JobState.PENDING and final.result is None
            assert "completed" not in reasons
        states[final.state] += 1
        assert [r for r in reasons if r in ("completed", "lease-expired-retry")] != [
            "completed", "lease-expired-retry"
        ]
    assert states[JobState.COMPLETED] == len(completed)
    assert states[JobState.COMPLETED] + states[JobState.PENDING] == len(jobs)


# -- re-dispatch ------------------------------------------------------------------------------


def test_redispatch_publishes_what_is_due_once(maint: Maintenance, engine: Engine) -> None:
    store = maint.store
    never = [store.create("alice", new_job(content=str(i)))[0] for i in range(5)]
    later = job_in_state(store, JobState.PROCESSING)
    store.retry_later(later.id, later.attempts, "Flaky", "x", delay=timedelta(hours=1))
    after = timedelta(seconds=maint.settings.redispatch_after_s)
    assert redispatcher.redispatch(maint.service, BIG, 2, after) == {"published": 5, "more": False}
    assert sorted(maint.published()) == sorted(str(j.id) for j in never)
    # Waiting in Pub/Sub is not lost: the next passes publish nothing again.
    assert redispatcher.redispatch(maint.service, BIG, 2, after)["published"] == 0
    assert maint.published() == []
    # Past REDISPATCH_AFTER_S, still unclaimed: published once more, as a safety net.
    _age(engine, "dispatched_at", 61, never[0].id)
    assert redispatcher.redispatch(maint.service, BIG, 2, after)["published"] == 1
    assert maint.published() == [str(never[0].id)]


def test_a_failed_publish_is_released_for_the_next_pass(
    maint: Maintenance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.messaging.pubsub

    job, _ = maint.store.create("alice", new_job())
    with monkeypatch.context() as patch:
        patch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens
        common.messaging.pubsub.publisher.reset()
        broken = JobService(maint.store, Dispatcher(maint.settings.model_copy(
            update={"publish_timeout_s": 1.0})))
        assert redispatcher.redispatch(broken, BIG, 10, timedelta(hours=1))["published"] == 0
        assert maint.store.get("alice", job.id).dispatched_at is None  # released, not stamped
    common.messaging.pubsub.publisher.reset()  # Pub/Sub is back
    assert redispatcher.redispatch(maint.service, BIG, 10, timedelta(hours=1))["published"] == 1


# -- dead letters -----------------------------------------------------------------------------


def _message(job_id: UUID, attempts: int) -> bytes:
    return encode_message(DispatchItem(id=job_id, attempts=attempts))[0]


def test_dead_letters_settle_jobs_then_are_acknowledged(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    lost, _ = store.create("alice", new_job(content="never delivered"))
    done = job_in_state(store, JobState.COMPLETED)
    running = job_in_state(store, JobState.PROCESSING)
    moved_on = job_in_state(store, JobState.PROCESSING)
    store.retry_later(moved_on.id, moved_on.attempts, "Flaky", "x", delay=timedelta(0))
    for data in (
        _message(lost.id, 0),
        _message(done.id, 0),
        _message(running.id, 0),
        _message(moved_on.id, 0),  # an old message: the job went on to attempt 1
        b"garbage that is no job message",
    ):
        maint.dead_letter(data)
    result = dead_letters.settle(store, maint.notifier, maint.dead_sub, BIG, 100)
    assert result == {"settled": 1, "ignored": 3, "poison": 1, "more": False}
    failed = store.get("alice", lost.id)
    assert failed.state is JobState.FAILED and failed.result is not None
    assert failed.result.error_type == "DeadLettered"
    assert [e.reason for e in store.events("alice", lost.id)][-1] == "dead-lettered"
    assert store.get("alice", done.id).state is JobState.COMPLETED
    assert store.get("alice", running.id).state is JobState.PROCESSING
    assert store.get("alice", moved_on.id).state is JobState.PENDING
    assert maint.notifications() == [
        {"job_id": str(lost.id), "owner": "alice", "state": "FAILED"}
    ]
    # Everything was acknowledged: a second pass finds nothing.
    again = dead_letters.settle(store, maint.notifier, maint.dead_sub, BIG, 100)
    assert again == {"settled": 0, "ignored": 0, "poison": 0, "more": False}
    # A dead-lettered job is retryable by its owner.
    assert store.retry("alice", lost.id).state is JobState.PENDING


# -- retention --------------------------------------------------------------------------------


def test_retention_deletes_old_terminal_jobs_in_batches(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    old = [job_in_state(store, s) for s in (JobState.COMPLETED, JobState.FAILED,
                                            JobState.CANCELLED) for _ in range(3)]
    young = job_in_state(store, JobState.COMPLETED)
    pending = job_in_state(store, JobState.PENDING)
    _age(engine, "finished_at", 31 * 86400, *(j.id for j in old))
    _age(engine, "created_at", 31 * 86400, pending.id)
    result = retention.prune(store, BIG, batch_size=4, days=30)
    assert result == {"deleted_jobs": 9, "deleted_poison_messages": 0, "more": False}
    with engine.connect() as conn:
        left = set(conn.execute(text("SELECT id FROM jobs")).scalars())
        orphans = conn.execute(text(
            "SELECT (SELECT count(*) FROM job_events WHERE job_id <> ALL(SELECT id FROM jobs)) + "
            "(SELECT count(*) FROM job_results WHERE job_id <> ALL(SELECT id FROM jobs))"
        )).scalar_one()
    assert left == {young.id, pending.id} and orphans == 0


# -- a whole pass -----------------------------------------------------------------------------


def test_time_budget_leaves_the_rest_to_the_next_pass(
    maint: Maintenance, engine: Engine
) -> None:
    for i in range(30):
        maint.store.create("alice", new_job(content=str(i)))
    first = maint.sweeper.run(SweepRequest(time_budget_s=1e-9, batch_size=5))
    assert first["budget_exhausted"] is True
    assert all(step.get("more") for step in first["steps"].values())
    assert first["steps"]["redispatch"]["published"] == 0
    second = maint.sweeper.run(SweepRequest(batch_size=5))
    assert second["budget_exhausted"] is False
    assert second["steps"]["redispatch"]["published"] == 30


def test_a_pass_reports_a_summary(maint: Maintenance, engine: Engine) -> None:
    store = maint.store
    waiting = [store.create("alice", new_job(content=str(i)))[0] for i in range(3)]
    _age(engine, "created_at", 120, waiting[0].id)
    stuck = job_in_state(store, JobState.PROCESSING)
    _expire(engine, stuck.id)
    job_in_state(store, JobState.COMPLETED)
    summary = maint.sweeper.run()
    assert summary["ok"] is True and summary["budget_exhausted"] is False
    steps = summary["steps"]
    assert steps["rescue"]["rescued"] == 1
    assert steps["redispatch"]["published"] == 4  # three new ones and the rescued one
    assert steps["dead_letters"] == {"settled": 0, "ignored": 0, "poison": 0, "more": False}
    assert steps["retention"]["deleted_jobs"] == 0
    queue = summary["queue"]
    assert queue["depth"] == {"PENDING": 4, "PROCESSING": 0}
    assert queue["oldest_pending_age_s"] >= 120
    assert queue["finished_last_hour"] == {"COMPLETED": 1}
    assert isinstance(summary["duration_ms"], int)
    json.dumps(summary)  # one JSON document, as logged and returned


def test_only_the_requested_steps_run(maint: Maintenance) -> None:
    maint.store.create("alice", new_job())
    summary = maint.sweeper.run(SweepRequest(steps=["rescue"]))
    assert list(summary["steps"]) == ["rescue"]
    assert maint.published() == []


def test_two_sweeps_at_once_neither_double_rescue_nor_double_publish(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    new = [store.create("alice", new_job(content=f"n{i}"))[0] for i in range(150)]
    stuck = [job_in_state(store, JobState.PROCESSING, content=f"s{i}") for i in range(150)]
    _expire(engine, *(j.id for j in stuck))
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(
            lambda _: maint.sweeper.run(SweepRequest(batch_size=20, steps=["rescue",
                                                                           "redispatch"])),
            range(2),
        ))
    assert sum(s["steps"]["rescue"]["rescued"] for s in summaries) == 150
    assert sum(s["steps"]["redispatch"]["published"] for s in summaries) == 300
    published = Counter(maint.published())
    assert len(published) == 300 and set(published.values()) == {1}
    assert set(published) == {str(j.id) for j in new + stuck}
    with engine.connect() as conn:
        rescues = conn.execute(text(
            "SELECT job_id, count(*) FROM job_events WHERE reason = 'lease-expired-retry' "
            "GROUP BY job_id"
        )).all()
    assert len(rescues) == 150 and {n for _, n in rescues} == {1}


def test_settings_bound_what_a_request_may_ask(maint: Maintenance) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SweepRequest.model_validate({"batch_size": 100_000})
    with pytest.raises(ValueError, match="steps"):
        SweepRequest.model_validate({"steps": ["drop_tables"]})
    with pytest.raises(ValueError, match="extra"):
        SweepRequest.model_validate({"rescue_everything": True})
    # A caller may shorten the budget but never stretch it past SWEEP_TIME_BUDGET_S.
    tight = Sweeper(maint.service, maint.notifier,
                    maint.settings.model_copy(update={"sweep_time_budget_s": 1e-9}))
    assert tight.run(SweepRequest(time_budget_s=3600))["budget_exhausted"] is True
