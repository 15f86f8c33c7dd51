"""The store's plumbing: pooled checkout, one statement per call, typed refusals.

Every operation is one SQL statement run in autocommit mode: one round trip, one transaction.
When a guarded write matches nothing, `_explain_refusal` reads the row to say why.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from common.settings import Settings
from common.store import prepared
from common.store.errors import (
    DatabaseUnavailable,
    IllegalTransition,
    JobNotFound,
    StaleAttempt,
)
from common.store.fragments import (
    job_from_row,
)
from common.store.models import (
    Job,
)
from common.store.states import JobState, Move

SQL_PING = "SELECT 1 AS ok"

SQL_PEEK = """
SELECT state, attempts, cancel_requested,
       COALESCE(not_before > now(), false) AS not_due,
       COALESCE(lease_expires_at > now(), false) AS lease_live
FROM jobs WHERE id = :id"""



def means_unavailable(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return True
    return prepared.means_unavailable(prepared.sqlstate(exc.orig))



class StoreBase:
    """Shared by the query sets. Thread-safe: each call checks one connection out of the pool."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        presets: Collection[str] | None = None,
    ) -> None:
        # The engine must be in autocommit mode (create_engine_from_settings makes it so):
        # every statement here is its own transaction; see the module docstring.
        self._engine = engine
        self._settings = settings
        self._presets = sorted(presets) if presets is not None else None

    # -- plumbing ---------------------------------------------------------------------------

    def _checkout(self) -> Connection:
        """A pooled connection. A dead one found by pre-ping is discarded by the pool, but
        pg8000 can report it as a bare OSError that escapes SQLAlchemy's ping handling: so one
        more checkout is tried before the database is called unavailable."""
        for last in (False, True):
            try:
                return self._engine.connect()
            except sa_exc.DBAPIError as exc:
                if not means_unavailable(exc):
                    raise
                if last:
                    raise DatabaseUnavailable(type(exc.orig).__name__) from exc
            except OSError as exc:
                if last:
                    raise DatabaseUnavailable(type(exc).__name__) from exc
            except sa_exc.TimeoutError as exc:  # the pool had no connection to give in time
                raise DatabaseUnavailable("pool timeout") from exc
        raise AssertionError("unreachable")

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self._checkout() as conn:
            return prepared.run(conn, sql, params)

    def _one_job(self, sql: str, **params: Any) -> Job | None:
        rows = self._rows(sql, **params)
        return job_from_row(rows[0]) if rows else None

    def _explain_refusal(self, job_id: UUID, move: Move, held: int | None) -> JobStoreErrorT:
        """After a guarded write matched nothing: say why, without having written anything."""
        rows = self._rows(SQL_PEEK, id=job_id)
        if not rows:
            return JobNotFound(job_id)
        state, attempts = JobState(rows[0]["state"]), int(rows[0]["attempts"])
        if held is not None and attempts != held:
            return StaleAttempt(job_id, move.value, state.value, held, attempts)
        return IllegalTransition(job_id, move.value, state.value)

    def ping(self) -> None:
        """A round trip to the database, for health checks."""
        self._rows(SQL_PING)


JobStoreErrorT = JobNotFound | IllegalTransition
