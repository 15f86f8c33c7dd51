"""Alembic environment: migrations run through the same engine factory as the functions.

So `alembic upgrade head` in Cloud Build reaches a private Cloud SQL instance through the Python
connector, with no Auth Proxy and no allow-listed public IP. A caller (the tests) may hand in an
open connection as `config.attributes["connection"]` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from common.settings import load_settings
from common.store.engine import create_engine_from_settings


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = create_engine_from_settings(
        load_settings(), pool_size=1, max_overflow=0, autocommit=False
    )
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()
        from common.store.engine import close_connector

        close_connector()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
