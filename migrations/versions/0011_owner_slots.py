"""An owner's running-jobs counter is kept only while the owner has a limit (issue 14).

Before, every claim upserted the owner's `owner_running` row and every exit decremented it by
trigger, for owners without a limit too: a row lock, two row versions and a trigger per job
that limit nothing. Now the claim takes a slot only when the owner's limit is above zero, and
marks the job `holds_slot`; the trigger gives a slot back only for a job that holds one.

`holds_slot` is NULL on rows claimed before this migration (old code always counted them), and
the trigger treats NULL as holding a slot, so a rolling deploy keeps the counter right. When a
limit is set, the owner's running jobs are adopted (marked, counted) in the same statement
(common/store/fair_share.py); a claim already in flight at that moment runs uncounted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

LEAVE = ("CREATE TRIGGER tr_jobs_leave_processing AFTER UPDATE OF state ON jobs FOR EACH ROW "
         "WHEN (OLD.state = 'PROCESSING' AND NEW.state <> 'PROCESSING'{extra}) "
         "EXECUTE FUNCTION jobs_release_owner_slot()")
DELETE = ("CREATE TRIGGER tr_jobs_delete_processing AFTER DELETE ON jobs FOR EACH ROW "
          "WHEN (OLD.state = 'PROCESSING'{extra}) EXECUTE FUNCTION jobs_release_owner_slot()")
HOLDS = " AND OLD.holds_slot IS DISTINCT FROM false"


def _triggers(extra: str) -> None:
    op.execute("DROP TRIGGER tr_jobs_leave_processing ON jobs")
    op.execute("DROP TRIGGER tr_jobs_delete_processing ON jobs")
    op.execute(LEAVE.format(extra=extra))
    op.execute(DELETE.format(extra=extra))


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN holds_slot boolean")
    _triggers(HOLDS)


def downgrade() -> None:
    _triggers("")
    op.execute("ALTER TABLE jobs DROP COLUMN holds_slot")
