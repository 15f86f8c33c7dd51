"""A database that goes away gives the typed DatabaseUnavailable (callers answer 503 or let
Pub/Sub redeliver), never a raw driver error, and the pool recovers by itself."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text

from common.settings import Settings
from common.store.engine import create_engine_from_settings
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from localstack.postgres import free_port
from tests.jobs_helpers import new_job


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


@pytest.mark.parametrize("idle_s", [0.0, 0.2])
def test_pre_ping_replaces_a_connection_terminated_while_idle(
    store: JobStore, settings: Settings, engine: Engine, idle_s: float
) -> None:
    mine, own_engine = _store(settings, db_ping_idle_s=idle_s)
    try:
        job, _ = mine.create("alice", new_job())
        assert _terminate_store_connections(engine) >= 1
        time.sleep(idle_s + 0.1)  # idle past the threshold: pinged before use, and replaced
        assert mine.get("alice", job.id).id == job.id  # no error reaches the caller
    finally:
        own_engine.dispose()


@pytest.mark.parametrize(
    "overrides",
    [{"db_pool_pre_ping": False}, {"db_ping_idle_s": 5.0}],
    ids=["no pre-ping", "used moments ago, so trusted"],
)
def test_one_call_fails_typed_then_the_pool_recovers(
    store: JobStore, settings: Settings, engine: Engine, overrides: dict[str, object]
) -> None:
    mine, own_engine = _store(settings, **overrides)
    try:
        job, _ = mine.create("alice", new_job())
        _terminate_store_connections(engine)
        with pytest.raises(DatabaseUnavailable):
            mine.get("alice", job.id)
        assert mine.get("alice", job.id).id == job.id
    finally:
        own_engine.dispose()


def test_one_dead_connection_gets_its_siblings_pinged(
    store: JobStore, settings: Settings, engine: Engine
) -> None:
    """A failover drops every connection at once: after the first failure, the pool's other
    connections are pinged before use instead of failing one call each."""
    tuned = settings.model_copy(update={"db_ping_idle_s": 60.0})
    own_engine = create_engine_from_settings(tuned, pool_size=3, max_overflow=0)
    mine = JobStore(own_engine, tuned)
    try:
        job, _ = mine.create("alice", new_job())
        held = [own_engine.connect() for _ in range(3)]  # three pooled connections, all fresh
        for conn in held:
            conn.close()
        assert _terminate_store_connections(engine) >= 3
        with pytest.raises(DatabaseUnavailable):
            mine.get("alice", job.id)
        for _ in range(5):  # every later call succeeds, whichever connection it gets
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
