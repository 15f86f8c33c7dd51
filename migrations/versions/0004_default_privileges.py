"""Default privileges: tables and sequences that later migrations create are granted to jobs_app.

Migration 0003 granted jobs_app DML on the tables that existed then. Without default privileges,
a table added by a later migration would be invisible to the functions (permission denied) until
someone remembered a GRANT. `ALTER DEFAULT PRIVILEGES` without `FOR ROLE` applies to objects
created by the role running the migrations (the built-in postgres user in Cloud SQL, the one that
owns every table), which is the only role that creates them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO jobs_app"
    )
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO jobs_app"
    )


def downgrade() -> None:
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM jobs_app"
    )
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM jobs_app"
    )
