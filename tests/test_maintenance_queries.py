"""The store's maintenance operations (used by sweep), and the indexes that keep them cheap."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import uuid4

import pytest
from sqlalchemy import Engine, text

from common.store import callers
from common.store import maintenance_queries as repo
from common.store.job_store import JobStore
from common.store.models import DispatchItem, Job
from common.store.states import JobState
from common.store.sweep_results import DeliveryFailure
from tests.conftest import table_counts
from tests.jobs_helpers import job_in_state, new_job


def test_due_jobs_are_taken_oldest_first_and_once(store: JobStore) -> None:
    jobs = [store.create("alice", new_job(content=str(i)))[0] for i in range(5)]
    first = store.take_due_for_dispatch(2)
    assert {d.id for d in first} == {j.id for j in jobs[:2]}  # the oldest first
    assert {d.id for d in store.take_due_for_dispatch(10)} == {j.id for j in jobs[2:]}
    assert store.take_due_for_dispatch(10) == []  # taken means stamped: nobody takes them again


def test_a_published_backlog_is_not_republished(store: JobStore) -> None:
    for i in range(20):
        store.create("alice", new_job(content=str(i)))
    assert len(store.take_due_for_dispatch(100)) == 20
    assert store.take_due_for_dispatch(100, redispatch_after=timedelta(hours=1)) == []


def test_stale_dispatch_is_taken_again_after_the_threshold(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.take_due_for_dispatch(1)
    time.sleep(0.05)
    again = store.take_due_for_dispatch(10, redispatch_after=timedelta(milliseconds=10))
    assert again == [DispatchItem(id=job.id, attempts=0)]


def test_a_released_job_is_taken_again(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    taken = store.take_due_for_dispatch(1)
    assert store.release_dispatch(taken) == 1
    assert store.take_due_for_dispatch(1) == taken
    assert store.release_dispatch([DispatchItem(id=job.id, attempts=3)]) == 0  # stale: guarded


def test_not_yet_due_jobs_wait(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id)
    store.retry_later(job.id, 1, "E", "m", delay=timedelta(hours=1))
    assert store.take_due_for_dispatch(10) == []


def test_mark_dispatched_is_guarded_by_state_and_attempt(store: JobStore) -> None:
    running = job_in_state(store, JobState.PROCESSING)
    pending, _ = store.create("alice", new_job())
    stale = DispatchItem(id=pending.id, attempts=4)
    assert store.mark_dispatched([DispatchItem(id=running.id, attempts=1), stale]) == 0
    assert store.mark_dispatched([]) == 0


def test_cancelled_and_claimed_jobs_leave_the_dispatch_queue(store: JobStore) -> None:
    a, _ = store.create("alice", new_job())
    b, _ = store.create("alice", new_job())
    store.cancel("alice", a.id)
    store.claim(b.id)
    assert store.take_due_for_dispatch(10) == []


def test_retry_later_goes_back_into_the_dispatch_queue_when_due(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.take_due_for_dispatch(1)
    store.claim(job.id)
    store.retry_later(job.id, 1, "E", "m", delay=timedelta(0))
    assert store.take_due_for_dispatch(10) == [DispatchItem(id=job.id, attempts=1)]


def test_expired_leases_are_listed(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id, lease_s=0.01)
    time.sleep(0.05)
    assert store.find_expired_leases(10) == [DispatchItem(id=job.id, attempts=1)]


def test_rescued_job_with_cancel_requested_ends_cancelled(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id, lease_s=0.05)
    store.cancel("alice", job.id)
    time.sleep(0.1)
    assert [r[:2] for r in store.rescue_expired(5)] == [(job.id, JobState.CANCELLED)]


def _dispatched(store: JobStore, **kw: object) -> Job:
    """A job whose message is out (as submit or the sweep leaves it)."""
    job, _ = store.create("alice", new_job(**kw))
    assert store.mark_dispatched([DispatchItem(id=job.id, attempts=job.attempts)]) == 1
    return job


def _set(engine: Engine, job: Job, assignments: str) -> None:
    with engine.connect() as conn:
        conn.execute(text(f"UPDATE jobs SET {assignments} WHERE id = :id"), {"id": job.id})
        conn.commit()


def _delivery(engine: Engine, job: Job) -> tuple[object, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT state, undelivered_since, delivery_failures, dispatched_at, "
            "EXTRACT(EPOCH FROM not_before - now()) FROM jobs WHERE id = :id"
        ), {"id": job.id}).one())


def test_a_delivery_failure_sends_the_job_back_with_a_growing_delay(
    store: JobStore, engine: Engine
) -> None:
    job = _dispatched(store)  # base 30 s, cap 900 s (the defaults)
    delays = []
    for n in range(1, 8):
        moved = store.delivery_failed(job.id, 0, message_id=f"m-{n}")
        assert moved == DeliveryFailure(job.id, JobState.PENDING, "alice", n)
        state, since, failures, dispatched_at, wait_s = _delivery(engine, job)
        assert (state, failures, dispatched_at) == ("PENDING", n, None)
        assert since == job.created_at  # when it became due, kept across the re-dispatches
        bound = min(900.0, 30.0 * 2 ** (n - 1))
        assert bound / 2 - 1 <= float(wait_s) <= bound  # jittered in [1/2, 1] of the step
        delays.append(store.events("alice", job.id)[-1].details["delay_s"])
        assert store.take_due_for_dispatch(10) == []  # not before its delay
        _set(engine, job, "not_before = now(), dispatched_at = now()")  # its delay ran out
    assert delays[-1] <= 900 and max(delays) > 30
    event = store.events("alice", job.id)[-1]
    assert (event.reason, event.from_state, event.to_state, event.attempt) == (
        "delivery-failed", JobState.PENDING, JobState.PENDING, 0)
    assert event.details["message_id"] == "m-7" and event.details["delivery_failures"] == 7
    shown = store.get("alice", job.id)
    assert shown.state is JobState.PENDING and shown.result is None
    # Its next dispatch gets through: the claim starts the count afresh.
    claimed = store.claim(job.id).job
    assert claimed is not None and claimed.attempts == 1
    assert _delivery(engine, job)[1:3] == (None, 0)


def test_past_the_delivery_budget_the_job_is_undeliverable(
    store: JobStore, engine: Engine
) -> None:
    job = _dispatched(store)
    store.delivery_failed(job.id, 0, message_id="m-1")
    _set(engine, job, "undelivered_since = now() - interval '6 hours 1 second', "
                      "not_before = now(), dispatched_at = now()")
    moved = store.delivery_failed(job.id, 0, message_id="m-2")
    assert moved == DeliveryFailure(job.id, JobState.FAILED, "alice", 2)
    failed = store.get("alice", job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 0
    assert failed.result is not None and failed.result.error_type == "Undeliverable"
    event = store.events("alice", job.id)[-1]
    assert (event.reason, event.from_state, event.to_state) == (
        "undeliverable", JobState.PENDING, JobState.FAILED)
    assert event.details["delivery_failures"] == 2 and "delay_s" not in event.details
    assert store.delivery_failed(job.id, 0, message_id="m-2") is None  # terminal: ignored
    # Visible and retryable; the retried job starts a fresh delivery budget.
    assert store.retry("alice", job.id).state is JobState.PENDING
    assert _delivery(engine, job)[1:3] == (None, 0)


def test_the_budget_counts_from_when_the_job_became_due(store: JobStore, engine: Engine) -> None:
    old = _dispatched(store)
    _set(engine, old, "created_at = now() - interval '7 hours', "
                      "updated_at = now() - interval '7 hours'")
    backoff = _dispatched(store)  # an old job whose retry's backoff ended a moment ago
    _set(engine, backoff, "created_at = now() - interval '7 hours', "
                          "not_before = now() - interval '1 second'")
    assert store.delivery_failed(old.id, 0).state is JobState.FAILED  # type: ignore[union-attr]
    assert store.delivery_failed(backoff.id, 0).state is JobState.PENDING  # type: ignore[union-attr]


def test_a_dead_letter_is_ignored_unless_it_is_for_the_outstanding_dispatch(
    store: JobStore, engine: Engine
) -> None:
    running = job_in_state(store, JobState.PROCESSING)
    _set(engine, running, "lease_expires_at = now() - interval '1 second'")
    assert store.delivery_failed(running.id, 0) is None  # ran: expired leases are the rescuer's
    assert store.delivery_failed(running.id, 1) is None
    assert [r[:2] for r in store.rescue_expired(5)] == [(running.id, JobState.PENDING)]
    moved_on = _dispatched(store)
    store.claim(moved_on.id)
    store.retry_later(moved_on.id, 1, "E", "m", delay=timedelta(0))
    store.mark_dispatched([DispatchItem(id=moved_on.id, attempts=1)])
    assert store.delivery_failed(moved_on.id, 0) is None  # older than the job's attempt
    assert store.delivery_failed(moved_on.id, 2) is None  # an attempt it never had
    undispatched, _ = store.create("alice", new_job())  # already in the re-dispatch queue
    assert store.delivery_failed(undispatched.id, 0) is None
    twice = _dispatched(store)
    assert store.delivery_failed(twice.id, 0) is not None
    assert store.delivery_failed(twice.id, 0) is None  # the same dispatch, dead-lettered twice
    assert store.delivery_failed(moved_on.id, 1) is not None
    assert store.delivery_failed(uuid4(), 0) is None


def test_stranded_jobs_are_told_from_a_busy_backlog(store: JobStore, engine: Engine) -> None:
    waiting = _dispatched(store)

    def stranded() -> list[object]:
        taken = store.take_stranded(10, 60)
        # Look, don't keep: taking stamps the job published now; put the old stamp back.
        _set(engine, waiting, "dispatched_at = now() - interval '10 minutes'")
        return [t.id for t in taken]

    assert store.take_stranded(10, 60) == []  # published a moment ago
    _set(engine, waiting, "dispatched_at = now() - interval '10 minutes'")
    assert stranded() == [waiting.id]  # and nothing ran since: the worker was down
    # A job that ran in the minute after that publish: the worker was alive, busy with others.
    done = job_in_state(store, JobState.COMPLETED)
    _set(engine, done, "started_at = now() - interval '9 minutes 30 seconds', "
                       "finished_at = now() - interval '9 minutes'")
    assert stranded() == []
    # A finish long after that minute, of a job started long after it, says nothing about it.
    _set(engine, done, "started_at = now() - interval '1 minute', finished_at = now()")
    assert stranded() == [waiting.id]
    # A job that started before the publish and still heartbeats: alive all along.
    running = job_in_state(store, JobState.PROCESSING)  # lease of 30 s, just set
    _set(engine, running, "started_at = now() - interval '11 minutes'")
    assert stranded() == []
    # ...but one whose last heartbeat came before the publish is a worker that died.
    _set(engine, running, "lease_expires_at = now() - interval '10 minutes 1 second' "
                          "+ interval '30 seconds'")
    assert store.take_stranded(10, 60) == [DispatchItem(id=waiting.id, attempts=0)]
    assert store.take_stranded(10, 60) == []  # stamped: not again for another minute


def test_a_pass_lock_is_held_by_one_pass_at_a_time(store: JobStore) -> None:
    first, second = store.sweep_lock(), store.sweep_lock()
    assert first.acquire() == "held"
    assert second.acquire() == "busy"
    first.release()
    first.release()  # twice is harmless
    assert second.acquire() == "held"
    second.release()


def test_purge_deletes_old_terminal_jobs_in_batches(store: JobStore, engine: Engine) -> None:
    for state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED) * 4:
        job_in_state(store, state)
    keep = [job_in_state(store, JobState.PENDING), job_in_state(store, JobState.PROCESSING)]
    assert store.purge_terminal(1, batch_size=5, max_batches=10) == 0  # none older than a day
    assert store.purge_terminal(0, batch_size=5, max_batches=2) == 10  # bounded: 2 batches
    assert store.purge_terminal(0, batch_size=5, max_batches=10) == 2
    jobs, events, results = table_counts(engine)
    assert jobs == len(keep)
    assert results == 0  # cascaded with their jobs
    assert events == sum(len(store.events("alice", j.id)) for j in keep)


def _plan(engine: Engine, sql: str, params: dict[str, object]) -> str:
    with engine.connect() as conn:
        # On an empty table every index costs about the same, and which one wins depends on
        # what earlier tests left in the statistics: plan on a table shaped like production
        # (mostly finished jobs, a few live ones), analysed.
        conn.execute(text(
            "INSERT INTO jobs (owner_id, preset, content, state, attempts, max_attempts, "
            "attempt_limit, finished_at) SELECT 'bulk-' || mod(g, 50), 'echo', 'x', "
            "'COMPLETED', 1, 5, 5, now() - mod(g, 1000) * interval '1 minute' "
            "FROM generate_series(1, 5000) g"))
        conn.execute(text(
            "INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit) "
            "SELECT 'bulk', 'echo', 'x', 5, 5 FROM generate_series(1, 20)"))
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET enable_seqscan = off"))  # tiny tables: ask what it *can* use
        rows = conn.execute(text("EXPLAIN " + sql), params).scalars().all()
        conn.execute(text("RESET enable_seqscan"))
    return "\n".join(rows)


@pytest.mark.parametrize(
    ("statement", "params", "index"),
    [
        (repo.SQL_TAKE_DISPATCH[False], {"limit": 10}, "ix_jobs_undispatched_due"),
        (repo.SQL_TAKE_DISPATCH[True], {"limit": 10, "stale_s": 60}, "ix_jobs_dispatched_pending"),
        (repo.SQL_EXPIRED, {"limit": 10}, "ix_jobs_lease_expiry"),
        (repo.SQL_RESCUE, {"limit": 10}, "ix_jobs_lease_expiry"),
        (repo.SQL_PURGE, {"days": 30, "batch": 10}, "ix_jobs_terminal_age"),
        *[(repo.SQL_TAKE_STRANDED, {"limit": 10, "stale_s": 60, "lease_s": 30}, ix) for ix in (
            "ix_jobs_dispatched_pending", "ix_jobs_lease_expiry", "ix_jobs_terminal_age")],
        (callers.SQL_LIST[(False, False)], {"owner_id": "a", "limit": 5}, "Merge Append"),
        (
            callers.SQL_LIST[(True, True)],
            {
                "owner_id": "a",
                "state": "PENDING",
                "limit": 5,
                "c_created": "2026-01-01T00:00:00+00:00",
                "c_id": "00000000-0000-0000-0000-000000000000",
            },
            "ix_jobs_owner_state_created",
        ),
    ],
    ids=["undispatched", "stale-dispatch", "expired", "rescue", "purge", "stranded",
         "stranded-running", "stranded-finished", "list", "list-state"],
)
def test_queries_use_their_indexes(
    store: JobStore, engine: Engine, statement: object, params: dict[str, object], index: str
) -> None:
    plan = _plan(engine, str(statement), params)
    assert index in plan, plan


def test_an_unfiltered_list_merges_one_short_scan_per_state(
    store: JobStore, engine: Engine
) -> None:
    """No second owner index: each state's newest rows come from the owner/state index,
    backwards, each scan stopped at the page size, and are merged; nothing reads the owner's
    whole history."""
    plan = _plan(engine, str(callers.SQL_LIST[(False, True)]), {
        "owner_id": "a", "limit": 5, "c_created": "2026-01-01T00:00:00+00:00",
        "c_id": "00000000-0000-0000-0000-000000000000"})
    scans = [line for line in plan.splitlines() if "ix_jobs_owner_state_created" in line]
    assert len(scans) == len(JobState) and all("Backward" in line for line in scans), plan
    assert "Merge Append" in plan and "Seq Scan" not in plan, plan
