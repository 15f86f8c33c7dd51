"""A database that goes away gives the typed DatabaseUnavailable (callers answer 503 or let
Pub/Sub redeliver), never a raw driver error, and the pool recovers by itself."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from common.db import create_engine_from_settings
from common.errors import DatabaseUnavailable
from common.repository import JobStore
from common.settings import Settings
from tests.jobs_helpers import new_job
from tests.support.postgres import free_port


def _terminate_store_connections(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = 'jobs-pipeline'"
                )
            ).scalar_one()
        )


def _store(settings: Settings, **overrides: object) -> tuple[JobStore, Engine]:
    tuned = settings.model_copy(update=overrides)
    engine = create_engine_from_settings(tuned, pool_size=1, max_overflow=0)
    return JobStore(engine, tuned, presets=None), engine


def test_pre_ping_replaces_a_terminated_connection(
    store: JobStore, settings: Settings, engine: Engine
) -> None:
    mine, own_engine = _store(settings)
    try:
        job, _ = mine.create("alice", new_job())
        assert _terminate_store_connections(engine) >= 1
        assert mine.get("alice", job.id).id == job.id  # no error reaches the caller
    finally:
        own_engine.dispose()


def test_without_pre_ping_one_call_fails_typed_then_the_pool_recovers(
    store: JobStore, settings: Settings, engine: Engine
) -> None:
    mine, own_engine = _store(settings, db_pool_pre_ping=False)
    try:
        job, _ = mine.create("alice", new_job())
        _terminate_store_connections(engine)
        with pytest.raises(DatabaseUnavailable):
            mine.get("alice", job.id)
        assert mine.get("alice", job.id).id == job.id
    finally:
        own_engine.dispose()


def test_unreachable_server_is_typed(settings: Settings) -> None:
    url = f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/nothing"
    mine, own_engine = _store(settings, database_url=url, db_connect_timeout_s=2)
    try:
        with pytest.raises(DatabaseUnavailable):
            mine.create("alice", new_job())
    finally:
        own_engine.dispose()


def test_statement_timeout_is_typed_and_writes_nothing(
    store: JobStore, settings: Settings, engine: Engine
) -> None:
    job, _ = store.create("alice", new_job())
    mine, own_engine = _store(settings, db_statement_timeout_ms=300)
    locked, release = threading.Event(), threading.Event()

    def hold_row_lock() -> None:
        with engine.connect() as conn:
            conn.execute(text("BEGIN"))
            conn.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": job.id})
            locked.set()
            release.wait(10)
            conn.execute(text("ROLLBACK"))

    holder = threading.Thread(target=hold_row_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(DatabaseUnavailable):
            mine.claim(job.id)  # blocks on the lock until the statement timeout fires
    finally:
        release.set()
        holder.join()
        own_engine.dispose()
    assert store.get("alice", job.id).attempts == 0
    assert store.claim(job.id).reason == "claimed"
