"""Worker records: poison messages the worker acknowledged, and the chaos preset's run log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # A message that can never be decoded is acknowledged (Pub/Sub would redeliver it forever)
    # and kept here so it is counted and can be inspected. Keyed by messageId: a redelivery
    # of the same message is recorded once.
    op.create_table(
        "poison_messages",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("excerpt", sa.Text, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.text("now()")),
    )
    op.create_index("ix_poison_messages_received", "poison_messages", ["received_at"])
    # Every execution of the chaos preset's handler, so tests can count real runs. No foreign
    # key: the log must outlive a job deleted by retention while a test still reads it.
    op.create_table(
        "chaos_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("job_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False, server_default=sa.text("now()")),
    )
    op.create_index("ix_chaos_runs_job", "chaos_runs", ["job_id"])


def downgrade() -> None:
    op.drop_table("chaos_runs")
    op.drop_table("poison_messages")
