"""Shared fixtures: a real PostgreSQL built by the Alembic migrations, and the job store on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from common.settings import Settings, load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from localstack.emulator import PubSubEmulator
from localstack.postgres import PostgresServer, migrate, provide_server

PRESETS = ["echo", "text-stats", "chaos"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = provide_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """This run's own database, its schema made by `alembic upgrade head`."""
    name = pg_server.create_database()
    url = pg_server.url(name)
    migrate(url)
    yield url
    pg_server.drop_database(name)


@pytest.fixture()
def stack_database(
    pg_server: PostgresServer, emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A migrated database of the test's own, dropped after it, with the emulator's environment
    exported: for runs of the whole local stack (chaos, the benchmarks' smoke tests)."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    name = pg_server.create_database("jobs_stack")
    try:
        url = pg_server.url(name)
        migrate(url)
        yield url
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # Some tests terminate every store connection on purpose: the shared engine pings on each
    # checkout so that the next test never inherits a dead one.
    return load_settings(
        database_url=database_url, lease_seconds=30, max_content_bytes=10_000, db_ping_idle_s=0
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    eng = create_engine_from_settings(settings, pool_size=10, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture()
def store(engine: Engine, settings: Settings) -> JobStore:
    """A store on empty tables: maintenance queries see only what the test made."""
    with engine.connect() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, poison_messages, chaos_runs, "
                          "webhook_deliveries, webhook_secrets, schedules, schedule_events, "
                          "owner_limits, owner_running, flow_limits, workflows, job_deps"))
    return JobStore(engine, settings, presets=PRESETS)


def table_counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_trail), "
                "(SELECT count(*) FROM job_results)"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture(scope="session")
def emulator() -> Iterator[PubSubEmulator]:
    """One Pub/Sub emulator for the run, started only if a test asks for it."""
    emu = PubSubEmulator(project="test-project").start()
    yield emu
    emu.stop()


pytest_plugins = ["tests.submit_fixtures", "tests.process_fixtures"]


@pytest.fixture(autouse=True)
def _functions_framework_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """functions-framework's create_app writes FUNCTION_TARGET and FUNCTION_SIGNATURE_TYPE into
    os.environ; monkeypatch restores them after each test, so one test's CloudEvent function
    never turns the next test's HTTP app (or the servers it starts) into one."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE"):
        monkeypatch.delenv(name, raising=False)
