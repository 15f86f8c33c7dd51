"""Migration 0004 (issue 13, defect 13): a table or sequence that a later migration creates is
granted to jobs_app without anyone remembering a GRANT, and the downgrade takes that back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from localstack.postgres import PostgresServer, migrate


@pytest.fixture()
def scratch_url(pg_server: PostgresServer) -> Iterator[str]:
    name = pg_server.create_database("jobs_default_privs")
    yield pg_server.url(name)
    pg_server.drop_database(name)


def _privileges_on_a_new_table(url: str, table: str) -> tuple[bool, bool, bool]:
    """Create a table (with a sequence) as the migrating role, the way a later migration would,
    and ask what jobs_app may do with it."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, note text)"))
            row = conn.execute(text(
                f"SELECT has_table_privilege('jobs_app', '{table}', 'SELECT'),"
                f" has_table_privilege('jobs_app', '{table}', 'INSERT, UPDATE, DELETE'),"
                f" has_sequence_privilege('jobs_app', '{table}_id_seq', 'USAGE')"
            )).one()
    finally:
        engine.dispose()
    return bool(row[0]), bool(row[1]), bool(row[2])


def test_tables_created_after_the_migrations_are_granted_to_the_app_role(
    scratch_url: str,
) -> None:
    migrate(scratch_url)
    assert _privileges_on_a_new_table(scratch_url, "added_later") == (True, True, True)


def test_downgrade_to_0003_stops_granting_new_tables(scratch_url: str) -> None:
    migrate(scratch_url)
    migrate(scratch_url, "0003", down=True)
    assert _privileges_on_a_new_table(scratch_url, "added_after_downgrade") == (
        False, False, False)
