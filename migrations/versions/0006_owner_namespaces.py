"""Owners are namespaced by who vouches for them: `google:<sub>` or `hs256:<sub>`.

Before, the owner was the token's bare `sub`, whatever its issuer, so anyone holding the HS256
secret could act as a Google-authenticated owner by minting a token with that owner's numeric
`sub`. Existing rows carry no issuer, so this rule assigns one: Google's subjects are decimal
numbers of 15 or more digits (21 in practice), so an all-digit owner of 15+ digits becomes
`google:<sub>` and every other owner `hs256:<sub>`. A service that used such a numeric HS256
subject must be told its jobs now belong to `google:<sub>` (the README says so). The downgrade
strips the namespace again; it refuses to run if that would merge two owners' idempotency keys.

Owners grow by at most 7 characters; the column is text, and the store allows 320.
The owner-scoped indexes (owner/created, owner/state/created, owner/idempotency key) are on the
column's value, so they carry over unchanged.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GOOGLE_SUB = "^[0-9]{15,}$"


def upgrade() -> None:
    # Every row, even one whose bare sub already looks namespaced: an HS256 subject
    # "hs256:x" must not end up the same owner as a token whose subject is "x". One statement
    # (it rewrites every jobs row: run it in a quiet hour on a large table).
    op.execute(
        f"""
        UPDATE jobs SET owner_id = CASE
            WHEN owner_id ~ '{GOOGLE_SUB}' THEN 'google:' || owner_id
            ELSE 'hs256:' || owner_id END
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
        IF EXISTS (
            SELECT 1 FROM jobs WHERE idempotency_key IS NOT NULL
            GROUP BY regexp_replace(owner_id, '^(google|hs256):', ''), idempotency_key
            HAVING count(*) > 1
        ) THEN
            RAISE EXCEPTION 'cannot downgrade 0006: a google and an hs256 owner with the same '
                            'subject share an idempotency key';
        END IF;
        END $$
        """
    )
    op.execute(
        "UPDATE jobs SET owner_id = regexp_replace(owner_id, '^(google|hs256):', '') "
        "WHERE owner_id ~ '^(google|hs256):'"
    )
