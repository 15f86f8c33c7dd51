"""Reading at most so many bytes of a Flask request's body."""

from __future__ import annotations

import flask


def read_at_most(request: flask.Request, limit: int) -> bytes:
    """At most `limit` bytes of the body: a stream may return less per read."""
    chunks, size = [], 0
    while size < limit:
        chunk = request.stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
