"""What `alembic upgrade` does before it migrates (migrations/env.py), on the connection it
migrates with:

- **No statement timeout.** The application's engine sets DB_STATEMENT_TIMEOUT_MS (15 s) on
  every connection; a migration on a populated database (0010's index rebuild, 0012's bulk
  update) runs longer, and was cancelled, stopping the build. Migrations run without one.
- **One migration at a time.** Two builds (two pushes in a row, a manual run beside the trigger)
  could migrate at once. A session-level advisory lock serialises them: the second waits, then
  finds the schema at head and does nothing. It waits at most MIGRATE_LOCK_WAIT_S.
- **Never behind a newer database.** Rolling back deploys older code whose migrations end before
  the database's revision: alembic stopped with "Can't locate revision" and nothing deployed.
  `NewerDatabase` says so instead; `python main.py migrate` reports it and leaves the schema as
  it is, so the older release deploys against the newer schema (expand, then contract: each
  release's code runs against the next one's schema, tests/test_previous_release.py).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

# pg_advisory_lock's key: "jobs-migrate" as a bigint. The sweep's lock uses another key.
MIGRATE_LOCK_KEY = 0x6A6F62732D6D6967
MIGRATE_LOCK_WAIT_S = 600


class MigrationRefused(Exception):
    """The migration did not run, for a reason the operator can act on."""


class NewerDatabase(MigrationRefused):
    """The database is at a revision this release does not know: a newer release migrated it."""

    def __init__(self, current: str, head: str) -> None:
        self.current, self.head = current, head
        super().__init__(
            f"the database is at revision {current}, which this release does not know (its "
            f"newest is {head}): a newer release migrated it. Not migrating, and not failing: "
            "this is a rollback, and the older code runs against the newer schema (expand, "
            "then contract). Upgrade again to the newer release to move the schema on.")


class LockTimeout(MigrationRefused):
    def __init__(self, waited_s: int) -> None:
        super().__init__(f"another migration held the migration lock for {waited_s} s; "
                         "try again when it has finished")


def prepare(connection: Connection, known: set[str], head: str,
            lock_wait_s: int = MIGRATE_LOCK_WAIT_S) -> None:
    """Take the migration lock (session level: it spans Alembic's per-migration transactions),
    clear the statement timeout, and refuse a database newer than this release. Runs outside a
    transaction and leaves none open. `known`: every revision of this release's scripts."""
    connection.execute(text("SET statement_timeout = 0"))
    connection.execute(text(f"SET lock_timeout = '{int(lock_wait_s)}s'"))
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
    except Exception as exc:
        if "lock timeout" in str(exc).lower():
            connection.rollback()
            raise LockTimeout(lock_wait_s) from None
        raise
    connection.execute(text("SET lock_timeout = 0"))
    current = _current_revision(connection)
    connection.commit()  # end the implicit transaction; the advisory lock stays with the session
    if current is not None and current not in known:
        release(connection)
        raise NewerDatabase(current, head)


def release(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK_KEY})
    connection.commit()


def _current_revision(connection: Connection) -> str | None:
    exists = connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")
                                ).scalar_one()
    if not exists:
        return None
    value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)
