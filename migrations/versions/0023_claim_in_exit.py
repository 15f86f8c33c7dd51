"""The 'claimed' event folded into the event that ends the attempt (issue 30).

A claim wrote a `job_events` row of its own (about 207 B of WAL per job: the heap tuple, its key
entry, and its share of the page). Every attempt that was claimed is ended by exactly one event
written by the statement that ends it: an exit (completed, failed, retry-scheduled,
attempts-exhausted, cancelled), a rescue (lease-expired-retry, lease-expired, cancelled) or a
failed start (start-failed, unstartable). That event now carries the attempt's claim:
`claimed_at` (the row's `started_at`, which only a claim writes) and `claim_id`, 16 bytes in a
row that is written anyway. The view `job_trail` serves the 'claimed' event as before:

- for each event with `claimed_at`, a claimed event of its attempt with id `claim_id`, at
  `claimed_at`;
- for a job PROCESSING now, a claimed event of its current attempt with the job's `claim_id`,
  at `started_at`.

`claim_id` is drawn from the events' own sequence by the claim (`jobs.claim_id`, in the row
version the claim writes anyway), so a claim's id is greater than every event before it and
less than every event after it, exactly as the row it replaces: the trail still sorts by id, and
ids stay unique and never change.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# As migration 0021's view, plus the synthesised claims.
WAITING_IF_PARENTS = """CASE WHEN j.workflow_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM job_deps d WHERE d.child_id = j.id AND d.created_with)
            THEN 'WAITING' ELSE 'PENDING' END"""
CREATED = """
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
FROM jobs j""".replace("{waiting}", WAITING_IF_PARENTS)
ROWS = """
SELECT e.id, e.job_id, e.from_state, e.to_state, e.reason, e.attempt, e.details, e.at
FROM job_events e WHERE e.reason <> 'created'"""
NO_CLAIM_ROW = """NOT EXISTS (SELECT 1 FROM job_events c WHERE c.job_id = {job} AND c.attempt = {attempt}
                      AND c.reason = 'claimed')"""
CLAIMS = f"""
SELECT e.claim_id, e.job_id, CAST('PENDING' AS text), CAST('PROCESSING' AS text),
       CAST('claimed' AS text), e.attempt, CAST('{{}}' AS jsonb), e.claimed_at
FROM job_events e
WHERE e.claim_id IS NOT NULL
  AND {NO_CLAIM_ROW.format(job="e.job_id", attempt="e.attempt")}
UNION ALL
SELECT j.claim_id, j.id,
       CAST('PENDING' AS text), CAST('PROCESSING' AS text), CAST('claimed' AS text),
       j.attempts, CAST('{{}}' AS jsonb), j.started_at
FROM jobs j
WHERE j.state = 'PROCESSING' AND j.claim_id IS NOT NULL
  AND {NO_CLAIM_ROW.format(job="j.id", attempt="j.attempts")}"""

# Same columns as before: replaced in place, so the grants on the view stay.
JOB_TRAIL = f"CREATE OR REPLACE VIEW job_trail AS {CREATED}\nUNION ALL{ROWS}\nUNION ALL{CLAIMS}"
OLD_JOB_TRAIL = f"CREATE OR REPLACE VIEW job_trail AS {CREATED}\nUNION ALL{ROWS}"

# The downgrade: each synthesised claim becomes the row the older code would have written, with
# the id it had in the trail (drawn from the same sequence, so unique and in order).
MATERIALISE = f"""
INSERT INTO job_events (id, job_id, from_state, to_state, reason, attempt, details, at)
OVERRIDING SYSTEM VALUE
SELECT id, job_id, from_state, to_state, reason, attempt, details, at FROM ({CLAIMS}) AS c(
    id, job_id, from_state, to_state, reason, attempt, details, at)"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claim_id", sa.BigInteger))
    op.add_column("job_events", sa.Column("claim_id", sa.BigInteger))
    op.add_column("job_events", sa.Column("claimed_at", sa.TIMESTAMP(timezone=True)))
    op.execute(JOB_TRAIL)


def downgrade() -> None:
    op.execute(MATERIALISE)
    op.execute(OLD_JOB_TRAIL)
    op.drop_column("job_events", "claimed_at")
    op.drop_column("job_events", "claim_id")
    op.drop_column("jobs", "claim_id")
