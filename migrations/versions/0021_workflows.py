"""Workflows (issue 28): jobs that wait for jobs, fan-out at run time, and the workflow's state.

- `WAITING`, a job state before PENDING: a step whose parents have not all ended. `waiting_on`
  counts the parents still to end well; the statement that ends the last one makes it PENDING
  (a trigger, so every path that ends a job does it: a worker's exit, a rescue, a cancel, a
  dead letter, a bulk action). A parent that ends FAILED or CANCELLED ends its WAITING
  children CANCELLED ('upstream-failed', recursively through the same trigger; `cancel_cause`
  says which step ended how), except a child
  whose `on_upstream_failure` is 'run': for it the parent's end counts as done.
- `job_deps`: one row per edge, parent to child.
- `jobs.workflow_id`, `jobs.step`: the workflow a job belongs to and its step's name there;
  `jobs.spawned_by`, `jobs.spawn_key`: a child a handler spawned, unique per (parent, key), so
  a handler that runs twice spawns each child once.
- `workflows`: the whole: its steps' count and how many ended, and which step broke it. Kept
  by the same trigger, in the statement that ends each step.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
STATES = "('WAITING','PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')"
OLD_STATES = "('PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')"

STEP_END = """
CREATE FUNCTION jobs_workflow_step_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    good boolean := NEW.state = 'COMPLETED';
BEGIN
    -- Children for which this end counts as done: one parent fewer to wait for; the last
    -- makes the child PENDING (undispatched: the worker that ended this step publishes it,
    -- else the sweep's next pass).
    WITH freed AS (
        UPDATE jobs c SET waiting_on = c.waiting_on - 1, updated_at = now(),
            state = CASE WHEN c.waiting_on <= 1 THEN 'PENDING' ELSE 'WAITING' END
        WHERE c.id IN (SELECT child_id FROM job_deps WHERE parent_id = NEW.id)
          AND c.state = 'WAITING' AND (good OR c.on_upstream_failure = 'run')
        RETURNING c.id, c.state, c.attempts
    )
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, 'WAITING', 'PENDING', 'unblocked', attempts,
           jsonb_build_object('last_parent', NEW.step)
    FROM freed WHERE state = 'PENDING';
    IF NOT good THEN
        -- The others end CANCELLED; their own children follow through this trigger.
        WITH gone AS (
            UPDATE jobs c SET state = 'CANCELLED', finished_at = now(), updated_at = now(),
                cancel_cause = left('step ' || coalesce(NEW.step, CAST(NEW.id AS text))
                                    || ' ended ' || NEW.state, 300)
            WHERE c.id IN (SELECT child_id FROM job_deps WHERE parent_id = NEW.id)
              AND c.state = 'WAITING' AND c.on_upstream_failure IS DISTINCT FROM 'run'
            RETURNING c.id, c.attempts
        )
        INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
        SELECT id, 'WAITING', 'CANCELLED', 'upstream-failed', attempts,
               jsonb_build_object('parent', NEW.step, 'parent_state', NEW.state)
        FROM gone;
    END IF;
    UPDATE workflows w SET steps_done = w.steps_done + 1, updated_at = now(),
        steps_failed = w.steps_failed + CASE WHEN NEW.state = 'FAILED' THEN 1 ELSE 0 END,
        steps_cancelled = w.steps_cancelled + CASE WHEN NEW.state = 'CANCELLED' THEN 1 ELSE 0 END,
        broken_step = COALESCE(w.broken_step, CASE
            WHEN NEW.state = 'FAILED' THEN NEW.step
            WHEN NEW.state = 'CANCELLED' AND NEW.cancel_cause IS NULL THEN NEW.step END),
        state = CASE WHEN w.steps_done + 1 < w.steps_total THEN 'RUNNING'
                     WHEN w.steps_failed + CASE WHEN NEW.state = 'FAILED' THEN 1 ELSE 0 END > 0
                     THEN 'FAILED'
                     WHEN w.steps_cancelled + CASE WHEN NEW.state = 'CANCELLED' THEN 1 ELSE 0 END
                          > 0 THEN 'CANCELLED'
                     ELSE 'COMPLETED' END,
        finished_at = CASE WHEN w.steps_done + 1 >= w.steps_total THEN now() END
    WHERE w.id = NEW.workflow_id;
    -- The workflow's own webhook, once per end, through the jobs' outbox (its row names the
    -- step whose end ended the workflow; `workflow_id` tells it apart from that job's own).
    INSERT INTO webhook_deliveries (job_id, owner_id, url, traceparent, payload, workflow_id)
    SELECT NEW.id, w.owner_id, w.callback_url, COALESCE(traceparent_text(NEW.trace),
                                                         NEW.traceparent),
           jsonb_build_object(
               'type', 'workflow.' || lower(w.state),
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'id', w.id, 'name', w.name, 'state', w.state,
                   'steps_total', w.steps_total, 'steps_done', w.steps_done,
                   'broken_step', w.broken_step, 'created_at', w.created_at,
                   'finished_at', w.finished_at)), w.id
    FROM workflows w
    WHERE w.id = NEW.workflow_id AND w.callback_url IS NOT NULL AND w.state <> 'RUNNING'
      AND w.finished_at IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries d WHERE d.workflow_id = w.id
            AND d.created_at >= w.finished_at);
    RETURN NULL;
END $$
"""

# A step back from an end (an owner's retry of a FAILED step, or of a step cancelled
# upstream): one end fewer in its workflow's count, and the workflow runs again.
STEP_REOPEN = """
CREATE FUNCTION jobs_workflow_step_reopen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workflows w SET steps_done = GREATEST(w.steps_done - 1, 0), updated_at = now(),
        steps_failed = w.steps_failed - CASE WHEN OLD.state = 'FAILED' THEN 1 ELSE 0 END,
        steps_cancelled = w.steps_cancelled - CASE WHEN OLD.state = 'CANCELLED' THEN 1 ELSE 0 END,
        state = 'RUNNING', finished_at = NULL
    WHERE w.id = NEW.workflow_id;
    RETURN NULL;
END $$
"""


# The created event of a step with parents says WAITING (the view derives it, migration 0010).
WAITING_IF_PARENTS = """CASE WHEN j.workflow_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM job_deps d WHERE d.child_id = j.id AND d.created_with)
            THEN 'WAITING' ELSE 'PENDING' END"""
JOB_TRAIL = """
CREATE OR REPLACE VIEW job_trail AS
SELECT CAST(0 AS bigint) AS id, j.id AS job_id, CAST(NULL AS text) AS from_state,
       CAST({waiting} AS text) AS to_state,
       CAST('created' AS text) AS reason, 0 AS attempt,
       CASE WHEN j.schedule_id IS NULL THEN CAST('{}' AS jsonb)
            ELSE jsonb_build_object(
                'schedule_id', CAST(j.schedule_id AS text),
                'fire_time', to_char(j.fire_time AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'))
       END AS details,
       j.created_at AS at
FROM jobs j
UNION ALL
SELECT e.id, e.job_id, e.from_state, e.to_state, e.reason, e.attempt, e.details, e.at
FROM job_events e WHERE e.reason <> 'created'""".replace("{waiting}", WAITING_IF_PARENTS)


def upgrade() -> None:
    op.execute("ALTER TABLE jobs DROP CONSTRAINT ck_jobs_state")
    op.execute(f"ALTER TABLE jobs ADD CONSTRAINT ck_jobs_state CHECK (state IN {STATES})")
    op.execute("ALTER TABLE job_events DROP CONSTRAINT ck_job_events_to_state")
    op.execute("ALTER TABLE job_events ADD CONSTRAINT ck_job_events_to_state "
               f"CHECK (to_state IN {STATES})")
    op.create_table(
        "workflows",
        sa.Column("id", UUID(as_uuid=True), primary_key=True,
                  server_default=sa.text("uuid_v7()")),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="RUNNING"),
        sa.Column("steps_total", sa.Integer, nullable=False),
        sa.Column("steps_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("steps_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("steps_cancelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("broken_step", sa.Text),
        sa.Column("callback_url", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TS),
        sa.CheckConstraint("state IN ('RUNNING','COMPLETED','FAILED','CANCELLED')",
                           name="ck_workflows_state"),
    )
    op.execute("CREATE UNIQUE INDEX uq_workflows_owner_key ON workflows (owner_id, "
               "idempotency_key) WHERE idempotency_key IS NOT NULL")
    op.execute("CREATE INDEX ix_workflows_owner_created ON workflows (owner_id, created_at)")
    op.add_column("jobs", sa.Column("workflow_id", UUID(as_uuid=True)))
    op.add_column("jobs", sa.Column("step", sa.Text))
    op.add_column("jobs", sa.Column("waiting_on", sa.Integer))
    op.add_column("jobs", sa.Column("on_upstream_failure", sa.Text))
    op.add_column("jobs", sa.Column("spawned_by", UUID(as_uuid=True)))
    op.add_column("jobs", sa.Column("spawn_key", sa.Text))
    op.add_column("jobs", sa.Column("cancel_cause", sa.Text))
    op.execute("CREATE UNIQUE INDEX uq_jobs_workflow_step ON jobs (workflow_id, step) "
               "WHERE workflow_id IS NOT NULL")
    op.execute("CREATE UNIQUE INDEX uq_jobs_spawn ON jobs (spawned_by, spawn_key) "
               "WHERE spawned_by IS NOT NULL")
    op.create_table(
        "job_deps",
        sa.Column("parent_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("child_id", UUID(as_uuid=True), primary_key=True),
        # False for an edge a spawn added later (a spawned child to its spawner's dependents):
        # the dependent was already WAITING, created so for its declared parents.
        sa.Column("created_with", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index("ix_job_deps_child", "job_deps", ["child_id"])
    op.add_column("webhook_deliveries", sa.Column("workflow_id", UUID(as_uuid=True)))
    # A schedule may start a workflow instead of a job: its graph (validated when the schedule
    # is written) instead of a job's preset and content; each fire creates one, keyed by the
    # schedule and the fire time, so a pass retried after a crash creates it once.
    op.add_column("schedules", sa.Column("workflow", sa.dialects.postgresql.JSONB))
    op.add_column("schedules", sa.Column("last_workflow_id", UUID(as_uuid=True)))
    op.execute("ALTER TABLE schedules ALTER COLUMN preset DROP NOT NULL, "
               "ALTER COLUMN content DROP NOT NULL")
    op.execute("ALTER TABLE schedules ADD CONSTRAINT ck_schedules_job_or_workflow "
               "CHECK ((workflow IS NULL) = (preset IS NOT NULL AND content IS NOT NULL))")
    # A fire that started a workflow names it in its details instead of a job.
    op.execute("ALTER TABLE schedule_events DROP CONSTRAINT ck_schedule_events_job_iff_fired")
    op.execute("ALTER TABLE schedule_events ADD CONSTRAINT ck_schedule_events_job_iff_fired "
               "CHECK ((kind = 'fired') = (job_id IS NOT NULL OR details ? 'workflow_id'))")
    op.execute("CREATE INDEX ix_webhook_deliveries_workflow ON webhook_deliveries "
               "(workflow_id) WHERE workflow_id IS NOT NULL")
    op.execute(JOB_TRAIL)
    op.execute(STEP_END)
    op.execute(STEP_REOPEN)
    op.execute(
        "CREATE TRIGGER tr_jobs_workflow_step_end AFTER UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (NEW.workflow_id IS NOT NULL AND OLD.state IN ('WAITING','PENDING','PROCESSING') "
        "AND NEW.state IN ('COMPLETED','FAILED','CANCELLED')) "
        "EXECUTE FUNCTION jobs_workflow_step_end()"
    )
    op.execute(
        "CREATE TRIGGER tr_jobs_workflow_step_reopen AFTER UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (NEW.workflow_id IS NOT NULL AND OLD.state IN ('COMPLETED','FAILED','CANCELLED') "
        "AND NEW.state IN ('WAITING','PENDING','PROCESSING')) "
        "EXECUTE FUNCTION jobs_workflow_step_reopen()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_workflow_step_reopen ON jobs")
    op.execute("DROP TRIGGER IF EXISTS tr_jobs_workflow_step_end ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_step_reopen()")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_step_end()")
    op.execute(JOB_TRAIL.replace(WAITING_IF_PARENTS, "'PENDING'"))
    op.execute("DELETE FROM schedule_events WHERE details ? 'workflow_id'")
    op.execute("ALTER TABLE schedule_events DROP CONSTRAINT ck_schedule_events_job_iff_fired")
    op.execute("ALTER TABLE schedule_events ADD CONSTRAINT ck_schedule_events_job_iff_fired "
               "CHECK ((kind = 'fired') = (job_id IS NOT NULL))")
    op.execute("DELETE FROM schedules WHERE workflow IS NOT NULL")
    op.execute("ALTER TABLE schedules DROP CONSTRAINT ck_schedules_job_or_workflow, "
               "ALTER COLUMN preset SET NOT NULL, ALTER COLUMN content SET NOT NULL")
    op.drop_column("schedules", "last_workflow_id")
    op.drop_column("schedules", "workflow")
    op.drop_table("job_deps")
    op.execute("DELETE FROM webhook_deliveries WHERE workflow_id IS NOT NULL")
    op.drop_column("webhook_deliveries", "workflow_id")
    op.execute("DROP INDEX IF EXISTS uq_jobs_spawn")
    op.execute("DROP INDEX IF EXISTS uq_jobs_workflow_step")
    for column in ("cancel_cause", "spawn_key", "spawned_by", "on_upstream_failure", "waiting_on", "step",
                   "workflow_id"):
        op.drop_column("jobs", column)
    op.drop_table("workflows")
    op.execute("DELETE FROM jobs WHERE state = 'WAITING'")
    op.execute("DELETE FROM job_events WHERE to_state = 'WAITING'")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT ck_jobs_state")
    op.execute(f"ALTER TABLE jobs ADD CONSTRAINT ck_jobs_state CHECK (state IN {OLD_STATES})")
    op.execute("ALTER TABLE job_events DROP CONSTRAINT ck_job_events_to_state")
    op.execute("ALTER TABLE job_events ADD CONSTRAINT ck_job_events_to_state "
               f"CHECK (to_state IN {OLD_STATES})")
