"""Schedules (run later, recurring) and a fair share between owners (issue 15).

- `schedules`: an owner's cron schedule (5-field expression, IANA zone) with its job template.
  `next_fire_at` is set while the schedule is enabled and only ever moves forward, in the same
  statement that fires it; the sweep finds due schedules on a partial index of it.
- `schedule_events`: each fire and each skip, once per (schedule, fire time).
- `jobs.schedule_id` / `jobs.fire_time`: the job a fire created. A unique index on the pair is
  the database's own guarantee that one fire time creates at most one job, whatever two sweeps
  or a retried sweep do.
- `jobs.deferred_at`: set when a claim was refused because the owner was at its limit (the job
  is parked, PENDING); the partial index finds an owner's parked jobs in order.
- `owner_limits`: per-owner overrides of OWNER_MAX_RUNNING (0 = unlimited).
- `owner_running`: how many of an owner's jobs are PROCESSING. The claim increments it with a
  guarded upsert (the row lock serialises two claims for one owner, which a count in the same
  statement could not: its snapshot predates the lock); a trigger decrements it whenever a job
  leaves PROCESSING, by whatever statement (exit, rescue, dead letter), so no path can forget.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True,
                  server_default=sa.text("gen_random_uuid()")),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("preset", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("max_attempts", sa.Integer),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("overlap", sa.Text, nullable=False, server_default="skip"),
        sa.Column("catch_up", sa.Text, nullable=False, server_default="once"),
        sa.Column("next_fire_at", TS),
        sa.Column("last_fire_at", TS),
        sa.Column("last_job_id", pg.UUID(as_uuid=True)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("overlap IN ('skip','allow')", name="ck_schedules_overlap"),
        sa.CheckConstraint("catch_up IN ('once','all')", name="ck_schedules_catch_up"),
        sa.CheckConstraint("max_attempts IS NULL OR max_attempts BETWEEN 1 AND 100",
                           name="ck_schedules_max_attempts"),
        sa.CheckConstraint("enabled = (next_fire_at IS NOT NULL)", name="ck_schedules_next_iff_on"),
    )
    op.execute("CREATE INDEX ix_schedules_owner_created ON schedules "
               "(owner_id, created_at DESC, id DESC)")
    # The sweep's due-scan: only enabled schedules, in fire order.
    op.execute("CREATE INDEX ix_schedules_due ON schedules (next_fire_at) WHERE enabled")

    op.create_table(
        "schedule_events",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("schedule_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fire_time", TS, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("job_id", pg.UUID(as_uuid=True)),
        sa.Column("details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('fired','skipped')", name="ck_schedule_events_kind"),
        sa.CheckConstraint("(kind = 'fired') = (job_id IS NOT NULL)",
                           name="ck_schedule_events_job_iff_fired"),
    )
    op.execute("CREATE UNIQUE INDEX uq_schedule_events_fire ON schedule_events "
               "(schedule_id, fire_time)")
    op.execute("CREATE INDEX ix_schedule_events_schedule ON schedule_events (schedule_id, id)")
    op.execute("CREATE INDEX ix_schedule_events_age ON schedule_events (at)")

    # Nullable, no default: adding them rewrites nothing.
    op.add_column("jobs", sa.Column("schedule_id", pg.UUID(as_uuid=True)))
    op.add_column("jobs", sa.Column("fire_time", TS))
    op.add_column("jobs", sa.Column("deferred_at", TS))
    op.execute("CREATE UNIQUE INDEX uq_jobs_schedule_fire ON jobs (schedule_id, fire_time) "
               "WHERE schedule_id IS NOT NULL")
    op.execute("CREATE INDEX ix_jobs_deferred ON jobs (owner_id, created_at) "
               "WHERE state = 'PENDING' AND deferred_at IS NOT NULL")

    op.create_table(
        "owner_limits",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("max_running", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("max_running >= 0", name="ck_owner_limits_max_running"),
    )
    op.create_table(
        "owner_running",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("running", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("running >= 0", name="ck_owner_running_nonnegative"),
    )
    op.execute(
        "INSERT INTO owner_running (owner_id, running) "
        "SELECT owner_id, count(*) FROM jobs WHERE state = 'PROCESSING' GROUP BY owner_id"
    )
    # Never below zero: a job claimed by code older than this migration was never counted.
    op.execute(
        """
        CREATE FUNCTION jobs_release_owner_slot() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE owner_running SET running = GREATEST(running - 1, 0)
            WHERE owner_id = OLD.owner_id;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_leave_processing AFTER UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (OLD.state = 'PROCESSING' AND NEW.state <> 'PROCESSING') "
        "EXECUTE FUNCTION jobs_release_owner_slot()"
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_delete_processing AFTER DELETE ON jobs FOR EACH ROW "
        "WHEN (OLD.state = 'PROCESSING') EXECUTE FUNCTION jobs_release_owner_slot()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_delete_processing ON jobs")
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_leave_processing ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_release_owner_slot()")
    op.drop_table("owner_running")
    op.drop_table("owner_limits")
    op.execute("DROP INDEX IF EXISTS ix_jobs_deferred")
    op.execute("DROP INDEX IF EXISTS uq_jobs_schedule_fire")
    op.drop_column("jobs", "deferred_at")
    op.drop_column("jobs", "fire_time")
    op.drop_column("jobs", "schedule_id")
    op.drop_table("schedule_events")
    op.drop_table("schedules")
