"""Long jobs (issue 29): a job whose handler runs in a Cloud Run job execution, not in the push.

- `jobs.execution`, `jobs.execution_attempt`: the execution running the job's attempt
  `execution_attempt` (its short name; the executor knows where it runs). Written by whichever
  of `process` (after the start) and the execution itself (before the handler) comes first,
  guarded by state and attempt, and by not being recorded for that attempt yet or recorded
  with the same name: once set, no other execution can take that attempt, and a start that
  failed can no longer put the job back. The next attempt's record replaces it, so the claim
  never writes these columns.
- `jobs.start_failures`, `jobs.start_failed_since`: starts that failed (quota, permission)
  since the job last got an execution. A failed start is a delivery failure, not a job failure:
  the attempt it claimed is given back (`attempt_limit + 1`, as a lost lease gives one) and the
  job waits a growing delay; it ends FAILED 'Unstartable' once starts have failed for
  DELIVERY_BUDGET_S. Kept apart from `delivery_failures`, which each claim resets.

Short jobs never write these columns, and no statement of theirs reads them.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("execution", sa.Text))
    op.add_column("jobs", sa.Column("execution_attempt", sa.Integer))
    op.add_column("jobs", sa.Column("start_failures", sa.SmallInteger, nullable=False,
                                    server_default="0"))
    op.add_column("jobs", sa.Column("start_failed_since", sa.TIMESTAMP(timezone=True)))


def downgrade() -> None:
    for column in ("start_failed_since", "start_failures", "execution_attempt", "execution"):
        op.drop_column("jobs", column)
