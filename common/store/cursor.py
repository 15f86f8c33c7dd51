"""Keyset cursors for listing an owner's jobs newest first.

The cursor carries the (created_at, id) of the last row shown, as microseconds since the epoch
and the id's hex: `1732612345123456.3fa85f6457174562b3fc2c963f66afa6`. The format is a plain
pattern (CURSOR_PATTERN, published in the OpenAPI document), and every string that matches it
decodes to a valid position, so a schema-valid cursor is never refused. It is not signed: every
query it feeds is scoped to the caller's owner id, so a forged cursor can only skip through the
caller's own jobs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from common.store.errors import InvalidCursor

# 16 digits of microseconds reach the year 2286: always a valid datetime.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{32}$"
# In a query, an empty cursor means the first page.
QUERY_CURSOR_PATTERN = r"^(?:[0-9]{1,16}\.[0-9a-f]{32})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, job_id: UUID) -> str:
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{job_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor()
    micros, hex_id = cursor.split(".")
    return EPOCH + timedelta(microseconds=int(micros)), UUID(hex=hex_id)
