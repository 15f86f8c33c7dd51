"""The batched claim and exit (issue 30) against real PostgreSQL: each member gets what it would
get alone, guarded per row by state and attempt, in one statement per batch."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from common.store.errors import DatabaseUnavailable, IllegalTransition, JobNotFound, StaleAttempt
from common.store.job_store import JobStore
from common.store.states import JobState
from common.store.worker_moves import Progress
from tests.jobs_helpers import job_in_state, new_job


def test_a_batch_claims_each_due_job_once_and_says_why_it_skips_the_rest(
        store: JobStore) -> None:
    due = [store.create("alice", new_job())[0] for _ in range(3)]
    done = job_in_state(store, JobState.COMPLETED)
    running = job_in_state(store, JobState.PROCESSING)
    later = store.create("alice", new_job(delay_s=3600))[0]
    missing = uuid4()
    asked = [(j.id, 0) for j in due] + [(due[0].id, 0), (done.id, 1), (running.id, 1),
                                        (due[1].id, 7), (later.id, 0), (missing, 0)]
    outcomes = store.claim_many(asked)
    assert [o.reason if o else None for o in outcomes] == [
        "claimed", "claimed", "claimed",
        None,  # a second request for a job in the batch: the single claim answers it
        "terminal", "in-progress",
        None,  # due[1] asked again (for attempt 7): the single claim answers it
        None,  # not due: the single claim says so
        "not-found"]
    claimed = [o.job for o in outcomes[:3] if o and o.job]
    assert [(j.id, j.state, j.attempts) for j in claimed] == [
        (j.id, JobState.PROCESSING, 1) for j in due]
    assert all(j.lease_expires_at is not None for j in claimed)
    assert store.claim(due[0].id, expected_attempts=0).reason == "in-progress"
    assert store.claim(later.id, expected_attempts=0).reason == "not-due"
    for job in due:
        assert [e.reason for e in store.events("alice", job.id)] == ["created", "claimed"]


def test_a_batch_leaves_jobs_under_a_limit_to_the_single_claim(store: JobStore) -> None:
    store.set_owner_limit("bob", 1)
    store.set_key_limit("alice", "gpu", max_running=1)
    bobs = store.create("bob", new_job())[0]
    keyed = store.create("alice", new_job(limit_key="gpu"))[0]
    free = store.create("alice", new_job())[0]
    outcomes = store.claim_many([(bobs.id, 0), (keyed.id, 0), (free.id, 0)])
    assert [o.reason if o else None for o in outcomes] == [None, None, "claimed"]
    assert store.get("bob", bobs.id).state is JobState.PENDING
    assert store.claim(bobs.id, expected_attempts=0).reason == "claimed"  # and takes the slot
    assert store.claim(keyed.id, expected_attempts=0).reason == "claimed"


def test_a_batch_of_exits_writes_each_fenced_by_its_attempt(store: JobStore) -> None:
    jobs = [job_in_state(store, JobState.PROCESSING) for _ in range(5)]
    store.cancel("alice", jobs[3].id)
    requests = [
        store.complete_request(jobs[0].id, 1, {"n": 0}, duration_ms=5),
        store.fail_request(jobs[1].id, 1, "ValueError", "bad", duration_ms=6),
        store.retry_later_request(jobs[2].id, 1, "Timeout", "slow", delay=timedelta(seconds=30)),
        store.complete_request(jobs[3].id, 1, {"n": 3}),  # a cancel was asked: CANCELLED
        store.complete_request(jobs[4].id, 2, {"n": 4}),  # not its attempt: refused
        store.complete_request(uuid4(), 1, None),
    ]
    moves = store.exit_many(requests)
    states = [m.state if not isinstance(m, Exception) else type(m) for m in moves]
    assert states == [JobState.COMPLETED, JobState.FAILED, JobState.PENDING, JobState.CANCELLED,
                      StaleAttempt, JobNotFound]
    assert store.get("alice", jobs[0].id).result.output == {"n": 0}  # type: ignore[union-attr]
    failed = store.get("alice", jobs[1].id).result
    assert failed is not None and (failed.error_type, failed.duration_ms) == ("ValueError", 6)
    assert store.get("alice", jobs[2].id).not_before is not None
    assert store.get("alice", jobs[4].id).state is JobState.PROCESSING
    trails = [[e.reason for e in store.events("alice", j.id)] for j in jobs]
    assert trails[:4] == [["created", "claimed", "completed"], ["created", "claimed", "failed"],
                          ["created", "claimed", "retry-scheduled"],
                          ["created", "claimed", "cancel-requested", "cancelled"]]
    again = store.exit_many(requests[:1])  # a redelivered exit: fenced, nothing written twice
    assert isinstance(again[0], IllegalTransition)


def test_a_batch_of_exits_keeps_texts_that_read_null(store: JobStore) -> None:
    """The batch goes as one JSON array: a text `null` stays a text (an array parameter per
    column would have read it as SQL NULL), and a handler's None output stays JSON null."""
    jobs = [job_in_state(store, JobState.PROCESSING) for _ in range(3)]
    moves = store.exit_many([
        store.fail_request(jobs[0].id, 1, "null", "NULL"),
        store.complete_request(jobs[1].id, 1, None, progress=Progress(1.0, "null")),
        store.complete_request(jobs[2].id, 1, "null"),
    ])
    assert [m.state for m in moves if not isinstance(m, Exception)] == [
        JobState.FAILED, JobState.COMPLETED, JobState.COMPLETED]
    failed = store.get("alice", jobs[0].id).result
    assert failed is not None and (failed.error_type, failed.error_message) == ("null", "NULL")
    assert store.get("alice", jobs[1].id).progress_note == "null"
    assert store.get("alice", jobs[2].id).result.output == "null"  # type: ignore[union-attr]


def test_a_deadlock_is_the_database_briefly_away_not_a_refusal(store: JobStore) -> None:
    """SQLSTATE 40P01 (or 40001) rolled the statement back: DatabaseUnavailable, which the
    worker retries (an exit) or answers 503 (a claim), and the connection stays pooled."""
    store._rows("CREATE OR REPLACE FUNCTION raise_deadlock() RETURNS int LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'cycle' USING ERRCODE = '40P01'; END $$")
    try:
        with pytest.raises(DatabaseUnavailable):
            store._rows("SELECT raise_deadlock() AS x")
        assert store._rows("SELECT 1 AS ok") == [{"ok": 1}]
    finally:
        store._rows("DROP FUNCTION raise_deadlock()")
