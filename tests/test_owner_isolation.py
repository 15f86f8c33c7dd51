"""Another owner's job is invisible: every scoped call answers exactly as for a missing job."""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import Engine

from common.store.errors import JobNotFound
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import job_in_state, snapshot


@pytest.mark.parametrize("state", list(JobState))
def test_foreign_job_is_indistinguishable_from_a_missing_one(
    store: JobStore, engine: Engine, state: JobState
) -> None:
    job = job_in_state(store, state, owner="alice")
    before = snapshot(engine, job)
    for call in (store.get, store.events, store.cancel, store.retry):
        with pytest.raises(JobNotFound) as foreign:
            call("mallory", job.id)
        with pytest.raises(JobNotFound) as missing:
            call("mallory", uuid4())
        assert type(foreign.value) is type(missing.value)
    assert snapshot(engine, job) == before
    assert store.list_jobs("mallory").jobs == []
    assert store.list_jobs("mallory", state=state).jobs == []


def test_cursor_from_one_owner_shows_nothing_of_theirs_to_another(store: JobStore) -> None:
    for _ in range(3):
        job_in_state(store, JobState.PENDING, owner="alice")
    page = store.list_jobs("alice", limit=1)
    assert page.next_cursor is not None
    assert store.list_jobs("mallory", cursor=page.next_cursor).jobs == []
