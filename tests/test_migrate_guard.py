"""Issue 26, item 5 and the rollback half of item 6: `python main.py migrate`, as Cloud Build runs
it, on a real PostgreSQL. Migrations run without the application's statement timeout, one at a
time (an advisory lock), and a database newer than this release is reported and left alone
instead of failing the build. Each test watches the database (pg_stat_activity, the revision),
never the clock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from common.store.migration_guard import MIGRATE_LOCK_KEY
from localstack.paths import ROOT
from localstack.postgres import PostgresServer, migrate
from tests.support.polling import wait_until

SETTINGS_VARS = ("DATABASE_URL", "INSTANCE_CONNECTION_NAME", "DB_STATEMENT_TIMEOUT_MS",
                 "DB_APP_USERS", "AUTH_HS256_SECRET")


@pytest.fixture()
def scratch(pg_server: PostgresServer) -> Iterator[tuple[str, Engine]]:
    name = pg_server.create_database("jobs_guard")
    url = pg_server.url(name)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    yield url, engine
    engine.dispose()
    pg_server.drop_database(name)


def _start_migrate(url: str, **env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return subprocess.Popen([sys.executable, "main.py", "migrate"], cwd=ROOT, text=True,
                            env={**base, "DATABASE_URL": url, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def _waiting(engine: Engine, kind: str) -> int:
    """Sessions of this database waiting on a lock of `kind` (pg_locks.locktype)."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND l.locktype = :kind AND a.datname = current_database()"),
            {"kind": kind}).scalar_one())


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return str(ScriptDirectory.from_config(config).get_current_head())


def test_a_migration_outlasts_the_applications_statement_timeout(
    scratch: tuple[str, Engine],
) -> None:
    """The last migration waits for a lock past the 300 ms statement timeout the application
    would run it under (another session holds alembic_version), and still completes once the
    lock goes. Under the application's timeout it was cancelled and the build stopped."""
    url, engine = scratch
    head = _head()
    migrate(url, f"{head}-1")
    holder = engine.connect()
    holder.execute(text("BEGIN"))
    holder.execute(text("LOCK TABLE alembic_version IN EXCLUSIVE MODE"))
    proc = _start_migrate(url, DB_STATEMENT_TIMEOUT_MS="300")
    try:
        wait_until(lambda: _waiting(engine, "relation") > 0 or proc.poll() is not None,
                   "the migration to wait for alembic_version", timeout=60)
        # Past the application's timeout, measured by the database: still waiting, not cancelled.
        with engine.connect() as conn:
            wait_until(lambda: conn.execute(text(
                "SELECT coalesce(max(extract(epoch FROM now() - state_change)), 0) "
                "FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar_one() > 1.0
                or proc.poll() is not None, "the wait to outlast 300 ms", timeout=60)
        assert proc.poll() is None, proc.communicate()
    finally:
        holder.execute(text("COMMIT"))
        holder.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "migrated to head" in out
    assert _revision(engine) == head


def test_two_migrations_never_run_at_once(scratch: tuple[str, Engine]) -> None:
    """While another migration holds the lock, `migrate` waits and touches nothing; then it
    runs (and a second one finds the schema at head)."""
    url, engine = scratch
    holder = engine.connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
    proc = _start_migrate(url)
    try:
        wait_until(lambda: _waiting(engine, "advisory") > 0 or proc.poll() is not None,
                   "migrate to wait for the migration lock", timeout=60)
        assert proc.poll() is None, proc.communicate()
        with engine.connect() as conn:  # nothing migrated meanwhile
            assert conn.execute(text("SELECT to_regclass('jobs')")).scalar() is None
    finally:
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK_KEY})
        holder.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _revision(engine) == _head()
    again = _start_migrate(url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "migrated to head" in out, err


def test_behind_a_newer_database_migrate_refuses_clearly_and_exits_0(
    scratch: tuple[str, Engine],
) -> None:
    """The rollback path: this release's code, a database a newer release migrated. Alembic said
    "Can't locate revision" and the build stopped before the deploys."""
    url, engine = scratch
    migrate(url)
    with engine.connect() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    proc = _start_migrate(url)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "not migrating" in err and "0099_from_the_future" in err and "rollback" in err
    assert "Can't locate revision" not in err and "migrated to head" not in out
    assert _revision(engine) == "0099_from_the_future"
    # ... and the lock is free again: the next migration is not held up.
    assert _waiting(engine, "advisory") == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                            {"k": MIGRATE_LOCK_KEY}).scalar_one() is True


def test_the_docs_walk_through_an_upgrade_and_a_rollback_with_what_migrate_prints() -> None:
    """docs/deploy.md goes from zero to a COMPLETED job, then a second release with a migration,
    then a rollback; the rollback's expected output is what `migrate` really prints."""
    from common.store.migration_guard import NewerDatabase

    docs = (ROOT / "docs" / "deploy.md").read_text()
    order = [docs.index(h) for h in ("## 7. Try it: a job COMPLETED",
                                     "### A second release, with a migration",
                                     "### A rollback")]
    assert order == sorted(order)
    printed = "not migrating: " + str(NewerDatabase("0013", "0012"))
    flowing = " ".join(docs.split())
    assert " ".join(printed.split("…")[0].split())[:150] in flowing
