"""Each repository operation against real PostgreSQL, through its public API."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest
from sqlalchemy import Engine

from common.store.errors import IdempotencyConflict, InvalidCursor, InvalidInput, JobNotFound
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.conftest import table_counts
from tests.jobs_helpers import job_in_state, new_job


def test_create_commits_job_and_its_created_event(store: JobStore) -> None:
    job, created = store.create("alice", new_job(metadata={"k": [1, 2]}, max_attempts=3))
    assert created
    assert job.state is JobState.PENDING
    assert (job.attempts, job.max_attempts, job.attempt_limit) == (0, 3, 3)
    assert job.metadata == {"k": [1, 2]}
    assert job.dispatched_at is None and job.lease_expires_at is None
    events = store.events("alice", job.id)
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        (None, JobState.PENDING, "created")
    ]


def test_default_max_attempts_comes_from_settings(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    assert job.max_attempts == 5


def test_idempotent_replay_returns_the_same_job(store: JobStore, engine: Engine) -> None:
    first, created = store.create("alice", new_job(idempotency_key="order-42"))
    again, created_again = store.create("alice", new_job(idempotency_key="order-42"))
    assert created and not created_again
    assert again.id == first.id
    assert table_counts(engine)[:2] == (1, 1)


def test_same_key_different_request_is_a_conflict(store: JobStore, engine: Engine) -> None:
    first, _ = store.create("alice", new_job(idempotency_key="k"))
    with pytest.raises(IdempotencyConflict) as err:
        store.create("alice", new_job(idempotency_key="k", content="other"))
    assert err.value.existing_job_id == first.id
    assert table_counts(engine)[:2] == (1, 1)


def test_idempotency_keys_are_per_owner(store: JobStore) -> None:
    a, _ = store.create("alice", new_job(idempotency_key="k"))
    b, created = store.create("bob", new_job(idempotency_key="k", content="different"))
    assert created and a.id != b.id


def test_claim_complete_writes_one_result(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    outcome = store.claim(job.id)
    assert outcome.reason == "claimed" and outcome.job is not None
    running = outcome.job
    assert running.state is JobState.PROCESSING and running.attempts == 1
    assert running.lease_expires_at is not None and running.started_at is not None
    done = store.complete(job.id, 1, {"echo": "hello"}, duration_ms=7)
    assert (done.id, done.state, done.attempts) == (job.id, JobState.COMPLETED, 1)
    assert done.finished_at is not None and done.not_before is None
    shown = store.get("alice", job.id)
    assert shown.result is not None
    assert (shown.result.status, shown.result.output, shown.result.duration_ms) == (
        "succeeded",
        {"echo": "hello"},
        7,
    )
    assert [e.reason for e in store.events("alice", job.id)] == ["created", "claimed", "completed"]


def test_claim_outcomes_explain_refusals(store: JobStore) -> None:
    assert store.claim(uuid4()).reason == "not-found"
    running = job_in_state(store, JobState.PROCESSING)
    assert store.claim(running.id).reason == "in-progress"
    done = job_in_state(store, JobState.COMPLETED)
    assert store.claim(done.id).reason == "terminal"
    pending, _ = store.create("alice", new_job())
    assert store.claim(pending.id, expected_attempts=3).reason == "stale-message"
    assert store.claim(pending.id, expected_attempts=0).reason == "claimed"


def test_permanent_failure_fails_at_once(store: JobStore) -> None:
    running = job_in_state(store, JobState.PROCESSING, max_attempts=5)
    failed = store.fail(running.id, 1, "ValueError", "bad content")
    assert failed.state is JobState.FAILED
    result = store.get("alice", running.id).result
    assert result is not None
    assert (result.status, result.error_type, result.error_message) == (
        "failed",
        "ValueError",
        "bad content",
    )
    assert store.events("alice", running.id)[-1].reason == "failed"


def test_retry_later_sets_backoff_then_exhausts(store: JobStore) -> None:
    job, _ = store.create("alice", new_job(max_attempts=2))
    first = store.claim(job.id).job
    assert first is not None
    waiting = store.retry_later(job.id, 1, "Timeout", "slow", delay=timedelta(hours=1))
    assert waiting.state is JobState.PENDING and waiting.not_before is not None
    assert waiting.finished_at is None
    assert waiting.not_before > store.get("alice", job.id).updated_at + timedelta(minutes=59)
    assert store.claim(job.id).reason == "not-due"  # backoff is honoured
    assert store.take_due_for_dispatch(10) == []  # and not dispatched before it is due

    due, _ = store.create("alice", new_job(max_attempts=2))
    store.claim(due.id)
    store.retry_later(due.id, 1, "Timeout", "slow", delay=timedelta(0))
    second = store.claim(due.id).job
    assert second is not None and second.attempts == 2
    final = store.retry_later(due.id, 2, "Timeout", "slow again", delay=timedelta(0))
    assert final.state is JobState.FAILED
    reasons = [e.reason for e in store.events("alice", due.id)]
    assert reasons == ["created", "claimed", "retry-scheduled", "claimed", "attempts-exhausted"]
    result = store.get("alice", due.id).result
    assert result is not None and result.error_message == "slow again"


def test_error_details_are_kept_on_every_attempt(store: JobStore) -> None:
    job, _ = store.create("alice", new_job(max_attempts=3))
    store.claim(job.id)
    store.retry_later(job.id, 1, "IOError", "x" * 5000, delay=timedelta(0))
    event = store.events("alice", job.id)[-1]
    assert event.details["error_type"] == "IOError"
    assert len(event.details["error_message"]) == 2000  # bounded


def test_cancel_pending_is_immediate(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    cancelled = store.cancel("alice", job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    assert store.claim(job.id).reason == "terminal"


def test_cancel_processing_requests_and_worker_outcome_becomes_cancelled(store: JobStore) -> None:
    running = job_in_state(store, JobState.PROCESSING)
    flagged = store.cancel("alice", running.id)
    assert flagged.state is JobState.PROCESSING and flagged.cancel_requested
    assert store.extend_lease(running.id, 1) is True  # the handler can see the flag
    ended = store.complete(running.id, 1, {"too": "late"})
    assert ended.state is JobState.CANCELLED
    assert store.get("alice", running.id).result is None  # no result for a cancelled job
    reasons = [e.reason for e in store.events("alice", running.id)]
    assert reasons == ["created", "claimed", "cancel-requested", "cancelled"]


def test_confirm_cancel(store: JobStore) -> None:
    running = job_in_state(store, JobState.PROCESSING)
    store.cancel("alice", running.id)
    assert store.confirm_cancel(running.id, 1).state is JobState.CANCELLED


def test_retry_from_failed_gives_fresh_attempts_without_reusing_numbers(store: JobStore) -> None:
    failed = job_in_state(store, JobState.FAILED, max_attempts=2)
    again = store.retry("alice", failed.id)
    assert again.state is JobState.PENDING
    assert (again.attempts, again.attempt_limit) == (1, 3)
    assert store.get("alice", failed.id).result is None
    event = store.events("alice", failed.id)[-1]
    assert event.reason == "retried" and event.details["previous_error_type"] == "Broken"
    claimed = store.claim(failed.id).job
    assert claimed is not None and claimed.attempts == 2  # never attempt 1 again


def test_list_is_newest_first_with_keyset_pages(store: JobStore) -> None:
    made = [store.create("alice", new_job(content=str(i)))[0] for i in range(7)]
    store.create("bob", new_job())
    seen, cursor = [], None
    while True:
        page = store.list_jobs("alice", limit=3, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [j.id for j in reversed(made)]


def test_list_filters_by_state(store: JobStore) -> None:
    job_in_state(store, JobState.COMPLETED)
    pending = job_in_state(store, JobState.PENDING)
    page = store.list_jobs("alice", state="PENDING")
    assert [j.id for j in page.jobs] == [pending.id]
    assert page.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "%%%", "bm90IGpzb24", "WzEsMl0", "x" * 500])
def test_malformed_cursor_is_a_typed_error(store: JobStore, cursor: str) -> None:
    if cursor == "":
        assert store.list_jobs("alice", cursor=cursor).jobs == []
        return
    with pytest.raises(InvalidCursor):
        store.list_jobs("alice", cursor=cursor)


@pytest.mark.parametrize("state", ["pending", "DONE", "", "PENDING'--"])
def test_bad_state_filter_is_a_typed_error(store: JobStore, state: str) -> None:
    with pytest.raises(InvalidInput) as err:
        store.list_jobs("alice", state=state)
    assert err.value.field == "state"


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_bad_limit_is_a_typed_error(store: JobStore, limit: int) -> None:
    with pytest.raises(InvalidInput):
        store.list_jobs("alice", limit=limit)


@pytest.mark.parametrize("job_id", ["nope", "123", "' OR 1=1 --", "0" * 40])
def test_ids_that_are_not_uuids_are_typed_errors(store: JobStore, job_id: str) -> None:
    for call in (store.get, store.events, store.cancel, store.retry):
        with pytest.raises(InvalidInput):
            call("alice", job_id)


def test_missing_job_is_not_found(store: JobStore) -> None:
    for call in (store.get, store.events, store.cancel, store.retry):
        with pytest.raises(JobNotFound):
            call("alice", uuid4())


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ({"a": "x\x00y"}, "at $.a: a string contains NUL"),
        ({"a": [{"k\x00": 1}]}, "at $.a[0]{key #0}: a key contains NUL"),
        (["\udfff"], "at $[0]: a string contains a lone surrogate"),
        ({"n": float("inf")}, "at $.n: a number that is not finite"),
        ({"b": b"bytes"}, "at $.b: a value of type bytes"),
    ],
)
def test_unstorable_output_is_a_typed_error_that_names_the_path(
    store: JobStore, engine: Engine, output: object, reason: str
) -> None:
    job = job_in_state(store, JobState.PROCESSING)
    before = table_counts(engine)
    with pytest.raises(InvalidInput) as err:
        store.complete(job.id, job.attempts, output)
    assert err.value.field == "output" and err.value.message.startswith(reason)
    assert "x\x00y" not in err.value.message and "bytes'" not in err.value.message
    assert table_counts(engine) == before
    assert store.get("alice", job.id).state is JobState.PROCESSING


def test_an_escaped_backslash_u0000_is_ordinary_text(store: JobStore) -> None:
    job = job_in_state(store, JobState.PROCESSING)
    store.complete(job.id, job.attempts, {"text": "\\u0000"})
    result = store.get("alice", job.id).result
    assert result is not None and result.output == {"text": "\\u0000"}


def test_error_text_is_made_storable(store: JobStore) -> None:
    job = job_in_state(store, JobState.PROCESSING)
    store.fail(job.id, job.attempts, "Bad\x00\ud800Type", "m\x00\udc00" + "z" * 5000)
    result = store.get("alice", job.id).result
    assert result is not None and result.error_type == "Bad\ufffdType"
    assert result.error_message == ("m\ufffd" + "z" * 5000)[:2000]
