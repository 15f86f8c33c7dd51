"""Live jobs: progress, the trace, completion webhooks (issue 16).

- `jobs.progress*`: the last progress a handler reported, written by the heartbeat (and the
  final exit), never by a write of its own; `progress_attempt` says which attempt reported it.
- `jobs.traceparent`: the W3C trace of the request that created the job, so every later
  message and webhook of the job joins that trace.
- `jobs.callback_url`: where the job's end is POSTed (checked against SSRF at submit and again
  at each delivery).
- `webhook_secrets`: one signing secret per owner (and the previous one during a rotation's
  grace period), stored encrypted when WEBHOOK_SECRET_KEY is set.
- `webhook_deliveries`: the outbox. A trigger inserts a row whenever a job with a callback URL
  moves into a terminal state, inside the statement that makes the move, so whichever code path
  ends a job (worker exit, cancel, rescue, dead letter, or a move added later) the delivery
  commits with it or not at all. The payload is a snapshot of the job and its result as they
  were at that moment: a later retry of the job cannot change what this delivery says, and the
  delivery's id (the `webhook-id`) stays the same on every attempt, so receivers dedupe.

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

# Runs as an AFTER ROW trigger, so it fires at the end of the statement that moved the job, when
# that statement's `job_results` row (written by a sibling CTE) is visible: the snapshot holds
# the result. `job.<state lowercased>` is the event type, as Standard Webhooks suggests.
ENQUEUE = """
CREATE FUNCTION jobs_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, owner_id, url, traceparent, payload)
    SELECT NEW.id, NEW.owner_id, NEW.callback_url, NEW.traceparent,
           jsonb_build_object(
               'type', 'job.' || lower(NEW.state),
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'id', NEW.id, 'preset', NEW.preset, 'state', NEW.state,
                   'attempts', NEW.attempts, 'metadata', NEW.metadata,
                   'created_at', NEW.created_at, 'finished_at', NEW.finished_at,
                   'result', (SELECT jsonb_build_object(
                                  'status', r.status, 'output', r.output,
                                  'error_type', r.error_type, 'error_message', r.error_message,
                                  'duration_ms', r.duration_ms)
                              FROM job_results r WHERE r.job_id = NEW.id)));
    RETURN NULL;
END $$
"""

TRIGGER = """
CREATE TRIGGER jobs_webhook_on_end AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.callback_url IS NOT NULL
      AND NEW.state IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION jobs_enqueue_webhook()
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("progress", sa.REAL))
    op.add_column("jobs", sa.Column("progress_note", sa.Text))
    op.add_column("jobs", sa.Column("progress_at", TS))
    op.add_column("jobs", sa.Column("progress_attempt", sa.Integer))
    op.add_column("jobs", sa.Column("callback_url", sa.Text))
    op.add_column("jobs", sa.Column("traceparent", sa.Text))
    op.create_check_constraint(
        "ck_jobs_progress_fraction", "jobs", "progress IS NULL OR (progress >= 0 AND progress <= 1)"
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text),
        sa.Column("previous_until", TS),
        sa.Column("rotated_at", TS, nullable=False, server_default=sa.text("now()")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True,
                  server_default=sa.text("gen_random_uuid()")),
        sa.Column("job_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("traceparent", sa.Text),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("delivered_at", TS),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'given_up')",
                           name="ck_webhook_deliveries_state"),
        sa.CheckConstraint("(state = 'delivered') = (delivered_at IS NOT NULL)",
                           name="ck_webhook_deliveries_delivered_at"),
    )
    # The sweep's step and process pick due deliveries on this partial index only.
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) "
        "WHERE state = 'pending'"
    )
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id"])
    op.execute(ENQUEUE)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_webhook_on_end ON jobs")
    op.execute("DROP FUNCTION jobs_enqueue_webhook()")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")
    op.drop_constraint("ck_jobs_progress_fraction", "jobs")
    for column in ("traceparent", "callback_url", "progress_attempt", "progress_at",
                   "progress_note", "progress"):
        op.drop_column("jobs", column)
