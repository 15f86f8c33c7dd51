"""The store's maintenance operations (used by sweep), and the indexes that keep them cheap."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from common.store import callers
from common.store import maintenance_queries as repo
from common.store.job_store import JobStore
from common.store.models import DispatchItem
from common.store.states import JobState
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


def test_dead_letter_fails_pending_job_once(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    moved = store.dead_letter(job.id, 1, message_id="m-1")
    assert moved is not None and moved.state is JobState.FAILED
    assert store.dead_letter(job.id, 1, message_id="m-1") is None  # idempotent
    shown = store.get("alice", job.id)
    assert shown.result is not None and shown.result.error_type == "DeadLettered"
    event = store.events("alice", job.id)[-1]
    assert (event.reason, event.details) == ("dead-lettered", {"message_id": "m-1"})
    assert (event.from_state, event.to_state) == (JobState.PENDING, JobState.FAILED)
    assert store.retry("alice", job.id).state is JobState.PENDING  # visible and retryable


def test_dead_letter_spares_a_live_attempt_and_a_newer_one(store: JobStore) -> None:
    running = job_in_state(store, JobState.PROCESSING)
    assert store.dead_letter(running.id, 1) is None  # live lease: a worker has it
    job, _ = store.create("alice", new_job())
    store.claim(job.id)
    store.retry_later(job.id, 1, "E", "m", delay=timedelta(0))
    store.claim(job.id)
    store.retry_later(job.id, 2, "E", "m", delay=timedelta(0))
    assert store.dead_letter(job.id, 1) is None  # the message is older than the job's attempt
    assert store.dead_letter(job.id, 3) is not None


def test_dead_letter_of_an_expired_run_records_where_it_came_from(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id, lease_s=0.05)
    time.sleep(0.1)
    moved = store.dead_letter(job.id, 1)
    assert moved is not None and moved.state is JobState.FAILED
    event = store.events("alice", job.id)[-1]
    assert (event.from_state, event.to_state, event.attempt) == (
        JobState.PROCESSING,
        JobState.FAILED,
        1,
    )


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
        (callers.SQL_LIST[(False, False)], {"owner_id": "a", "limit": 5}, "ix_jobs_owner_created"),
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
    ids=["undispatched", "stale-dispatch", "expired", "rescue", "purge", "list", "list-state"],
)
def test_queries_use_their_indexes(
    store: JobStore, engine: Engine, statement: object, params: dict[str, object], index: str
) -> None:
    plan = _plan(engine, str(statement), params)
    assert index in plan, plan
