"""Fewer WAL bytes per job (issue 14): time-ordered ids, one owner index, no foreign-key locks,
and the 'created' event read from the job's own row.

Measured with pg_walinspect over 2,000 store lifecycles (create, claim, complete) on a 2-core VM:
3,258 bytes of WAL per job before, about 2,380 after. Where each saving comes from:

- `jobs.id` defaults to a UUIDv7 (`uuid_v7()`, 48 bits of milliseconds then 74 random bits;
  PostgreSQL 15 has no built-in). New keys land at the right edge of the primary key (and of
  `job_events`' and `job_results`' keys, which start with the job id) instead of on a random
  page: fewer full-page images after a checkpoint and no 50/50 page splits. ~90 B.
- `ix_jobs_owner_created` is dropped; `ix_jobs_owner_state_created` is rebuilt ascending. An
  owner's list without a state filter is now one short backward scan per state, merged
  (common/store/callers.py). Every non-HOT update wrote an entry into both indexes; now one.
  Ascending keys put a new job at the right edge of its owner's range. ~350 B.
- The foreign keys from `job_events` and `job_results` to `jobs` are dropped. Each checked row
  locked its job (`FOR KEY SHARE`, a WAL record of its own, and a trigger's query). Nothing can
  write an orphan: every event and result row is written by the statement that moves its job,
  from that statement's locked row, and retention deletes a job's events and results in the
  statement that deletes the job (`SQL_PURGE`). `webhook_deliveries` keeps its foreign key: it is
  written only for jobs with a callback URL. ~160 B.
- The 'created' event is no longer a row: every job is created PENDING at attempt 0, at
  `created_at`, and a scheduled job's event names its schedule and fire time, all of which the
  job's row holds unchanged for its life. The view `job_trail` serves the trail as before, with
  the created event synthesised (id 0, so it sorts first); 'created' rows written before this
  migration are skipped by the view and pruned with their jobs. ~260 B.

On a large `jobs` table the index rebuild takes a write lock for its duration; run it in a
quiet period (README, Upgrading).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UUID_V7 = """
CREATE FUNCTION uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid()) PLACING
              substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                        FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$"""

# A scheduled job's created event carries its schedule and fire time, as the row it replaces
# did (the fire time in UTC, RFC 3339).
JOB_TRAIL = """
CREATE VIEW job_trail AS
SELECT CAST(0 AS bigint) AS id, j.id AS job_id, CAST(NULL AS text) AS from_state,
       CAST('PENDING' AS text) AS to_state, CAST('created' AS text) AS reason, 0 AS attempt,
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
FROM job_events e WHERE e.reason <> 'created'"""


def upgrade() -> None:
    op.execute(UUID_V7)
    op.execute("ALTER TABLE jobs ALTER COLUMN id SET DEFAULT uuid_v7()")
    op.execute("DROP INDEX ix_jobs_owner_created")
    op.execute("DROP INDEX ix_jobs_owner_state_created")
    op.execute(
        "CREATE INDEX ix_jobs_owner_state_created ON jobs (owner_id, state, created_at, id)"
    )
    op.execute("ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey")
    op.execute("ALTER TABLE job_results DROP CONSTRAINT job_results_job_id_fkey")
    op.execute(JOB_TRAIL)


def downgrade() -> None:
    op.execute("DROP VIEW job_trail")
    # The created events become rows again. Their ids come after the job's other events, so a
    # trail read by id would show them last; `at` still orders them first.
    op.execute(
        "INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details, at) "
        "SELECT j.id, NULL, 'PENDING', 'created', 0, "
        "CASE WHEN j.schedule_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object("
        "'schedule_id', CAST(j.schedule_id AS text), 'fire_time', CAST(j.fire_time AS text)) END, "
        "j.created_at FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM job_events e "
        "WHERE e.job_id = j.id AND e.reason = 'created')"
    )
    op.execute("DELETE FROM job_events e WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)")
    op.execute("DELETE FROM job_results r WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id)")
    op.execute("ALTER TABLE job_events ADD CONSTRAINT job_events_job_id_fkey FOREIGN KEY (job_id) "
               "REFERENCES jobs (id) ON DELETE CASCADE")
    op.execute("ALTER TABLE job_results ADD CONSTRAINT job_results_job_id_fkey "
               "FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE")
    op.execute("DROP INDEX ix_jobs_owner_state_created")
    op.execute("CREATE INDEX ix_jobs_owner_state_created ON jobs "
               "(owner_id, state, created_at DESC, id DESC)")
    op.execute("CREATE INDEX ix_jobs_owner_created ON jobs (owner_id, created_at DESC, id DESC)")
    op.execute("ALTER TABLE jobs ALTER COLUMN id SET DEFAULT gen_random_uuid()")
    op.execute("DROP FUNCTION uuid_v7()")
