"""Another owner's job is invisible: every scoped call answers exactly as for a missing job."""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, text

from common.store.errors import JobNotFound
from common.store.job_store import JobStore
from common.store.states import JobState
from localstack.postgres import PostgresServer, migrate
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


OLD_OWNERS = {
    "109876543210987654321": "google:109876543210987654321",  # Google's subjects: 21 digits
    "123456789012345": "google:123456789012345",  # the rule's edge: 15 digits
    "12345678901234": "hs256:12345678901234",  # 14 digits: a service's own numbering
    "alice": "hs256:alice",
    "hs256:bob": "hs256:hs256:bob",  # a bare sub that looked namespaced stays distinct
}


def test_migration_0006_namespaces_existing_owners_and_reverses(
    pg_server: PostgresServer,
) -> None:
    name = pg_server.create_database("jobs_owner_namespaces")
    url = pg_server.url(name)
    engine = create_engine(url)
    try:
        migrate(url, "0003")
        with engine.begin() as conn:
            for owner in OLD_OWNERS:
                conn.execute(
                    text("INSERT INTO jobs (owner_id, preset, content, max_attempts, "
                         "attempt_limit, idempotency_key, request_hash) "
                         "VALUES (:o, 'echo', 'x', 1, 1, 'k', 'h')"),
                    {"o": owner},
                )
        migrate(url, "0006")
        with engine.connect() as conn:
            owners = set(conn.execute(text("SELECT owner_id FROM jobs")).scalars())
        assert owners == set(OLD_OWNERS.values())
        migrate(url, "0003", down=True)
        with engine.connect() as conn:
            owners = set(conn.execute(text("SELECT owner_id FROM jobs")).scalars())
        assert owners == set(OLD_OWNERS)
        # A google and an hs256 owner with one subject and one key cannot be merged back.
        migrate(url, "0006")
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET owner_id = 'hs256:alice2' "
                              "WHERE owner_id = 'hs256:alice'"))
            conn.execute(text("INSERT INTO jobs (owner_id, preset, content, max_attempts, "
                              "attempt_limit, idempotency_key, request_hash) VALUES "
                              "('google:alice2', 'echo', 'x', 1, 1, 'k', 'h')"))
        with pytest.raises(Exception, match="cannot downgrade 0006"):
            migrate(url, "0003", down=True)
    finally:
        engine.dispose()
        pg_server.drop_database(name)
