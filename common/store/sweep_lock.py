"""One sweep pass at a time: a session-level PostgreSQL advisory lock on a connection held for
the pass.

The engine runs in autocommit, so a transaction-level lock would end with its statement; a
session lock lives as long as the connection, which this object keeps out of the pool for the
whole pass. If the connection dies, PostgreSQL drops the lock with the session, so a crashed
pass never blocks the next one. The same statement says whether the schema exists, so a sweep
that runs before the migrations can say so instead of failing every step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal

from sqlalchemy import Connection

from common.store import prepared

# Any constant works: advisory locks are per database, and nothing else here takes one.
SWEEP_LOCK_KEY = 0x6A6F6273_73776570  # "jobsswep"

SQL_TRY_LOCK = """
SELECT pg_try_advisory_lock(:key) AS locked, to_regclass('jobs') IS NOT NULL AS has_schema"""
SQL_UNLOCK = "SELECT pg_advisory_unlock(:key) AS unlocked"

LockState = Literal["held", "busy", "schema-missing"]


class SweepLock:
    def __init__(self, checkout: Callable[[], Connection]) -> None:
        self._checkout = checkout
        self._conn: Connection | None = None

    def acquire(self) -> LockState:
        """Try once, never wait. Raises DatabaseUnavailable if the database cannot be reached.
        Only 'held' keeps the connection (and the lock) until `release`."""
        conn = self._checkout()
        try:
            row = prepared.run(conn, SQL_TRY_LOCK, {"key": SWEEP_LOCK_KEY})[0]
        except BaseException:
            conn.close()
            raise
        if row["locked"] and row["has_schema"]:
            self._conn = conn
            return "held"
        if row["locked"]:
            self._conn = conn
            self.release()
        else:
            conn.close()
        return "busy" if not row["locked"] else "schema-missing"

    def release(self) -> None:
        """Unlock and give the connection back. Never raises: if the unlock fails, the
        connection is discarded, which ends its session and so the lock."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            prepared.run(conn, SQL_UNLOCK, {"key": SWEEP_LOCK_KEY})
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.invalidate(exc)
        finally:
            with contextlib.suppress(Exception):
                conn.close()
