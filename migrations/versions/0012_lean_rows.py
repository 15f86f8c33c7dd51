"""Leaner job rows (issue 14): the result in the job's row, the trace as bytes.

The result was a row of its own, written beside the job's final update: a heap tuple and a
primary-key entry per job. It is now four columns of `jobs`, set by the statement that ends the
job, in the row version that statement writes anyway. What the table said in two more columns
the job row already holds: the status is the state (COMPLETED → succeeded, FAILED → failed) and
the time is `finished_at`. A job has a result exactly while it is COMPLETED or FAILED: check
constraints refuse result columns on any other state and demand an error type exactly when
FAILED (as the table's own check did), so a retried job (FAILED → PENDING) must clear them, which
its statement does (the previous error goes into the `retried` event).

"Written once" is unchanged: the statement that writes the result is the one that ends the job,
guarded by state and attempt, and an ended job is never moved again but by an owner's retry.

`job_results` becomes a view of the same shape, for reading (operators' SQL, the tests).

The job's W3C trace is kept as 26 bytes, not 55 characters. `traceparent`
(`00-<32 hex>-<16 hex>-<2 hex>`) rode in every version of the row: the insert and both
transitions, each logged in full when the new version lands on another page. The new column
`trace` holds the same four fields as bytes (27 bytes stored instead of 56), and
`traceparent_text()` spells it back out where a statement reads it. Rows written before this
migration keep their text in `traceparent` and are read from there (no table rewrite); nothing
writes that column any more. A value that is not a well-formed traceparent is stored as NULL
(the job just has no trace), never an error: the application only ever passes valid ones.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW job_results AS
SELECT id AS job_id,
       CASE state WHEN 'COMPLETED' THEN 'succeeded' ELSE 'failed' END AS status,
       result_output AS output, result_error_type AS error_type,
       result_error_message AS error_message, result_duration_ms AS duration_ms,
       finished_at AS created_at
FROM jobs WHERE state IN ('COMPLETED', 'FAILED')"""

TO_BYTES = r"""
CREATE FUNCTION traceparent_bytes(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN t ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
              THEN decode(replace(t, '-', ''), 'hex') END
$$"""

TO_TEXT = r"""
CREATE FUNCTION traceparent_text(b bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT substr(encode(b, 'hex'), 1, 2) || '-' || substr(encode(b, 'hex'), 3, 32) || '-'
         || substr(encode(b, 'hex'), 35, 16) || '-' || substr(encode(b, 'hex'), 51, 2)
$$"""

# The webhook payload's result and trace, now from the row the trigger is given.
ENQUEUE = """
CREATE OR REPLACE FUNCTION jobs_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, owner_id, url, traceparent, payload)
    SELECT NEW.id, NEW.owner_id, NEW.callback_url,
           COALESCE(traceparent_text(NEW.trace), NEW.traceparent),
           jsonb_build_object(
               'type', 'job.' || lower(NEW.state),
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'id', NEW.id, 'preset', NEW.preset, 'state', NEW.state,
                   'attempts', NEW.attempts, 'metadata', NEW.metadata,
                   'created_at', NEW.created_at, 'finished_at', NEW.finished_at,
                   'result', CASE WHEN NEW.state IN ('COMPLETED', 'FAILED') THEN
                                  jsonb_build_object(
                                      'status', CASE NEW.state WHEN 'COMPLETED' THEN 'succeeded'
                                                ELSE 'failed' END,
                                      'output', NEW.result_output,
                                      'error_type', NEW.result_error_type,
                                      'error_message', NEW.result_error_message,
                                      'duration_ms', NEW.result_duration_ms) END));
    RETURN NULL;
END $$
"""

def _enqueue_of_0008() -> str:
    """The trigger function as migration 0008 wrote it, read from that migration."""
    from alembic import context
    from alembic.script import ScriptDirectory

    revision_0008 = ScriptDirectory.from_config(context.config).get_revision("0008")
    assert revision_0008 is not None
    return str(revision_0008.module.ENQUEUE).replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN result_output jsonb, "
               "ADD COLUMN result_error_type text, ADD COLUMN result_error_message text, "
               "ADD COLUMN result_duration_ms integer")
    op.execute("UPDATE jobs j SET result_output = r.output, result_error_type = r.error_type, "
               "result_error_message = r.error_message, result_duration_ms = r.duration_ms "
               "FROM job_results r WHERE r.job_id = j.id AND j.state IN ('COMPLETED', 'FAILED')")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT ck_jobs_result_only_when_ended CHECK ("
               "state IN ('COMPLETED', 'FAILED') OR (result_output IS NULL "
               "AND result_error_message IS NULL AND result_duration_ms IS NULL))")
    # As the table's own check said: an error type iff failed.
    op.execute("ALTER TABLE jobs ADD CONSTRAINT ck_jobs_result_error_iff_failed CHECK ("
               "(state = 'FAILED') = (result_error_type IS NOT NULL))")
    op.execute("DROP TABLE job_results")
    op.execute(VIEW)
    op.execute(TO_BYTES)
    op.execute(TO_TEXT)
    op.execute("ALTER TABLE jobs ADD COLUMN trace bytea")
    op.execute(ENQUEUE)


def downgrade() -> None:
    op.execute(_enqueue_of_0008())
    op.execute("UPDATE jobs SET traceparent = traceparent_text(trace) WHERE trace IS NOT NULL")
    op.execute("ALTER TABLE jobs DROP COLUMN trace")
    op.execute("DROP FUNCTION traceparent_text(bytea)")
    op.execute("DROP FUNCTION traceparent_bytes(text)")
    op.execute("DROP VIEW job_results")
    op.execute("""
        CREATE TABLE job_results (
            job_id uuid PRIMARY KEY,
            status text NOT NULL,
            output jsonb,
            error_type text,
            error_message text,
            duration_ms integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_job_results_status CHECK (status IN ('succeeded','failed')),
            CONSTRAINT ck_job_results_error_iff_failed
                CHECK ((status = 'failed') = (error_type IS NOT NULL))
        )""")
    op.execute("INSERT INTO job_results (job_id, status, output, error_type, error_message, "
               "duration_ms, created_at) "
               "SELECT id, CASE state WHEN 'COMPLETED' THEN 'succeeded' ELSE 'failed' END, "
               "result_output, result_error_type, result_error_message, result_duration_ms, "
               "finished_at FROM jobs WHERE state IN ('COMPLETED', 'FAILED')")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT ck_jobs_result_only_when_ended, "
               "DROP CONSTRAINT ck_jobs_result_error_iff_failed")
    op.execute("ALTER TABLE jobs DROP COLUMN result_output, DROP COLUMN result_error_type, "
               "DROP COLUMN result_error_message, DROP COLUMN result_duration_ms")
