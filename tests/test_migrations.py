"""The schema exists only through Alembic: up, down to nothing, and up again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text

from common.settings import Settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
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
        "jobs", "job_events", "poison_messages", "chaos_runs", "alembic_version",
        "schedules", "schedule_events", "owner_limits", "owner_running", "flow_limits",
    } <= tables
    assert {
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
        "ix_jobs_parked_owner",
        "ix_jobs_parked_preset",
        "ix_jobs_parked_key",
    } <= indexes
    assert "ix_jobs_owner_created" not in indexes  # dropped by 0010: one owner index
    migrate(scratch_url, "base", down=True)
    assert _shape(scratch_url)[0] <= {"alembic_version"}
    migrate(scratch_url)
    assert _shape(scratch_url)[1] == indexes


def test_lean_writes_keeps_every_trail_through_upgrade_and_downgrade(scratch_url: str) -> None:
    """0010 stops writing 'created' rows and derives the event from the job instead: a job
    created before it shows its created event once, a job created after it shows one too, and
    a downgrade turns the derived events back into rows (foreign keys restored)."""
    migrate(scratch_url, "0009")
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "WITH j AS (INSERT INTO jobs (owner_id, preset, content, max_attempts, "
                "attempt_limit) VALUES ('t:old', 'echo', 'x', 3, 3) RETURNING id, created_at) "
                "INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, at) "
                "SELECT id, NULL, 'PENDING', 'created', 0, created_at FROM j"))
        migrate(scratch_url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (owner_id, preset, content, max_attempts, "
                              "attempt_limit) VALUES ('t:new', 'echo', 'x', 3, 3)"))
            trail = conn.execute(text(
                "SELECT j.owner_id, e.reason, e.id FROM job_trail e JOIN jobs j ON j.id = e.job_id "
                "ORDER BY 1")).all()
            version = conn.execute(text("SELECT id FROM jobs WHERE owner_id = 't:new'")).scalar()
        assert [tuple(r) for r in trail] == [("t:new", "created", 0), ("t:old", "created", 0)]
        assert str(version)[14] == "7"  # a UUIDv7: time-ordered keys
        migrate(scratch_url, "0009", down=True)
        with engine.begin() as conn:
            rows = conn.execute(text(
                "SELECT j.owner_id, count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id "
                "WHERE e.reason = 'created' GROUP BY 1 ORDER BY 1")).all()
            fks = conn.execute(text(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid IN ('job_events'::regclass, 'job_results'::regclass)")).scalar()
        assert [tuple(r) for r in rows] == [("t:new", 1), ("t:old", 1)] and fks == 2
    finally:
        engine.dispose()


def test_lean_rows_move_results_and_traces_into_the_job_row_and_back(scratch_url: str) -> None:
    """0012 copies each result into its job's row and keeps old rows' text traces readable; the
    `job_results` view reads as the table did; a downgrade puts both back where they were."""
    migrate(scratch_url, "0011")
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "WITH j AS (INSERT INTO jobs (owner_id, preset, content, max_attempts, "
                "attempt_limit, state, attempts, finished_at, traceparent) VALUES ('t:old', "
                "'echo', 'x', 3, 3, 'FAILED', 1, now(), :t) RETURNING id) "
                "INSERT INTO job_results (job_id, status, error_type, error_message, duration_ms) "
                "SELECT id, 'failed', 'Boom', 'it broke', 7 FROM j"), {"t": trace})
        migrate(scratch_url)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit, "
                "trace) VALUES ('t:new', 'echo', 'x', 3, 3, traceparent_bytes(:t))"), {"t": trace})
            rows = conn.execute(text(
                "SELECT owner_id, COALESCE(traceparent_text(trace), traceparent), "
                "octet_length(trace) FROM jobs ORDER BY owner_id")).all()
            result = conn.execute(text(
                "SELECT status, error_type, error_message, duration_ms FROM job_results")).one()
            garbage = conn.execute(text("SELECT traceparent_bytes('00-zz')")).scalar()
        refused = pytest.raises(Exception, match="ck_jobs_result_only_when_ended")
        with refused, engine.begin() as conn:  # a PENDING job cannot carry a result
            conn.execute(text("UPDATE jobs SET result_output = '1' WHERE owner_id = 't:new'"))
        assert [tuple(r) for r in rows] == [("t:new", trace, 26), ("t:old", trace, None)]
        assert tuple(result) == ("failed", "Boom", "it broke", 7) and garbage is None
        migrate(scratch_url, "0011", down=True)
        with engine.begin() as conn:
            back = conn.execute(text(
                "SELECT j.owner_id, j.traceparent, r.error_type FROM jobs j "
                "LEFT JOIN job_results r ON r.job_id = j.id ORDER BY 1")).all()
        assert [tuple(r) for r in back] == [("t:new", trace, None), ("t:old", trace, "Boom")]
    finally:
        engine.dispose()


def test_claim_in_exit_shows_each_claim_once_through_upgrade_and_downgrade(
        scratch_url: str) -> None:
    """0023 stops writing 'claimed' rows: the event ending an attempt carries its claim time.
    A claim written by older code (its own row) shows once, whether its attempt ended before or
    after the upgrade; a job PROCESSING now shows its claim from its row; the downgrade writes
    every derived claim as a row, so the older view shows the same trail."""
    migrate(scratch_url, "0022")
    engine = create_engine(scratch_url)
    claim_old_style = (
        "WITH j AS (UPDATE jobs SET state = 'PROCESSING', attempts = attempts + 1, "
        "started_at = now(), lease_expires_at = now() + interval '1 minute' "
        "WHERE owner_id = :o RETURNING id, attempts) "
        "INSERT INTO job_events (job_id, from_state, to_state, reason, attempt) "
        "SELECT id, 'PENDING', 'PROCESSING', 'claimed', attempts FROM j")
    new_job = ("INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit) "
               "VALUES (:o, 'echo', 'x', 3, 3)")
    try:
        with engine.begin() as conn:
            for owner in ("t:old", "t:straddles"):
                conn.execute(text(new_job), {"o": owner})
                conn.execute(text(claim_old_style), {"o": owner})
        migrate(scratch_url)
        settings = Settings(database_url=scratch_url)
        store = JobStore(create_engine_from_settings(settings), settings)
        with engine.begin() as conn:
            conn.execute(text(new_job), {"o": "t:new"})
            conn.execute(text(new_job), {"o": "t:running"})
            ids = dict(conn.execute(text("SELECT owner_id, id FROM jobs")).all())
        for owner in ("t:new", "t:running"):
            assert store.claim(ids[owner]).reason == "claimed"
        for owner in ("t:straddles", "t:new"):
            store.complete(ids[owner], 1, {"ok": True})

        def trail(owner: str) -> list[str]:
            events = store.events(owner, ids[owner])
            assert [e.id for e in events] == sorted({e.id for e in events})  # unique, in order
            return [e.reason for e in events]

        expected = {"t:old": ["created", "claimed"], "t:running": ["created", "claimed"],
                    "t:straddles": ["created", "claimed", "completed"],
                    "t:new": ["created", "claimed", "completed"]}
        assert {owner: trail(owner) for owner in expected} == expected
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT count(*) FROM job_events WHERE reason = 'claimed'"))
            assert rows.scalar() == 2  # only the old code's
        store._engine.dispose()
        migrate(scratch_url, "0022", down=True)
        with engine.begin() as conn:
            claims = dict(conn.execute(text(
                "SELECT j.owner_id, count(*) FROM job_trail e JOIN jobs j ON j.id = e.job_id "
                "WHERE e.reason = 'claimed' GROUP BY 1")).all())
        assert claims == {"t:old": 1, "t:running": 1, "t:straddles": 1, "t:new": 1}
    finally:
        engine.dispose()
