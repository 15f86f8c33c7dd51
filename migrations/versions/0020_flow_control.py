"""Flow control (issue 27): priorities, rate limits and concurrency limits per preset and key.

- `jobs.priority` (0-9, default 5): wherever jobs compete for a scarce slot (a parked job's
  release, the sweep's re-dispatch) they go by RANK (common/store/flow_sql.py): the creation
  time less five minutes per priority level. A priority is a head start, so it never starves.
- `jobs.limit_key`: a key the caller supplies (`customer-42`); the owner's limit for that key,
  if any, applies to the job. `schedules` get both columns for the jobs they create.
- `flow_limits`: one row per limit: a preset's (owner_id '', name = the preset, from settings)
  or an owner's key (owner_id, name = the key). `max_running` bounds PROCESSING jobs through
  `running`; `max_starts` per `interval_s` bounds starts, kept as `next_at`, the reservation
  frontier (a start needs a slot no earlier than it), and `last_start_at`, the latest start
  (two starts are never nearer than interval_s / max_starts).
- `jobs.flow_held`: which running counters the job's claim took (1 = its preset's, 2 = its
  key's), so its exit (a trigger, ordered before the owner slot's so both paths lock in the
  same order as the claim) gives back exactly those.
- `jobs.wait_reason`: why a PENDING job waits (the limit that parked it, or `rate-reserved`
  for a job holding a rate slot), shown by GET /jobs/{id}; a trigger clears it on any move
  out of PENDING.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
PARKED = "state = 'PENDING' AND deferred_at IS NOT NULL"
# Immutable (an index may hold it): UTC wall time less 300 s per level.
RANK = "((created_at AT TIME ZONE 'UTC') - priority * interval '300 seconds')"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.SmallInteger, nullable=False,
                                    server_default="5"))
    op.add_column("jobs", sa.Column("limit_key", sa.Text))
    op.add_column("jobs", sa.Column("flow_held", sa.SmallInteger))
    op.add_column("jobs", sa.Column("wait_reason", sa.Text))
    op.create_check_constraint("ck_jobs_priority", "jobs", "priority BETWEEN 0 AND 9")
    op.add_column("schedules", sa.Column("priority", sa.SmallInteger, nullable=False,
                                         server_default="5"))
    op.add_column("schedules", sa.Column("limit_key", sa.Text))
    op.create_table(
        "flow_limits",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("max_running", sa.Integer),
        sa.Column("max_starts", sa.Integer),
        sa.Column("interval_s", sa.Float),
        sa.Column("running", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", TS),
        sa.Column("last_start_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("max_running IS NULL OR max_running >= 1", name="ck_flow_running"),
        sa.CheckConstraint("(max_starts IS NULL) = (interval_s IS NULL)", name="ck_flow_rate"),
        sa.CheckConstraint("max_starts IS NULL OR (max_starts >= 1 AND interval_s > 0)",
                           name="ck_flow_rate_positive"),
        sa.CheckConstraint("running >= 0", name="ck_flow_running_nonnegative"),
    )
    # The parked jobs a release takes, best rank first: an owner's (fair share, replacing
    # ix_jobs_deferred), a preset's, an owner's key's.
    op.execute("DROP INDEX IF EXISTS ix_jobs_deferred")
    op.execute(f"CREATE INDEX ix_jobs_parked_owner ON jobs (owner_id, {RANK}) WHERE {PARKED}")
    op.execute(f"CREATE INDEX ix_jobs_parked_preset ON jobs (preset, {RANK}) WHERE {PARKED}")
    op.execute(f"CREATE INDEX ix_jobs_parked_key ON jobs (owner_id, limit_key, {RANK}) "
               f"WHERE {PARKED} AND limit_key IS NOT NULL")
    op.execute(
        """
        CREATE FUNCTION jobs_release_flow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM 1 FROM flow_limits
            WHERE (OLD.flow_held & 1 = 1 AND owner_id = '' AND name = OLD.preset)
               OR (OLD.flow_held & 2 = 2 AND owner_id = OLD.owner_id AND name = OLD.limit_key)
            ORDER BY owner_id, name FOR UPDATE;
            UPDATE flow_limits SET running = GREATEST(running - 1, 0)
            WHERE (OLD.flow_held & 1 = 1 AND owner_id = '' AND name = OLD.preset)
               OR (OLD.flow_held & 2 = 2 AND owner_id = OLD.owner_id AND name = OLD.limit_key);
            RETURN NULL;
        END $$
        """
    )
    # A wait belongs to a PENDING job: whatever move ends it (a claim, a cancel, a dead
    # letter, a bulk action) ends its reason too, so no path has to remember.
    op.execute(
        """
        CREATE FUNCTION jobs_forget_wait() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.wait_reason := NULL;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_forget_wait BEFORE UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (NEW.state <> 'PENDING' AND NEW.wait_reason IS NOT NULL) "
        "EXECUTE FUNCTION jobs_forget_wait()"
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_leave_flow AFTER UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (OLD.state = 'PROCESSING' AND NEW.state <> 'PROCESSING' "
        "AND OLD.flow_held IS NOT NULL) EXECUTE FUNCTION jobs_release_flow()"
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_delete_flow AFTER DELETE ON jobs FOR EACH ROW "
        "WHEN (OLD.state = 'PROCESSING' AND OLD.flow_held IS NOT NULL) "
        "EXECUTE FUNCTION jobs_release_flow()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_delete_flow ON jobs")
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_leave_flow ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_release_flow()")
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_forget_wait ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_forget_wait()")
    op.execute("DROP INDEX IF EXISTS ix_jobs_parked_key")
    op.execute("DROP INDEX IF EXISTS ix_jobs_parked_preset")
    op.execute("DROP INDEX IF EXISTS ix_jobs_parked_owner")
    op.execute("CREATE INDEX ix_jobs_deferred ON jobs (owner_id, created_at) "
               f"WHERE {PARKED}")
    op.drop_table("flow_limits")
    op.drop_column("schedules", "limit_key")
    op.drop_column("schedules", "priority")
    op.drop_constraint("ck_jobs_priority", "jobs")
    for column in ("wait_reason", "flow_held", "limit_key", "priority"):
        op.drop_column("jobs", column)
