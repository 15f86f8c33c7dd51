"""Fair share between owners: per-owner limits, and the parked jobs a freed slot lets go.

For an owner with a limit, the claim (worker_moves) takes a slot in `owner_running` with a
guarded upsert and marks the job `holds_slot`, or parks the job (`deferred_at`) without spending
an attempt; an owner without a limit keeps no counter. When a slot-holding job leaves
PROCESSING a trigger frees its slot; the worker then takes the owner's best-ranked parked jobs
(priority as a head start on age, flow_sql.RANK), as many as there are free slots, and
publishes them at once. The sweep does the same for every
owner, as a safety net (a worker that died between its exit and the publish).

A parked job is one whose last deferral is newer than its last dispatch: taking it stamps
dispatched_at, so two workers never publish the same one; deferred again, it is parked again.

Time parked is not delivery time: taking a parked job also starts its delivery clock
(`undelivered_since`, the start of the delivery budget, see maintenance_queries'
SQL_DELIVERY_FAILED) at the release, so the first dead letter of a job that waited hours for
its owner's slot sends it back to the dispatch queue instead of failing it 'Undeliverable'.
"""

from __future__ import annotations

from typing import Any

from common.store.base import StoreBase
from common.store.errors import InvalidInput
from common.store.flow_sql import PARKED, RANK
from common.store.fragments import checked_owner, lit, trace_of
from common.store.models import DispatchItem
from common.store.states import JobState

P = lit(JobState.PENDING)
# When a PENDING job became (or becomes) due: a backoff or a `run_at` sets not_before.
DUE_FROM = "COALESCE(not_before, created_at)"
# Due: PENDING, not parked, and its time has come. Only these wait on us (a worker, a
# dispatch): a run-later job waits for its time and a parked one for its owner's slot, by design,
# so neither counts in "oldest due" (the figure, its alert, `stats` and the dashboard).
DUE = f"state = {P} AND NOT ({PARKED}) AND {DUE_FROM} <= now()"
LATER = f"state = {P} AND NOT ({PARKED}) AND {DUE_FROM} > now()"
MAX_LIMIT = 100_000
# Only the jobs parked for their owner's slot (NULL: parked before migration 0020): one parked
# by a preset or key limit waits for that limit's release, not for any slot of its owner's.
FOR_OWNER = "(wait_reason = 'running:owner' OR wait_reason IS NULL)"

SQL_TAKE_PARKED = f"""
WITH cap AS (
    SELECT COALESCE((SELECT max_running FROM owner_limits WHERE owner_id = :owner_id),
                    :default_limit) AS n,
           COALESCE((SELECT running FROM owner_running WHERE owner_id = :owner_id), 0) AS running
), picked AS (
    SELECT id FROM jobs WHERE owner_id = :owner_id AND {PARKED} AND {FOR_OWNER}
    ORDER BY {RANK}
    LIMIT (SELECT CASE WHEN n = 0 THEN :batch ELSE LEAST(GREATEST(n - running, 0), :batch) END
           FROM cap)
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET dispatched_at = now(), undelivered_since = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = {P}
RETURNING j.id, j.attempts, {trace_of("j.")}"""

# Every owner with parked jobs and a free slot; at most :batch jobs in all.
SQL_TAKE_PARKED_ALL = f"""
WITH owners AS (
    SELECT d.owner_id,
           CASE WHEN COALESCE(l.max_running, :default_limit) = 0 THEN :batch
                ELSE GREATEST(COALESCE(l.max_running, :default_limit)
                              - COALESCE(r.running, 0), 0) END AS free
    FROM (SELECT DISTINCT owner_id FROM jobs
          WHERE state = {P} AND deferred_at IS NOT NULL) d
    LEFT JOIN owner_limits l ON l.owner_id = d.owner_id
    LEFT JOIN owner_running r ON r.owner_id = d.owner_id
), picked AS (
    SELECT p.id FROM owners o CROSS JOIN LATERAL (
        SELECT id FROM jobs WHERE owner_id = o.owner_id AND {PARKED} AND {FOR_OWNER}
        ORDER BY {RANK} LIMIT o.free FOR UPDATE SKIP LOCKED
    ) p
    LIMIT :batch
)
UPDATE jobs j SET dispatched_at = now(), undelivered_since = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = {P}
RETURNING j.id, j.attempts, {trace_of("j.")}"""

# Setting or clearing a limit adopts the owner's running jobs when the limit that then applies
# is above zero: they were claimed without a slot (no limit counted them), so each is marked
# and counted here, in the statement that changes the limit. An adopted job gives its slot
# back on exit like any other. The UPDATE re-checks each row after its lock, so a job that
# left PROCESSING meanwhile is not counted.
_ADOPT = f"""
adopted AS (
    UPDATE jobs SET holds_slot = true
    WHERE owner_id = :owner_id AND state = {lit(JobState.PROCESSING)} AND holds_slot = false
      AND CAST(:effective AS integer) > 0
    RETURNING id
), counted AS (
    INSERT INTO owner_running AS o (owner_id, running)
    SELECT :owner_id, count(*) FROM adopted HAVING count(*) > 0
    ON CONFLICT (owner_id) DO UPDATE SET running = o.running + EXCLUDED.running
)"""
SQL_SET_LIMIT = f"""
WITH lim AS (
    INSERT INTO owner_limits (owner_id, max_running) VALUES (:owner_id, :n)
    ON CONFLICT (owner_id) DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = now()
    RETURNING owner_id
), {_ADOPT}
SELECT owner_id FROM lim"""
SQL_CLEAR_LIMIT = f"""
WITH lim AS (
    UPDATE owner_limits SET max_running = NULL, updated_at = now()
    WHERE owner_id = :owner_id RETURNING owner_id
), {_ADOPT}
SELECT owner_id FROM lim"""
# A row with no override left says nothing: it goes (migration 0015).
SQL_DROP_EMPTY = """
DELETE FROM owner_limits WHERE owner_id = :owner_id AND max_running IS NULL
  AND max_submits_per_s IS NULL AND max_pending IS NULL"""
SQL_LIMITS = """
SELECT l.owner_id, l.max_running, COALESCE(r.running, 0) AS running,
       l.max_submits_per_s, l.max_pending
FROM owner_limits l LEFT JOIN owner_running r ON r.owner_id = l.owner_id
ORDER BY l.owner_id"""
# Quotas at the door (common/api/admission.py): the owner's overrides, NULL = the default.
SQL_QUOTA = """
SELECT max_submits_per_s, max_pending FROM owner_limits WHERE owner_id = :owner_id"""
QUOTAS = ("max_submits_per_s", "max_pending")  # the only column names ever put into SQL
SQL_SET_QUOTA = {q: f"""
INSERT INTO owner_limits (owner_id, {q}) VALUES (:owner_id, :n)
ON CONFLICT (owner_id) DO UPDATE SET {q} = EXCLUDED.{q}, updated_at = now()""" for q in QUOTAS}
SQL_CLEAR_QUOTA = {q: f"""
UPDATE owner_limits SET {q} = NULL, updated_at = now() WHERE owner_id = :owner_id"""
                   for q in QUOTAS}
MAX_QUOTA = {"max_submits_per_s": 100_000, "max_pending": 10_000_000}


class FairShareQueries(StoreBase):
    """Owner limits (an operator's), and taking parked jobs to publish (the worker's, the
    sweep's)."""

    def take_parked(self, owner_id: str, batch: int = 10) -> list[DispatchItem]:
        rows = self._rows(SQL_TAKE_PARKED, owner_id=owner_id, batch=batch,
                          default_limit=self._settings.owner_max_running)
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in rows]

    def take_parked_all(self, batch: int) -> list[DispatchItem]:
        rows = self._rows(SQL_TAKE_PARKED_ALL, batch=batch,
                          default_limit=self._settings.owner_max_running)
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in rows]

    def set_owner_limit(self, owner_id: str, max_running: int | None) -> None:
        """At most `max_running` PROCESSING jobs for this owner (0 = unlimited); None removes
        the override, so OWNER_MAX_RUNNING applies again."""
        owner = checked_owner(owner_id)
        if max_running is None:
            self._rows(SQL_CLEAR_LIMIT, owner_id=owner,
                       effective=self._settings.owner_max_running)
            self._rows(SQL_DROP_EMPTY, owner_id=owner)
            return
        if isinstance(max_running, bool) or not 0 <= max_running <= MAX_LIMIT:
            raise InvalidInput("max_running", f"must be an integer from 0 to {MAX_LIMIT}")
        self._rows(SQL_SET_LIMIT, owner_id=owner, n=max_running, effective=max_running)

    def owner_limits(self) -> list[dict[str, Any]]:
        return self._rows(SQL_LIMITS)

    def owner_quota(self, owner_id: str) -> tuple[int | None, int | None]:
        """The owner's overrides of (submits per second, PENDING jobs); None = the default."""
        rows = self._rows(SQL_QUOTA, owner_id=checked_owner(owner_id))
        return (rows[0]["max_submits_per_s"], rows[0]["max_pending"]) if rows else (None, None)

    def set_owner_quota(self, owner_id: str, quota: str, value: int | None) -> None:
        """Override one quota at the door for this owner (0 = unlimited); None removes the
        override, so OWNER_MAX_SUBMITS_PER_S or OWNER_MAX_PENDING applies again."""
        owner = checked_owner(owner_id)
        if quota not in QUOTAS:
            raise InvalidInput("quota", f"must be one of {', '.join(QUOTAS)}")
        if value is None:
            self._rows(SQL_CLEAR_QUOTA[quota], owner_id=owner)
            self._rows(SQL_DROP_EMPTY, owner_id=owner)
            return
        if isinstance(value, bool) or not 0 <= value <= MAX_QUOTA[quota]:
            raise InvalidInput(quota, f"must be an integer from 0 to {MAX_QUOTA[quota]}")
        self._rows(SQL_SET_QUOTA[quota], owner_id=owner, n=value)
