"""Flow control's SQL (issue 27): the gate a claim passes, and the releases of parked jobs.

A job may fall under up to two `flow_limits` rows (migration 0020): its preset's (owner_id '')
and its owner's key's (owner_id, limit_key). Each row may bound running jobs (`max_running`)
and starts (`max_starts` per `interval_s`). The claim (common/store/worker_moves.py) locks the
job row, then these rows in key order, then the owner's slot row: the exits' triggers lock in
the same order (the job, tr_jobs_leave_flow, tr_jobs_leave_processing), so no two wait on each
other in a cycle.

Rate limits are kept as spacing: two starts under one row are never nearer than
GAP = interval_s / max_starts, so any window of interval_s holds at most max_starts starts.
A start needs a slot: the later of now, the row's reservation frontier `next_at` and
`last_start_at` + GAP. A slot that is due starts the job. A slot within the horizon
(the lesser of FLOW_HOLD_S and FLOW_AHEAD gaps) is reserved: the frontier moves one gap on, the
job keeps `not_before` = its slot and `wait_reason` 'rate-reserved', and the delivery holds until
then (common/worker/flow_wait.py); its re-claim checks only the spacing. A farther slot parks
the job (no attempt spent) until a release publishes it: each start under a rate releases as
many parked jobs as the horizon has free slots, best RANK first, and each exit under a running
limit as many as there are free slots; the sweep does the same for every row, as the net.
"""

from __future__ import annotations

# Jobs compete by rank: creation time less five minutes per priority level (0-9). The
# expression matches the parked indexes of migration 0020 exactly, so a release reads them in
# order; a priority is a head start, so a job is never passed by one created more than
# 9 x 300 s after it, whatever the priorities (the no-starvation rule in docs/flow-control.md).
PRIORITY_STEP_S = 300
RANK = f"((created_at AT TIME ZONE 'UTC') - priority * interval '{PRIORITY_STEP_S} seconds')"
PARKED_ROWS = "state = 'PENDING' AND deferred_at IS NOT NULL"
RESERVED = "rate-reserved"
# A job that parked and was then released keeps its deferred_at; when its claim reserves a rate
# slot (`held` clears dispatched_at), its delivery holds it: it is waiting for its slot, not
# parked, and a release must not publish it again.
PARKED = (f"{PARKED_ROWS} AND (dispatched_at IS NULL OR dispatched_at <= deferred_at) "
          f"AND wait_reason IS DISTINCT FROM '{RESERVED}'")

GAP = "(f.interval_s / f.max_starts)"
# The flow rows that govern job `c` (a row with owner_id, preset, limit_key).
GOVERNS = ("((f.owner_id = '' AND f.name = c.preset) "
           "OR (f.owner_id = c.owner_id AND f.name = c.limit_key))")
# Released jobs on their way (published in the last minute, not yet claimed or parked again):
# each will take a slot when it arrives, so a release counts them as taken.
IN_FLIGHT = """(SELECT count(*) FROM jobs j WHERE j.state = 'PENDING' AND j.deferred_at IS NOT NULL
    AND j.dispatched_at > j.deferred_at AND j.dispatched_at > now() - interval '60 seconds'
    AND ((f.owner_id = '' AND j.preset = f.name)
         OR (f.owner_id <> '' AND j.owner_id = f.owner_id AND j.limit_key = f.name)))"""
# How many more starts a row takes now: free running slots, and for a rate the slots the
# horizon still holds past its frontier (a released job reserves one when it arrives), less
# the released jobs still on their way.
FREE = f"""LEAST(CAST(:batch AS integer),
    CASE WHEN f.max_running IS NULL THEN CAST(:batch AS integer)
         ELSE GREATEST(f.max_running - f.running, 0) END,
    CASE WHEN f.max_starts IS NULL THEN CAST(:batch AS integer)
         ELSE GREATEST(CAST(floor((LEAST(CAST(:hold_s AS float8), :ahead * {GAP})
              - GREATEST(extract(epoch FROM COALESCE(f.next_at, now()) - now()), 0))
              / {GAP}) AS integer) + 1, 0) END)"""


def take_parked_sql(scope: str) -> str:
    """Publish parked jobs a flow row has room for, best rank first: scope 'one' for the rows of
    one job (the worker, after a start or an exit), 'all' for every row (the sweep). The taking
    stamps dispatched_at, so two releases never publish one job twice."""
    of_job = (GOVERNS.replace("c.preset", ":preset").replace("c.owner_id", ":owner_id")
              .replace("c.limit_key", ":limit_key"))
    rows = f"WHERE {of_job}" if scope == "one" else ""
    return f"""
WITH lim AS (
    SELECT f.owner_id, f.name, GREATEST({FREE} - {IN_FLIGHT}, 0) AS free
    FROM flow_limits f {rows}
), picked AS (
    SELECT p.id FROM lim CROSS JOIN LATERAL (
        SELECT id FROM jobs WHERE lim.owner_id = '' AND preset = lim.name AND {PARKED}
          AND wait_reason IN ('running:preset', 'rate:preset')
        ORDER BY {RANK} LIMIT lim.free FOR UPDATE SKIP LOCKED
    ) p
    UNION
    SELECT p.id FROM lim CROSS JOIN LATERAL (
        SELECT id FROM jobs WHERE lim.owner_id <> '' AND owner_id = lim.owner_id
          AND limit_key = lim.name AND {PARKED} AND wait_reason IN ('running:key', 'rate:key')
        ORDER BY {RANK} LIMIT lim.free FOR UPDATE SKIP LOCKED
    ) p
    LIMIT :batch
)
UPDATE jobs j SET dispatched_at = now(), undelivered_since = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = 'PENDING'
RETURNING j.id, j.attempts, COALESCE(traceparent_text(j.trace), j.traceparent) AS traceparent"""


SQL_TAKE_FLOW_PARKED = take_parked_sql("one")
SQL_TAKE_FLOW_PARKED_ALL = take_parked_sql("all")


def claim_gate(claimable: str) -> str:
    """The CTEs a claim runs before it moves the job: `cap` (the owner's limit), `locked` (the
    job row, when any limit applies), `fl` (its flow rows, locked), `rate` (its earliest slot)
    and `gate` (the verdict: 'go', 'reserve', 'hold' or 'park', and the reason for a park).
    A job under no limit reads two small indexes here and locks nothing more than before."""
    return f"""
cand AS (
    SELECT id, owner_id, preset, limit_key FROM jobs WHERE id = :id AND {claimable}
), cap AS (
    SELECT c.id, c.owner_id, c.preset, c.limit_key,
           COALESCE(l.max_running, :default_limit) AS n,
           EXISTS (SELECT 1 FROM flow_limits f WHERE {GOVERNS}) AS flow
    FROM cand c LEFT JOIN owner_limits l ON l.owner_id = c.owner_id
), locked AS (
    SELECT id, deferred_at, wait_reason FROM jobs
    WHERE id = (SELECT id FROM cap WHERE n > 0 OR flow) AND {claimable}
    FOR UPDATE
), fl AS (
    SELECT f.owner_id, f.name, f.max_running, f.running, f.max_starts, f.interval_s,
           f.next_at, f.last_start_at, {GAP} AS gap,
           CASE WHEN f.owner_id = '' THEN 1 ELSE 2 END AS bit
    FROM flow_limits f, cap c
    WHERE EXISTS (SELECT 1 FROM locked) AND {GOVERNS}
    ORDER BY f.owner_id, f.name
    FOR UPDATE OF f
), rate AS (
    SELECT max(GREATEST(now(),
                        CASE WHEN (SELECT wait_reason FROM locked) = '{RESERVED}' THEN now()
                             ELSE COALESCE(next_at, now()) END,
                        COALESCE(last_start_at + make_interval(secs => gap), now()))) AS slot
    FROM fl WHERE max_starts IS NOT NULL
), gate AS (
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM fl) THEN 'go'
        WHEN EXISTS (SELECT 1 FROM fl WHERE running >= max_running) THEN 'park'
        WHEN COALESCE((SELECT slot FROM rate) <= now(), true) THEN 'go'
        WHEN (SELECT wait_reason FROM locked) = '{RESERVED}' THEN 'hold'
        WHEN NOT EXISTS (SELECT 1 FROM fl WHERE max_starts IS NOT NULL AND (SELECT slot FROM rate)
                         > now() + make_interval(secs => LEAST(:hold_s, :ahead * gap)))
            THEN 'reserve'
        ELSE 'park' END AS verdict,
      (SELECT CASE WHEN running >= max_running THEN 'running' ELSE 'rate' END
              || CASE bit WHEN 1 THEN ':preset' ELSE ':key' END
       FROM fl ORDER BY (running >= max_running) IS TRUE DESC, (max_starts IS NOT NULL) DESC, bit
       LIMIT 1) AS reason
)"""


# The flow rows' share of a start (after `moved`) and of a reservation (after `held`).
FLOW_STARTED = f"""
flow_start AS (
    UPDATE flow_limits f SET running = f.running + CASE WHEN f.max_running IS NULL THEN 0
                                                        ELSE 1 END,
        last_start_at = CASE WHEN f.max_starts IS NULL THEN f.last_start_at ELSE now() END,
        next_at = CASE WHEN f.max_starts IS NULL THEN NULL
                       ELSE GREATEST(COALESCE(f.next_at, now()), now()
                                     + make_interval(secs => {GAP})) END
    FROM fl WHERE f.owner_id = fl.owner_id AND f.name = fl.name
      AND EXISTS (SELECT 1 FROM moved)
), flow_reserve AS (
    UPDATE flow_limits f SET next_at = (SELECT slot FROM rate) + make_interval(secs => {GAP})
    FROM fl WHERE f.owner_id = fl.owner_id AND f.name = fl.name AND f.max_starts IS NOT NULL
      AND (SELECT verdict FROM gate) = 'reserve' AND EXISTS (SELECT 1 FROM held)
)"""
