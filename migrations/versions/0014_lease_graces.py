"""A lease lost on the last attempt gives the job one more attempt, once (issue #25, bug 4);
a schedule's job template may carry a callback URL (issue #31).

A worker whose final write could not reach the database (our outage, not the handler's
failure) stops heartbeating; its lease lapses and the sweep used to end a job on its last
attempt FAILED 'LeaseExpired', although its handler may have succeeded. The rescue now gives
such a job one more attempt instead, counted in `lease_graces` so that it is granted once per
job (an owner's retry starts the count afresh): a handler that kills its instance every time
still ends FAILED 'LeaseExpired', one attempt later.

`schedules.callback_url`: the URL each fired job is created with (checked like POST /jobs'
when the schedule is stored, and again at every delivery); the webhook outbox trigger then
treats the job like any other with a callback.

Adding a NOT NULL column with a constant default rewrites nothing (PostgreSQL 11+ stores the
default in the catalogue).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN lease_graces smallint NOT NULL DEFAULT 0 "
               "CONSTRAINT ck_jobs_lease_graces CHECK (lease_graces >= 0)")
    op.execute("ALTER TABLE schedules ADD COLUMN callback_url text")


def downgrade() -> None:
    op.execute("ALTER TABLE schedules DROP COLUMN callback_url")
    op.execute("ALTER TABLE jobs DROP COLUMN lease_graces")
