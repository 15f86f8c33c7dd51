"""Fencing: a worker whose lease was taken over can never overwrite a newer attempt."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from common.store.errors import IllegalTransition, StaleAttempt
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import new_job, snapshot


def _expired_claim(store: JobStore, **kw: object) -> tuple[object, int]:
    job, _ = store.create("alice", new_job(**kw))
    claimed = store.claim(job.id, lease_s=0.05).job
    assert claimed is not None
    time.sleep(0.1)  # let the lease lapse; nothing here measures time
    return job.id, claimed.attempts


def test_late_worker_cannot_complete_after_takeover(store: JobStore, engine: Engine) -> None:
    job_id, old_attempt = _expired_claim(store)
    assert [r[:2] for r in store.rescue_expired(10)] == [(job_id, JobState.PENDING)]
    new = store.claim(job_id).job  # type: ignore[arg-type]
    assert new is not None and new.attempts == old_attempt + 1
    before = snapshot(engine, new)
    for late_write in (
        lambda: store.complete(new.id, old_attempt, {"stale": True}),
        lambda: store.fail(new.id, old_attempt, "E", "stale"),
        lambda: store.retry_later(new.id, old_attempt, "E", "stale", delay=timedelta(0)),
        lambda: store.confirm_cancel(new.id, old_attempt),
        lambda: store.extend_lease(new.id, old_attempt),
    ):
        with pytest.raises(StaleAttempt) as err:
            late_write()
        assert (err.value.held, err.value.current) == (old_attempt, new.attempts)
    assert snapshot(engine, new) == before
    done = store.complete(new.id, new.attempts, {"fresh": True})
    assert done.state is JobState.COMPLETED
    result = store.get("alice", new.id).result
    assert result is not None and result.output == {"fresh": True}


def test_late_worker_after_rescue_but_before_reclaim_is_refused(store: JobStore) -> None:
    job_id, attempt = _expired_claim(store)
    store.rescue_expired(10)
    with pytest.raises(IllegalTransition) as err:
        store.complete(job_id, attempt, {"late": True})  # type: ignore[arg-type]
    assert err.value.state == "PENDING"


def test_rescue_of_last_attempt_fails_the_job_after_its_one_grace(store: JobStore) -> None:
    """A lease lost on the last attempt may be our side's fault (a database blip on the final
    write), so the first such rescue gives one more attempt; the second ends the job FAILED."""
    job_id, _ = _expired_claim(store, max_attempts=1)
    assert [r[:2] for r in store.rescue_expired(10)] == [(job_id, JobState.PENDING)]
    again = store.claim(job_id, lease_s=0.05).job  # type: ignore[arg-type]
    assert again is not None and again.attempts == 2
    time.sleep(0.1)  # let the lease lapse; nothing here measures time
    assert [r[:2] for r in store.rescue_expired(10)] == [(job_id, JobState.FAILED)]
    job = store.get("alice", job_id)  # type: ignore[arg-type]
    assert job.result is not None and job.result.error_type == "LeaseExpired"
    assert store.events("alice", job_id)[-1].reason == "lease-expired"  # type: ignore[arg-type]


def test_rescue_leaves_live_leases_alone(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id, lease_s=60)
    assert store.rescue_expired(10) == []
    assert store.find_expired_leases(10) == []


def test_heartbeat_keeps_the_lease(store: JobStore) -> None:
    job, _ = store.create("alice", new_job())
    store.claim(job.id, lease_s=0.05)
    assert store.extend_lease(job.id, 1, lease_s=60) is False
    time.sleep(0.1)
    assert store.rescue_expired(10) == []
