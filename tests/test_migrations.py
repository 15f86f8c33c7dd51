"""The schema exists only through Alembic: up, down to nothing, and up again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect

from localstack.postgres import PostgresServer, migrate


@pytest.fixture()
def scratch_url(pg_server: PostgresServer) -> Iterator[str]:
    name = pg_server.create_database("jobs_migrations")
    yield pg_server.url(name)
    pg_server.drop_database(name)


def _shape(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables = set(insp.get_table_names())
        indexes = {ix["name"] for t in tables for ix in insp.get_indexes(t) if ix["name"]}
    finally:
        engine.dispose()
    return tables, indexes


def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    migrate(scratch_url)
    tables, indexes = _shape(scratch_url)
    assert {
        "jobs", "job_events", "job_results", "poison_messages", "chaos_runs", "alembic_version",
        "schedules", "schedule_events", "owner_limits", "owner_running",
    } <= tables
    assert {
        "ix_jobs_owner_created",
        "ix_jobs_owner_state_created",
        "uq_jobs_owner_idempotency_key",
        "ix_jobs_lease_expiry",
        "ix_jobs_undispatched_due",
        "ix_jobs_dispatched_pending",
        "ix_jobs_terminal_age",
        "ix_poison_messages_received",
        "ix_chaos_runs_job",
        "ix_schedules_due",
        "uq_schedule_events_fire",
        "uq_jobs_schedule_fire",
        "ix_jobs_deferred",
    } <= indexes
    migrate(scratch_url, "base", down=True)
    assert _shape(scratch_url)[0] <= {"alembic_version"}
    migrate(scratch_url)
    assert _shape(scratch_url)[1] == indexes
