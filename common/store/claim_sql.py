"""The claim: PENDING -> PROCESSING under a lease, or the job parked or held by a limit, in one
statement (the worker's moves that follow it are in common/store/worker_moves.py)."""

from __future__ import annotations

from common.store.flow_sql import FLOW_STARTED, GOVERNS, RESERVED, claim_gate
from common.store.fragments import CLAIM_ID, COLS, OUT_COLS, sources, target
from common.store.states import Move


def _claim_sql(expect_attempts: bool) -> str:
    """PENDING -> PROCESSING if the owner has a free slot, else park the job (fair share,
    common/store/fair_share.py).

    An owner without a limit needs no lock before the update: the UPDATE locks the row, and a
    duplicate delivery waiting on that lock re-checks the claimable condition on the new row
    version and finds it claimed. It writes no counter (migration 0011) and takes no extra row
    lock (a WAL record of its own).

    An owner with a limit locks the job row first (`locked`, which re-checks the condition after
    any wait), so a duplicate can never take a slot for a claim that then loses. The slot is a
    guarded upsert on the owner's counter row, whose lock serialises two claims for one owner
    (a count of PROCESSING jobs could not: its snapshot would predate the other claim's commit),
    and the job is marked `holds_slot` so its exit gives the slot back. A parked job spends no
    attempt and gets its 'deferred' event once: `locked` is the row's latest version, so a
    duplicate delivery that waited for the lock sees the first one's deferred_at (the events
    table, read in this statement's older snapshot, would not show its event yet)."""
    guard = " AND attempts = :expected_attempts" if expect_attempts else ""
    claimable = (f"state IN {sources(Move.CLAIM)} AND NOT cancel_requested "
                 f"AND (not_before IS NULL OR not_before <= now()){guard}")
    return f"""
WITH {claim_gate(claimable)}, slot AS (
    INSERT INTO owner_running AS o (owner_id, running)
    SELECT owner_id, 1 FROM cap WHERE n > 0 AND EXISTS (SELECT 1 FROM locked)
      AND (SELECT verdict FROM gate) = 'go'
    ON CONFLICT (owner_id) DO UPDATE SET running = o.running + 1
    WHERE o.running < (SELECT n FROM cap)
    RETURNING o.running
), moved AS (
    UPDATE jobs SET state = {target(Move.CLAIM)}, attempts = attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s),
        started_at = now(), claim_id = {CLAIM_ID}, updated_at = now(), not_before = NULL,
        deferred_at = NULL,
        undelivered_since = NULL, delivery_failures = 0, holds_slot = (SELECT n > 0 FROM cap),
        wait_reason = NULL,
        flow_held = (SELECT CAST(NULLIF(sum(bit), 0) AS smallint) FROM fl
                     WHERE max_running IS NOT NULL)
    WHERE id = (SELECT id FROM cap) AND {claimable} AND (SELECT verdict FROM gate) = 'go'
      AND ((SELECT n FROM cap) = 0 OR EXISTS (SELECT 1 FROM slot))
    RETURNING {COLS}, holds_slot, flow_held
), held AS (
    UPDATE jobs SET not_before = (SELECT slot FROM rate), wait_reason = '{RESERVED}',
        dispatched_at = NULL
    WHERE id = (SELECT id FROM locked) AND (SELECT verdict FROM gate) IN ('reserve', 'hold')
    RETURNING {COLS}
), parked AS (
    UPDATE jobs SET deferred_at = now(), undelivered_since = NULL, delivery_failures = 0,
        wait_reason = CASE WHEN (SELECT verdict FROM gate) = 'park' THEN (SELECT reason FROM gate)
                           ELSE 'running:owner' END
    WHERE id = (SELECT id FROM locked)
      AND ((SELECT verdict FROM gate) = 'park'
           OR ((SELECT verdict FROM gate) = 'go' AND (SELECT n FROM cap) > 0
               AND NOT EXISTS (SELECT 1 FROM slot)))
    RETURNING {COLS}
), dev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, state, state, 'deferred', attempts,
           jsonb_build_object('owner_limit', (SELECT n FROM cap),
                              'waits_for', (SELECT wait_reason FROM parked))
    FROM parked
    WHERE (SELECT deferred_at FROM locked) IS NULL
      AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = parked.id
                      AND e.reason = 'deferred')
), {FLOW_STARTED}
SELECT {OUT_COLS}, 'claimed' AS outcome, holds_slot,
       (SELECT count(*) FILTER (WHERE max_starts IS NOT NULL) FROM fl) > 0 AS rated,
       flow_held, CAST(NULL AS float8) AS hold_s FROM moved
UNION ALL SELECT {OUT_COLS}, 'parked', false, false, NULL, NULL FROM parked
UNION ALL SELECT {OUT_COLS}, 'held', false, false, NULL,
                 GREATEST(extract(epoch FROM not_before - now()), 0) FROM held"""


SQL_CLAIM = {flag: _claim_sql(flag) for flag in (False, True)}


# The batched claim (issue 30): the deliveries an instance holds at once, claimed in one
# statement. It takes only what the single claim would start at once without reading a limit:
# a claimable job at its message's attempt whose owner has no running limit and which no flow
# row governs, the same compare-and-set on each row (a duplicate that waited for a row's lock
# re-checks the guard on the new version and takes nothing). Every other job is left to the
# single claim: the caller runs it for those the outcome does not settle. `peek` reads each
# requested row as the statement's snapshot saw it, so a duplicate or a stale message gets its
# answer without another statement. Rows are taken in id order, so two batches that share jobs
# lock them in one order.
_PLAIN_CLAIMABLE = (
    f"j.state IN {sources(Move.CLAIM)} AND NOT j.cancel_requested "
    "AND (j.not_before IS NULL OR j.not_before <= now()) AND j.attempts = r.r_expected")
_RETURNED = COLS.replace("(trace), traceparent", "(j.trace), j.traceparent")
SQL_CLAIM_MANY = f"""
WITH req AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:expected AS integer[]))
        AS r(r_id, r_expected) ORDER BY r_id
), plain AS (
    SELECT j.id FROM req r JOIN jobs j ON j.id = r.r_id
    LEFT JOIN owner_limits l ON l.owner_id = j.owner_id
    WHERE {_PLAIN_CLAIMABLE} AND COALESCE(l.max_running, :default_limit) = 0
      AND NOT EXISTS (SELECT 1 FROM flow_limits f WHERE {GOVERNS.replace("c.", "j.")})
), moved AS (
    UPDATE jobs j SET state = {target(Move.CLAIM)}, attempts = j.attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s),
        started_at = now(), claim_id = {CLAIM_ID}, updated_at = now(), not_before = NULL,
        deferred_at = NULL,
        undelivered_since = NULL, delivery_failures = 0, holds_slot = false, wait_reason = NULL,
        flow_held = NULL
    FROM req r
    WHERE j.id = r.r_id AND j.id = ANY(ARRAY(SELECT id FROM plain)) AND {_PLAIN_CLAIMABLE}
    RETURNING {_RETURNED}
)
SELECT r.r_id, m.*, p.p_state, p.p_attempts
FROM req r LEFT JOIN moved m ON m.id = r.r_id
LEFT JOIN (SELECT id AS p_id, state AS p_state, attempts AS p_attempts FROM jobs) p
    ON p.p_id = r.r_id"""
