"""Deliveries waiting for their owner's signing secret leave the due index (issue 25).

A delivery whose owner has no signing secret (or one the server's key cannot open) is not
sent; it used to stay `pending` and due, at the head of `ix_webhook_deliveries_due`, where
every take scanned past it: 200,000 of them made each take 50-96 ms instead of 0.5 ms. Now the
first take that meets it moves its `next_attempt_at` to a fixed far date (PARKED_AT in
common/store/webhooks.py), out of every take's range, and creating or rotating the owner's
secret makes it due again in the same statement. This partial index finds an owner's waiting
deliveries for that statement (and for the sweep's check of recently rotated owners) without
reading anyone else's. No rows change here: existing ones are moved by the first take.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_waiting ON webhook_deliveries (owner_id) "
        "WHERE state = 'pending' AND next_attempt_at = TIMESTAMPTZ '9999-01-01 00:00:00+00'"
    )


def downgrade() -> None:
    # Waiting rows become due again, as they were before this revision.
    op.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() "
        "WHERE state = 'pending' AND next_attempt_at = TIMESTAMPTZ '9999-01-01 00:00:00+00'"
    )
    op.execute("DROP INDEX ix_webhook_deliveries_waiting")
