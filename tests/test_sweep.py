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
from urllib.parse import urlsplit
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
from common.store.engine import create_engine_from_settings
from common.store.errors import DatabaseUnavailable, IllegalTransition
from common.store.job_store import JobStore
from common.store.models import DispatchItem
from common.store.states import JobState
from localstack.postgres import PostgresServer, free_port
from tests.jobs_helpers import job_in_state, new_job
from tests.process_fixtures import _through
from tests.submit_fixtures import SubmitHarness
from tests.support.pubsub_pull import pull_acked
from tests.support.tcp_proxy import TcpProxy


def big() -> Budget:
    """A fresh, ample budget. A Budget's clock starts when it is made: one made at import would
    run out in a suite that reaches this file more than ten minutes in."""
    return Budget(600)


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


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


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
    assert column in {"finished_at", "dispatched_at", "created_at", "updated_at", "started_at"}
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
    result = rescuer.rescue(store, maint.notifier, big(), batch_size=2)
    assert result == {
        "rescued": 3, "to_state": {"PENDING": 2, "CANCELLED": 1}, "more": False,
    }
    assert store.get("alice", retry.id).state is JobState.PENDING
    # Its last attempt lost its lease (its worker may have finished and failed to reach the
    # database): one more attempt, once (issue #25, bug 4).
    graced = store.get("alice", last.id)
    assert (graced.state, graced.attempts, graced.attempt_limit) == (JobState.PENDING, 1, 2)
    event = store.events("alice", last.id)[-1]
    assert event.reason == "lease-expired-retry" and "grace" in event.details
    assert "grace" not in store.events("alice", retry.id)[-1].details
    assert store.get("alice", cancelled.id).state is JobState.CANCELLED
    assert store.get("alice", alive.id).state is JobState.PROCESSING
    # The extra attempt loses its lease too: now it ends FAILED 'LeaseExpired'.
    assert store.claim(last.id).reason == "claimed"
    _expire(engine, last.id)
    assert rescuer.rescue(store, maint.notifier, big(), batch_size=2)["to_state"] == {
        "FAILED": 1}
    failed = store.get("alice", last.id)
    assert failed.state is JobState.FAILED and failed.result is not None
    assert failed.result.error_type == "LeaseExpired" and failed.attempts == 2
    assert [e.reason for e in store.events("alice", last.id)][-1] == "lease-expired"
    notes = {n["job_id"]: n["state"] for n in maint.notifications()}
    assert notes == {str(last.id): "FAILED", str(cancelled.id): "CANCELLED"}
    # An owner's retry starts a fresh budget, and with it a fresh grace.
    assert store.retry("alice", last.id).state is JobState.PENDING
    with engine.connect() as conn:
        assert conn.execute(text("SELECT lease_graces FROM jobs WHERE id = :id"),
                            {"id": last.id}).scalar_one() == 0


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
            rescuer.rescue(store, maint.notifier, big(), batch_size=1)

    threads = [threading.Thread(target=worker), threading.Thread(target=sweep)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rescuer.rescue(store, maint.notifier, big(), batch_size=100)
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
    assert redispatcher.redispatch(maint.service, big(), 2, after) == {
        "published": 5, "stalled": False, "stranded": 0, "more": False
    }
    assert sorted(maint.published()) == sorted(str(j.id) for j in never)
    # Waiting in Pub/Sub is not lost: the next passes publish nothing again.
    assert redispatcher.redispatch(maint.service, big(), 2, after)["published"] == 0
    assert maint.published() == []
    # Past REDISPATCH_AFTER_S, still unclaimed: published once more, as a safety net.
    _age(engine, "dispatched_at", 61, never[0].id)
    assert redispatcher.redispatch(maint.service, big(), 2, after)["published"] == 1
    assert maint.published() == [str(never[0].id)]


def test_stranded_jobs_are_published_again_at_once_a_busy_backlog_is_not(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    waiting = [store.create("alice", new_job(content=str(i)))[0] for i in range(3)]
    store.take_due_for_dispatch(10)
    _age(engine, "dispatched_at", 40, *(j.id for j in waiting))  # past STALL_AFTER_S (30 s)
    done = job_in_state(store, JobState.COMPLETED)  # the worker ran something meanwhile
    _age(engine, "started_at", 35, done.id)
    long, stall = timedelta(hours=1), timedelta(seconds=30)
    assert redispatcher.redispatch(maint.service, big(), 2, long, stall) == {
        "published": 0, "stalled": False, "stranded": 0, "more": False
    }
    assert maint.published() == []  # a backlog being worked through: left to Pub/Sub
    _age(engine, "started_at", 600, done.id)  # no: it ran and ended before they were sent
    _age(engine, "finished_at", 600, done.id)
    assert redispatcher.redispatch(maint.service, big(), 2, long, stall) == {
        "published": 3, "stalled": True, "stranded": 3, "more": False
    }
    assert sorted(maint.published()) == sorted(str(j.id) for j in waiting)
    # Published again just now: the next pass waits another window before doing it again.
    assert redispatcher.redispatch(maint.service, big(), 2, long, stall)["published"] == 0


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
        assert redispatcher.redispatch(broken, big(), 10, timedelta(hours=1))["published"] == 0
        assert maint.store.get("alice", job.id).dispatched_at is None  # released, not stamped
    common.messaging.pubsub.publisher.reset()  # Pub/Sub is back
    assert redispatcher.redispatch(maint.service, big(), 10, timedelta(hours=1))["published"] == 1


# -- dead letters -----------------------------------------------------------------------------


def _message(job_id: UUID, attempts: int) -> bytes:
    return encode_message(DispatchItem(id=job_id, attempts=attempts))[0]


def test_dead_letters_send_jobs_back_then_are_acknowledged(
    maint: Maintenance, engine: Engine
) -> None:
    store = maint.store
    lost, _ = store.create("alice", new_job(content="never delivered"))
    hopeless, _ = store.create("alice", new_job(content="never delivered for hours"))
    store.take_due_for_dispatch(10)  # both published
    _age(engine, "updated_at", 6 * 3600 + 1, hopeless.id)  # due for longer than the budget
    done = job_in_state(store, JobState.COMPLETED)
    running = job_in_state(store, JobState.PROCESSING)
    moved_on = job_in_state(store, JobState.PROCESSING)
    store.retry_later(moved_on.id, moved_on.attempts, "Flaky", "x", delay=timedelta(0))
    for data in (
        _message(lost.id, 0),
        _message(hopeless.id, 0),
        _message(done.id, 0),
        _message(running.id, 0),
        _message(moved_on.id, 0),  # an old message: the job went on to attempt 1
        b"garbage that is no job message",
    ):
        maint.dead_letter(data)
    result = dead_letters.settle(store, maint.notifier, maint.dead_sub, big(), 100)
    assert result == {"delivery_failed": 1, "undeliverable": 1, "ignored": 3, "poison": 1,
                      "more": False}
    back = store.get("alice", lost.id)  # never ran: not failed, dispatched again later
    assert back.state is JobState.PENDING and back.attempts == 0 and back.result is None
    assert back.dispatched_at is None and back.not_before is not None
    assert [e.reason for e in store.events("alice", lost.id)] == ["created", "delivery-failed"]
    failed = store.get("alice", hopeless.id)
    assert failed.state is JobState.FAILED and failed.result is not None
    assert failed.result.error_type == "Undeliverable"
    assert [e.reason for e in store.events("alice", hopeless.id)][-1] == "undeliverable"
    assert store.get("alice", done.id).state is JobState.COMPLETED
    assert store.get("alice", running.id).state is JobState.PROCESSING
    assert store.get("alice", moved_on.id).state is JobState.PENDING
    assert maint.notifications() == [
        {"job_id": str(hopeless.id), "owner": "alice", "state": "FAILED"}
    ]
    # Everything was acknowledged: a second pass finds nothing.
    again = dead_letters.settle(store, maint.notifier, maint.dead_sub, big(), 100)
    assert again == {"delivery_failed": 0, "undeliverable": 0, "ignored": 0, "poison": 0,
                     "more": False}
    # An undeliverable job is retryable by its owner.
    assert store.retry("alice", hopeless.id).state is JobState.PENDING


def test_a_dead_letter_is_not_acknowledged_while_the_database_is_down(
    maint: Maintenance, settings: Settings
) -> None:
    job, _ = maint.store.create("alice", new_job())
    maint.store.take_due_for_dispatch(1)
    maint.dead_letter(_message(job.id, 0))
    proxy = TcpProxy(*_host_port(settings.database_url or ""))
    url = _through(settings.database_url or "", proxy.port)
    cut = maint.settings.model_copy(update={"database_url": url, "db_connect_timeout_s": 2})
    cut_engine = create_engine_from_settings(cut, pool_size=1, max_overflow=0)
    try:
        down = JobStore(cut_engine, cut)
        proxy.down()
        with pytest.raises(DatabaseUnavailable):
            dead_letters.settle(down, maint.notifier, maint.dead_sub, Budget(5), 100)
        proxy.up()
        # Not acknowledged but handed back: a pass after the recovery settles it.
        settled: dict[str, Any] = {"delivery_failed": 0}
        for _ in range(3):
            settled = dead_letters.settle(down, maint.notifier, maint.dead_sub, big(), 100)
            if settled["delivery_failed"]:
                break
        assert settled["delivery_failed"] == 1
        assert [e.reason for e in maint.store.events("alice", job.id)][-1] == "delivery-failed"
    finally:
        cut_engine.dispose()
        proxy.close()


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
    result = retention.prune(store, big(), batch_size=4, days=30)
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
    assert steps["dead_letters"] == {
        "delivery_failed": 0, "undeliverable": 0, "ignored": 0, "poison": 0, "more": False
    }
    assert steps["redispatch"]["stalled"] is False
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
    """The steps themselves are safe side by side (SKIP LOCKED), even without the pass lock:
    during a deploy an old instance may still run a pass without it."""
    store = maint.store
    new = [store.create("alice", new_job(content=f"n{i}"))[0] for i in range(150)]
    stuck = [job_in_state(store, JobState.PROCESSING, content=f"s{i}") for i in range(150)]
    _expire(engine, *(j.id for j in stuck))
    after = timedelta(seconds=maint.settings.redispatch_after_s)

    def steps(_: int) -> tuple[int, int]:
        rescued = rescuer.rescue(store, maint.notifier, big(), 20)["rescued"]
        return rescued, redispatcher.redispatch(maint.service, big(), 20, after)["published"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(steps, range(2)))
    assert sum(r for r, _ in results) == 150
    assert sum(p for _, p in results) == 300
    published = Counter(maint.published())
    assert len(published) == 300 and set(published.values()) == {1}
    assert set(published) == {str(j.id) for j in new + stuck}
    with engine.connect() as conn:
        rescues = conn.execute(text(
            "SELECT job_id, count(*) FROM job_events WHERE reason = 'lease-expired-retry' "
            "GROUP BY job_id"
        )).all()
    assert len(rescues) == 150 and {n for _, n in rescues} == {1}


def test_an_overlapping_pass_is_a_clean_no_op(
    maint: Maintenance, capsys: pytest.CaptureFixture[str]
) -> None:
    job, _ = maint.store.create("alice", new_job())
    holder = maint.store.sweep_lock()
    assert holder.acquire() == "held"  # a pass in progress elsewhere
    try:
        assert maint.sweeper.run() == {"ok": True, "skipped": "another-pass-running"}
        assert maint.published() == []  # nothing ran
    finally:
        holder.release()
    assert maint.sweeper.run()["steps"]["redispatch"]["published"] == 1
    assert maint.published() == [str(job.id)]
    # Two passes started together: exactly one runs.
    barrier = threading.Barrier(2)

    def run(_: int) -> dict[str, Any]:
        barrier.wait()
        return maint.sweeper.run(SweepRequest(steps=["rescue"]))

    for _ in range(5):
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(run, range(2)))
        skipped = [o for o in outcomes if o.get("skipped") == "another-pass-running"]
        assert all(o["ok"] for o in outcomes) and len(skipped) <= 1
    capsys.readouterr()


def test_a_pass_before_the_migrations_is_skipped_with_one_warning(
    maint: Maintenance, pg_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = pg_server.create_database("jobs_unmigrated")
    bare = maint.settings.model_copy(update={"database_url": pg_server.url(name)})
    bare_engine = create_engine_from_settings(bare, pool_size=1, max_overflow=0)
    try:
        store = JobStore(bare_engine, bare)
        sweeper = Sweeper(JobService(store, Dispatcher(bare)), maint.notifier, bare)
        capsys.readouterr()
        assert sweeper.run() == {"ok": True, "skipped": "schema-missing"}
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(line["severity"], "migrations" in line["message"]) for line in lines] == [
            ("WARNING", True)
        ]
        assert store.sweep_lock().acquire() == "schema-missing"  # the lock was let go
    finally:
        bare_engine.dispose()
        pg_server.drop_database(name)


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
