"""Alembic environment: migrations run through the same engine factory as the functions.

So `alembic upgrade head` in Cloud Build reaches a private Cloud SQL instance through the Python
connector, with no Auth Proxy and no allow-listed public IP. Before migrating it takes the
migration lock, clears the application's statement timeout and refuses a database newer than
this release (common/store/migration_guard.py). A caller may hand in an open connection as
`config.attributes["connection"]` instead, and then owns all of that.
"""

from __future__ import annotations

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from common.settings import load_settings
from common.store.engine import create_engine_from_settings
from common.store.migration_guard import prepare, release


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
    script = ScriptDirectory.from_config(context.config)
    known = {revision.revision for revision in script.walk_revisions()}
    try:
        with engine.connect() as connection:
            prepare(connection, known, str(script.get_current_head()))
            try:
                _run(connection)
                connection.commit()
            finally:
                release(connection)
    finally:
        engine.dispose()
        from common.store.engine import close_connector

        close_connector()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
