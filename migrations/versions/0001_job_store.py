"""Job store: jobs, their audit trail and their results.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
STATES = "('PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')"
TERMINAL = "('COMPLETED','FAILED','CANCELLED')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True,
                  server_default=sa.text("gen_random_uuid()")),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("preset", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("state", sa.Text, nullable=False, server_default="PENDING"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("attempt_limit", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lease_expires_at", TS),
        sa.Column("dispatched_at", TS),
        sa.Column("not_before", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        # The invariants the state machine relies on, enforced by the database as a last line:
        # no code path can leave a half-moved row behind.
        sa.CheckConstraint(f"state IN {STATES}", name="ck_jobs_state"),
        sa.CheckConstraint("attempts >= 0 AND attempts <= attempt_limit", name="ck_jobs_attempts"),
        sa.CheckConstraint("max_attempts BETWEEN 1 AND 100", name="ck_jobs_max_attempts"),
        sa.CheckConstraint("state <> 'PENDING' OR attempts < attempt_limit",
                           name="ck_jobs_pending_has_attempts_left"),
        sa.CheckConstraint("(state = 'PROCESSING') = (lease_expires_at IS NOT NULL)",
                           name="ck_jobs_lease_iff_processing"),
        sa.CheckConstraint(f"(state IN {TERMINAL}) = (finished_at IS NOT NULL)",
                           name="ck_jobs_finished_iff_terminal"),
        sa.CheckConstraint("(idempotency_key IS NULL) = (request_hash IS NULL)",
                           name="ck_jobs_key_has_hash"),
    )
    # An owner's jobs, newest first, with and without a state filter (keyset pagination).
    op.execute("CREATE INDEX ix_jobs_owner_created ON jobs (owner_id, created_at DESC, id DESC)")
    op.execute(
        "CREATE INDEX ix_jobs_owner_state_created ON jobs (owner_id, state, created_at DESC, id DESC)"
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_jobs_owner_idempotency_key ON jobs (owner_id, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL"
    )
    # Maintenance: each partial index holds only the rows its query wants, so a sweep's cost
    # follows the work to do, not the size of the table.
    op.execute(
        "CREATE INDEX ix_jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'PROCESSING'"
    )
    op.execute(
        "CREATE INDEX ix_jobs_undispatched_due ON jobs ((COALESCE(not_before, created_at))) "
        "WHERE state = 'PENDING' AND dispatched_at IS NULL"
    )
    op.execute(
        "CREATE INDEX ix_jobs_dispatched_pending ON jobs (dispatched_at) "
        "WHERE state = 'PENDING' AND dispatched_at IS NOT NULL"
    )
    op.execute(f"CREATE INDEX ix_jobs_terminal_age ON jobs (finished_at) WHERE state IN {TERMINAL}")

    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("job_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_state", sa.Text),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(f"to_state IN {STATES}", name="ck_job_events_to_state"),
    )
    op.execute("CREATE INDEX ix_job_events_job ON job_events (job_id, id)")

    op.create_table(
        "job_results",
        sa.Column("job_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("output", pg.JSONB),
        sa.Column("error_type", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('succeeded','failed')", name="ck_job_results_status"),
        sa.CheckConstraint("(status = 'failed') = (error_type IS NOT NULL)",
                           name="ck_job_results_error_iff_failed"),
    )


def downgrade() -> None:
    op.drop_table("job_results")
    op.drop_table("job_events")
    op.drop_table("jobs")
