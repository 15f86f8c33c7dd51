"""The jobs_app role: what the functions' database users may do (DML on the job tables, no DDL).

`python main.py migrate` grants it to each user named in DB_APP_USERS (the functions' IAM
database users); the tables stay owned by the user that runs the migrations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = "jobs, job_events, job_results, poison_messages, chaos_runs"


def upgrade() -> None:
    op.execute(
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jobs_app') THEN "
        "CREATE ROLE jobs_app NOLOGIN; END IF; END $$"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLES} TO jobs_app")
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO jobs_app")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {TABLES} FROM jobs_app")
    op.execute("REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM jobs_app")
    # The role itself stays: other databases on the server may use it.
