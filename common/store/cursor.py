"""Opaque keyset cursors for listing an owner's jobs newest first.

The cursor carries the (created_at, id) of the last row shown. It is not signed: every query it
feeds is scoped to the caller's owner id, so a forged cursor can only skip through the caller's
own jobs.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from uuid import UUID

from common.store.errors import InvalidCursor


def encode_cursor(created_at: datetime, job_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    if len(cursor) > 200:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, UUID(job_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None
