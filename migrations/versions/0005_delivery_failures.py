"""Delivery failures: when a PENDING job's delivery started failing, and how often it failed.

A dead-lettered message for a job that never ran is not a job failure: the sweep dispatches the
job again after a growing delay (`delivery_failures` sets the step) and gives up only once
`undelivered_since` is older than the delivery budget. The claim clears both. Adding a nullable
column and one with a constant default rewrites no rows (PostgreSQL 11+), so this is quick on a
big table. No index: the columns are read only for the one job a dead letter names.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("undelivered_since", sa.TIMESTAMP(timezone=True)))
    op.add_column(
        "jobs",
        sa.Column("delivery_failures", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "ck_jobs_delivery_failures", "jobs", "delivery_failures >= 0"
    )


def downgrade() -> None:
    op.drop_constraint("ck_jobs_delivery_failures", "jobs", type_="check")
    op.drop_column("jobs", "delivery_failures")
    op.drop_column("jobs", "undelivered_since")
