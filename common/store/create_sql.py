"""The statement that creates a job, in its four forms: keyed or not, counting the owner's
PENDING jobs or not (issue 27's quota at the door). Kept apart from the callers' other
statements (common/store/callers.py), which use them."""

from __future__ import annotations

from common.store.fragments import COLS, P, lit, target
from common.store.states import Move

# Run later: a delay counts on the database's clock; a time already past means now (NULL).
NOT_BEFORE = (
    "CASE WHEN CAST(:delay_s AS double precision) > 0 "
    "THEN now() + make_interval(secs => CAST(:delay_s AS double precision)) "
    "WHEN CAST(:not_before AS timestamptz) > now() THEN CAST(:not_before AS timestamptz) END"
)
# The owner's PENDING quota (issue 27), counted in the INSERT itself: no round trip of its own.
# It reads at most :max_pending entries of the owner's (owner, state, created, id) index, so
# its cost grows with the owner's own queue, up to its quota, and never with anyone else's. The
# statement always answers one row: the count it saw, and the new job's columns (NULL when the
# quota, or a key conflict, kept it from being written). Concurrent submits of one owner may
# each see room: the quota can be passed by as many requests as that owner has in flight.
PENDING_SEEN = f"""
WITH room AS (
    SELECT count(*) AS pending_seen FROM (
        SELECT 1 FROM jobs WHERE owner_id = :owner_id AND state = {lit(P)}
        LIMIT CAST(:max_pending AS integer)) q
), made AS (
{{insert}}
)
SELECT made.*, room.pending_seen FROM room LEFT JOIN made ON true"""


def _create_sql(keyed: bool, quota: bool = False) -> str:
    """One INSERT. A job's 'created' event is not a row of its own: the view `job_trail`
    derives it from the job (migration 0010). Only a keyed request pays for ON CONFLICT (a
    speculative insertion writes one more WAL record), and only a create asked to count the
    owner's PENDING jobs (`quota`) for the count (PENDING_SEEN)."""
    conflict = (
        "\n    ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        if keyed else ""
    )
    values = f"""(:owner_id, :preset, :content, CAST(:metadata AS jsonb), :max_attempts,
        :max_attempts, :idempotency_key, :request_hash, {target(Move.CREATE)},
        CAST(:callback_url AS text), traceparent_bytes(CAST(:traceparent AS text)), {NOT_BEFORE},
        CASE WHEN CAST(:dispatching AS boolean) AND ({NOT_BEFORE}) IS NULL THEN now() END,
        :priority, CAST(:limit_key AS text))"""
    source = (f"SELECT {values[1:-1]}\nWHERE (SELECT pending_seen FROM room) "
              "< CAST(:max_pending AS integer)") if quota else f"VALUES {values}"
    insert = f"""
INSERT INTO jobs (owner_id, preset, content, metadata, max_attempts, attempt_limit,
                  idempotency_key, request_hash, state, callback_url, trace,
                  not_before, dispatched_at, priority, limit_key)
{source}{conflict}
RETURNING {COLS}"""
    return PENDING_SEEN.replace("{insert}", insert) if quota else insert


SQL_CREATE = {keyed: _create_sql(keyed) for keyed in (False, True)}
SQL_CREATE_QUOTA = {keyed: _create_sql(keyed, quota=True) for keyed in (False, True)}
