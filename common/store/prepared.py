"""Server-side prepared statements on pooled pg8000 connections.

pg8000's DB-API path spends three round trips on every statement (Parse, then Describe, then
Bind/Execute, each waiting for the server). A statement prepared once per connection then costs
one round trip per execution, as with pgbench's extended protocol. The job store runs a dozen
fixed statements at high rates, so it prepares each one on first use on each pooled connection.

SQLAlchemy still owns the pool (pre-ping, recycle, overflow, the Cloud SQL connector's creator);
this module only executes on the DB-API connection it checks out, and maps pg8000's own errors,
which SQLAlchemy never sees here, to the store's typed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from common.store.engine import distrust_pooled_connections
from common.store.errors import DatabaseUnavailable

_CACHE_KEY = "jobs.prepared"
# 57014 statement timeout, 57P0x shutdown or termination, 08xxx connection, 53xxx resources,
# 40xxx a transaction rolled back for a deadlock (40P01) or a serialization failure (40001):
# nothing was written, and the same statement may pass when tried again.
_UNAVAILABLE_PREFIXES = ("57014", "57P", "08", "53", "40")
# Codes after which the connection itself is sound, so it goes back to the pool.
_CONNECTION_SOUND = ("57014", "40")


def sqlstate(driver_error: BaseException | None) -> str:
    """The SQLSTATE of a pg8000 error ('' if it carries none)."""
    args = getattr(driver_error, "args", ())
    fields = args[0] if args else None
    return str(fields.get("C", "")) if isinstance(fields, dict) else ""


def means_unavailable(code: str) -> bool:
    """Whether a SQLSTATE says the database cannot serve us now (so: retry later)."""
    return code.startswith(_UNAVAILABLE_PREFIXES)


def _statements(conn: Connection) -> dict[str, Any]:
    record = conn.connection
    dbapi_conn = record.dbapi_connection
    cached = record.info.get(_CACHE_KEY)
    if cached is None or cached[0] is not dbapi_conn:  # a new DB-API connection behind the record
        cached = (dbapi_conn, {})
        record.info[_CACHE_KEY] = cached
    statements: dict[str, Any] = cached[1]
    return statements


def run(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Execute `sql` (with :name binds) as a prepared statement; rows come back as dicts."""
    from pg8000.exceptions import DatabaseError, InterfaceError
    from pg8000.native import PreparedStatement

    statements = _statements(conn)
    try:
        statement = statements.get(sql)
        if statement is None:
            statement = PreparedStatement(conn.connection.dbapi_connection, sql)
            statements[sql] = statement
        rows = statement.run(**params)
    except (InterfaceError, OSError) as exc:  # the socket is gone: never reuse this connection
        conn.invalidate(exc)
        distrust_pooled_connections()  # its siblings probably went with it
        raise DatabaseUnavailable("connection lost") from exc
    except DatabaseError as exc:
        code = sqlstate(exc)
        if means_unavailable(code):
            if not code.startswith(_CONNECTION_SOUND):  # a timeout or a rollback: healthy
                conn.invalidate(exc)
            raise DatabaseUnavailable(code) from exc
        raise
    if not statement.cols:
        return []
    names = [column["name"] for column in statement.cols]
    return [dict(zip(names, row, strict=True)) for row in rows or ()]
