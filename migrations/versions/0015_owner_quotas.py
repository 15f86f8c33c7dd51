"""Per-owner quotas at the door (issue 27): overrides of OWNER_MAX_SUBMITS_PER_S and
OWNER_MAX_PENDING, kept where the override of OWNER_MAX_RUNNING already is.

`owner_limits` gains two nullable columns; NULL means the setting's default applies, as does a
missing row. `max_running` becomes nullable for the same reason, so an owner may have a quota
override without a running-limit override: every reader already takes
COALESCE(max_running, default), and clearing the running limit now sets it NULL (the row goes
once no override is left) instead of deleting the row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE owner_limits ALTER COLUMN max_running DROP NOT NULL")
    op.execute("ALTER TABLE owner_limits ADD COLUMN max_submits_per_s integer "
               "CONSTRAINT ck_owner_limits_max_submits_per_s CHECK (max_submits_per_s >= 0)")
    op.execute("ALTER TABLE owner_limits ADD COLUMN max_pending integer "
               "CONSTRAINT ck_owner_limits_max_pending CHECK (max_pending >= 0)")


def downgrade() -> None:
    op.execute("DELETE FROM owner_limits WHERE max_running IS NULL")
    op.execute("ALTER TABLE owner_limits DROP COLUMN max_pending")
    op.execute("ALTER TABLE owner_limits DROP COLUMN max_submits_per_s")
    op.execute("ALTER TABLE owner_limits ALTER COLUMN max_running SET NOT NULL")
