"""The owner's ended jobs by end time (issue 31): the dashboard's history from the server.

`GET /stats/history` counts an owner's jobs that ended per minute over the last hour (per
quarter hour over the last day), by end state. `ix_jobs_owner_finished` holds exactly what that
count reads, (owner_id, finished_at) with the state alongside, for ended jobs only, so it is an
index-only range scan over the owner's jobs that ended in the window. Without it the count would
read every owner's ended jobs in the window (`ix_jobs_terminal_age`) or all of the owner's jobs.

Its price is one index entry written when a job ends (the row's update is not HOT anyway: it
changes `finished_at`, which `ix_jobs_terminal_age` indexes); rows that never end add nothing.
On a large table, build it with CREATE INDEX CONCURRENTLY outside a transaction instead.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_jobs_owner_finished ON jobs (owner_id, finished_at) INCLUDE (state) "
        "WHERE finished_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_jobs_owner_finished")
