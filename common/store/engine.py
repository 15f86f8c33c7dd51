"""The SQLAlchemy engine, built once per instance from settings.

With INSTANCE_CONNECTION_NAME the Cloud SQL Python Connector opens every connection (mutual TLS
with ephemeral certificates, optional IAM database login, no Auth Proxy); otherwise DATABASE_URL is
used as is. The connector is imported only on that path: it costs about 0.6 s to import.
"""

from __future__ import annotations

import atexit
import re
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from common.settings import Settings, get_settings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.sql.connector import Connector

APPLICATION_NAME = "jobs-pipeline"

_lock = threading.RLock()  # get_engine holds it while the factory takes the connector
_connector: Connector | None = None
_engine: Engine | None = None


TIMESTAMPTZ_OID = 1184


def _fast_timestamptz(data: str) -> Any:
    """pg8000 parses timestamptz with strptime (about 13 us each; a job row has seven).
    datetime.fromisoformat reads PostgreSQL's ISO output ~60x faster; anything it cannot read
    (infinity, BC dates) goes to pg8000's own parser."""
    try:
        return datetime.fromisoformat(data)
    except ValueError:
        import pg8000.converters

        return pg8000.converters.timestamptz_in(data)


def _tune_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.register_in_adapter(TIMESTAMPTZ_OID, _fast_timestamptz)


def _get_connector(settings: Settings, credentials: Credentials | None) -> Connector:
    """One lazily created Connector per process: each new one costs SQL Admin API quota."""
    global _connector
    with _lock:
        if _connector is None:
            from google.cloud.sql.connector import Connector

            kwargs: dict[str, Any] = {
                "refresh_strategy": "lazy",  # no background refresh: serverless CPU is throttled
                "ip_type": settings.db_ip_type.value,
                "enable_iam_auth": settings.db_iam_auth,
                "timeout": settings.db_connect_timeout_s,
            }
            if settings.cloudsql_admin_endpoint:
                kwargs["sqladmin_api_endpoint"] = settings.cloudsql_admin_endpoint
            if credentials is not None:
                kwargs["credentials"] = credentials
            _connector = Connector(**kwargs)
            atexit.register(close_connector)
        return _connector


def close_connector() -> None:
    global _connector
    with _lock:
        if _connector is not None:
            _connector.close()
            _connector = None


def create_engine_from_settings(
    settings: Settings,
    *,
    credentials: Credentials | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    autocommit: bool = True,
) -> Engine:
    """A new engine; functions use `get_engine()`, which keeps one per instance.

    The job store's engine is in autocommit mode from the moment each connection opens: every
    repository operation is a single statement, so it needs no BEGIN/COMMIT round trips. Setting
    autocommit per checkout instead (`execution_options`) is wrong with pre-ping: the ping runs
    before the option applies, opens a transaction, and the pool's reset then rolls the
    operation back. Migrations pass autocommit=False to keep their DDL transactional.
    """
    startup = {"statement_timeout": str(settings.db_statement_timeout_ms)}
    size = settings.db_pool_size if pool_size is None else pool_size
    overflow = settings.db_max_overflow if max_overflow is None else max_overflow
    pool_args: dict[str, Any] = {
        # The overflow is kept in the pool, not closed on return: at a concurrency above the
        # pool size, SQLAlchemy's overflow would open and close a connection (TLS attempt,
        # login, statement preparation) for most requests. The bound, pool + overflow
        # connections per instance, is the same.
        "pool_size": size + overflow,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_recycle": settings.db_pool_recycle_s,
        # The store's engine pings only connections that sat idle (see _ping_if_idle).
        "pool_pre_ping": settings.db_pool_pre_ping and not autocommit,
    }
    if autocommit:
        # No transaction is ever open on return to the pool, so its ROLLBACK would be a wasted
        # round trip.
        pool_args.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    if settings.instance_connection_name:
        icn = settings.instance_connection_name
        user = settings.db_user
        password = settings.db_password.get_secret_value() if settings.db_password else None
        connector = _get_connector(settings, credentials)

        def getconn() -> Any:
            return connector.connect(
                icn,
                "pg8000",
                user=user,
                password=password,
                db=settings.db_name,
                application_name=APPLICATION_NAME,
                startup_params=startup,
                # The connector's socket is already mutual TLS. Left at None, pg8000 would build
                # a default SSLContext (loading the system CA bundle) and send an SSLRequest
                # through the tunnel for every new connection, only to be told no.
                ssl_context=False,
            )

        engine = create_engine("postgresql+pg8000://", creator=getconn, **pool_args)
    else:
        assert settings.database_url is not None  # guaranteed by Settings validation
        engine = create_engine(
            settings.database_url,
            connect_args={
                "application_name": APPLICATION_NAME,
                "startup_params": startup,
                # A socket timeout, so a dead peer cannot hang a request; never shorter than a
                # statement is allowed to run.
                "timeout": settings.db_connect_timeout_s + settings.db_statement_timeout_ms // 1000,
            },
            **pool_args,
        )
    event.listen(engine, "connect", _tune_connection)
    if autocommit and settings.db_pool_pre_ping:
        _ping_if_idle(engine, settings.db_ping_idle_s)
    return engine


_LAST_USED = "jobs.last_used"
# When any connection was found dead, every connection last used before that moment is suspect
# (a failover or restart drops them all at once): each is pinged at its next checkout.
_suspect_before = 0.0


def distrust_pooled_connections() -> None:
    global _suspect_before
    _suspect_before = time.monotonic()


def _ping_if_idle(engine: Engine, idle_s: float) -> None:
    """Pessimistic disconnect handling, paid only where it pays: a connection used moments ago
    is trusted (a failover in between costs that one statement a typed DatabaseUnavailable);
    one that sat idle, which is when Cloud SQL and proxies drop them, is pinged first, and so is
    every connection older than the last one found dead (see `distrust_pooled_connections`). Raising
    DisconnectionError makes the pool discard it and check out another (SQLAlchemy's documented
    pattern, "Disconnect Handling - Pessimistic", with a custom event)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last = record.info.get(_LAST_USED)
        if last is not None and time.monotonic() - last < idle_s and last > _suspect_before:
            return
        if last is None:  # just opened: nothing to check
            record.info[_LAST_USED] = time.monotonic()
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        except Exception as exc:
            raise sa_exc.DisconnectionError(type(exc).__name__) from exc


def get_engine() -> Engine:
    """The instance's engine, created on first use (never at import, to keep cold starts cheap)."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = create_engine_from_settings(get_settings())
                atexit.register(_engine.dispose)
    return _engine


_DB_USER = re.compile(r"^[A-Za-z0-9@._-]{1,63}$")


def grant_app_role(engine: Engine, users: list[str]) -> None:
    """GRANT jobs_app (migration 0003) to the functions' database users. Role names cannot be
    bound as parameters, so each is checked against a strict pattern and quoted."""
    from sqlalchemy import text

    for user in users:
        if not _DB_USER.match(user):
            raise ValueError(f"not a database user name: {user!r}")
    with engine.begin() as conn:
        for user in users:
            quoted = engine.dialect.identifier_preparer.quote_identifier(user)
            conn.execute(text(f"GRANT jobs_app TO {quoted}"))
