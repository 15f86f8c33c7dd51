"""The sweep's queries and the dispatch bookkeeping (the outbox marks).

Each statement picks its rows on a partial index and is bounded by a limit, so its cost follows
the work, not the size of the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from uuid import UUID

from common.settings import Settings
from common.store.base import StoreBase
from common.store.errors import (
    InvalidInput,
)
from common.store.fair_share import DUE, DUE_FROM, LATER
from common.store.flow_sql import PARKED, RANK
from common.store.fragments import (
    J_COLS,
    TERMINAL,
    P,
    R,
    as_uuid,
    event_cte,
    lit,
    sources,
    target,
    trace_of,
)
from common.store.models import DispatchItem
from common.store.states import JobState, Move
from common.store.sweep_lock import SweepLock
from common.store.sweep_results import DeliveryFailure, Rescued


# Outbox bookkeeping, not a state change: guarded by state and attempt like every write.
# Marking a publish stamps dispatched_at; releasing a failed one clears it.
def _set_dispatched_sql(value: str) -> str:
    return f"""
UPDATE jobs SET dispatched_at = {value}
FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[])) AS d(id, attempts)
WHERE jobs.id = d.id AND jobs.attempts = d.attempts AND jobs.state = {lit(P)}
RETURNING jobs.id"""


SQL_MARK_DISPATCHED = _set_dispatched_sql("now()")
SQL_RELEASE_DISPATCH = _set_dispatched_sql("NULL")

# Maintenance statements pick their rows on a partial index, then touch them by primary key
# (`id = ANY(ARRAY(SELECT ...))`): written as a join, the planner may scan the whole table to
# match a few hundred ids, and the cost would follow the table instead of the work.
#
# The sweep's re-dispatch takes its rows by stamping dispatched_at first (SKIP LOCKED), so two
# sweeps at once never publish the same job; a publish that then fails un-stamps its row. One
# statement per partial index: never-published due jobs, best rank first (priority, issue 27;
# a backlog after an outage goes out urgent first, at the price of a sort), and those
# published long ago.
DISPATCH_DUE = {
    False: ("dispatched_at IS NULL AND COALESCE(not_before, created_at) <= now()", RANK),
    True: ("dispatched_at IS NOT NULL "
           "AND dispatched_at < now() - make_interval(secs => :stale_s)", "dispatched_at"),
}


def _take_dispatch_sql(stale: bool) -> str:
    where, order = DISPATCH_DUE[stale]
    return f"""
WITH picked AS (
    SELECT id FROM jobs WHERE state = {lit(P)} AND {where}
    ORDER BY {order} LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET dispatched_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = {lit(P)}
RETURNING j.id, j.attempts, {trace_of("j.")}"""


SQL_TAKE_DISPATCH = {stale: _take_dispatch_sql(stale) for stale in (False, True)}

SQL_EXPIRED = f"""
SELECT id, attempts FROM jobs
WHERE state = {lit(R)} AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT :limit"""

# Expired leases back to PENDING while attempts remain, else FAILED; SKIP LOCKED lets two sweeps
# share the work; the re-checked WHERE lets a worker that completes first win the race.
# A lease lost on the last attempt gives the job one more attempt, once (LEASE_GRACES, counted
# in lease_graces, migration 0014): a worker that stops heartbeating may have run its handler
# to the end and then failed to reach our database, and that must not end the job FAILED. Only
# a second lost lease past the limit ends it 'LeaseExpired' (a handler that kills its instance
# every time still ends, one attempt later).
LEASE_GRACES = 1
GRACE = f"(j.attempts >= j.attempt_limit AND j.lease_graces < {LEASE_GRACES})"
RESCUE_STATE = (
    f"CASE WHEN j.cancel_requested THEN {target(Move.CONFIRM_CANCEL)} "
    f"WHEN j.attempts >= j.attempt_limit AND NOT {GRACE} THEN {target(Move.FAIL)} "
    f"ELSE {target(Move.RESCUE)} END"
)
GRANTED = f"(NOT j.cancel_requested AND {GRACE})"
# Only the grant leaves a rescued job with its graces used and one attempt left.
GRACE_DETAILS = (
    f"CASE WHEN state = 'PENDING' AND attempts + 1 = attempt_limit "
    f"AND lease_graces = {LEASE_GRACES} "
    "THEN jsonb_build_object('grace', 'one more attempt: the last one lost its lease') "
    "ELSE '{}'::jsonb END"
)
SQL_RESCUE = f"""
WITH picked AS (
    SELECT id FROM jobs WHERE state IN {sources(Move.RESCUE)} AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT :limit FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs j SET state = {RESCUE_STATE},
        finished_at = CASE WHEN {RESCUE_STATE} IN {TERMINAL} THEN now() END,
        lease_expires_at = NULL, dispatched_at = NULL, not_before = NULL, updated_at = now(),
        attempt_limit = CASE WHEN {GRANTED} THEN j.attempt_limit + 1 ELSE j.attempt_limit END,
        lease_graces = CASE WHEN {GRANTED} THEN j.lease_graces + 1 ELSE j.lease_graces END,
        result_error_type = CASE WHEN {RESCUE_STATE} = 'FAILED' THEN 'LeaseExpired' END,
        result_error_message = CASE WHEN {RESCUE_STATE} = 'FAILED'
            THEN 'the worker lost its lease on the last allowed attempt, and on the one more '
                 'attempt a lost lease gives' END
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state IN {sources(Move.RESCUE)}
      AND j.lease_expires_at < now()
    RETURNING {J_COLS}, j.lease_graces, j.claim_id,
        CASE WHEN j.execution_attempt = j.attempts THEN j.execution END AS execution
), {
    event_cte(
        lit(R),
        "CASE state WHEN 'PENDING' THEN 'lease-expired-retry' WHEN 'CANCELLED' THEN 'cancelled' "
        "ELSE 'lease-expired' END",
        GRACE_DETAILS,
        ends_attempt=True,
    )
}
SELECT id, state, attempts, owner_id, execution FROM moved"""

# A dead letter for a job still PENDING at the message's attempt, whose dispatch is outstanding
# (dispatched_at set: an undispatched job is already in the re-dispatch queue, so a second dead
# letter for the same dispatch is not counted twice). The job never ran that attempt, so this
# is a delivery failure: back to the re-dispatch queue after a growing, jittered delay; FAILED
# 'Undeliverable' once it has waited out the budget since it became due. `prior` reads the
# locked row before the update, so the event records the count and the time it started.
# The delivery clock starts at the first of: undelivered_since (a delivery failed before, or a
# parked job was released: fair_share), else when the job became due: not_before for a run-later
# time or a backoff, else updated_at (when it last entered PENDING). Never before its last
# deferral: a parked job's message reached a worker then, and waiting for the owner's slot is
# not delivery time (a parked job re-published while still parked, say).
DUE_SINCE = "GREATEST(COALESCE(undelivered_since, not_before, updated_at), deferred_at)"
SQL_DELIVERY_FAILED = f"""
WITH prior AS (
    SELECT id, delivery_failures + 1 AS failures, {DUE_SINCE} AS since,
           {DUE_SINCE} < now() - make_interval(secs => :budget_s) AS exhausted,
           LEAST(CAST(:cap_s AS float8), :base_s * power(2, LEAST(delivery_failures, 30)))
               * (0.5 + random() / 2) AS delay_s
    FROM jobs
    WHERE id = :id AND state IN {sources(Move.DELIVERY_FAILED)} AND attempts = :attempt
      AND dispatched_at IS NOT NULL
    FOR UPDATE
), moved AS (
    UPDATE jobs j SET
        state = CASE WHEN prior.exhausted THEN {target(Move.UNDELIVERABLE)}
                     ELSE {target(Move.DELIVERY_FAILED)} END,
        finished_at = CASE WHEN prior.exhausted THEN now() END,
        not_before = CASE WHEN NOT prior.exhausted
                          THEN now() + make_interval(secs => prior.delay_s) END,
        undelivered_since = CASE WHEN NOT prior.exhausted THEN prior.since END,
        delivery_failures = CASE WHEN prior.exhausted THEN 0 ELSE prior.failures END,
        dispatched_at = NULL, updated_at = now(),
        result_error_type = CASE WHEN prior.exhausted THEN 'Undeliverable' END,
        result_error_message = CASE WHEN prior.exhausted THEN CAST(:error_message AS text) END
    FROM prior
    WHERE j.id = prior.id AND j.state IN {sources(Move.DELIVERY_FAILED)}
      AND j.attempts = :attempt AND j.dispatched_at IS NOT NULL
    RETURNING j.id, j.state, j.attempts, j.owner_id, prior.failures, prior.since, prior.delay_s,
              prior.exhausted
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, {lit(P)}, state, CASE WHEN exhausted THEN 'undeliverable' ELSE 'delivery-failed' END,
           attempts,
           jsonb_build_object('message_id', CAST(:message_id AS text),
                              'delivery_failures', failures, 'undelivered_since', since)
           || CASE WHEN exhausted THEN '{{}}'::jsonb
                   ELSE jsonb_build_object('delay_s', round(CAST(delay_s AS numeric), 3)) END
    FROM moved
)
SELECT id, state, owner_id, failures FROM moved"""

# Stranded, not merely waiting: a job published over :stale_s (STALL_AFTER_S) ago, still
# unclaimed, into a worker that showed no sign of life in the :stale_s after that publish: no
# job it ran overlaps that window (a finished one that started by its end and finished after
# its start; a running one that started by its end and has heartbeated since its start, i.e.
# its lease of :lease_s ends after start + :lease_s). A backlog draining behind a live worker
# always has such a job; a message sent while the worker or the database was down has none,
# and Pub/Sub may hold it back (backoff) or dead-letter it long after the worker is back.
# A parked job (fair share) is delivered and waits for its owner's slot by design: never taken.
SQL_TAKE_STRANDED = f"""
WITH picked AS (
    SELECT id FROM jobs j
    WHERE state = {lit(P)} AND dispatched_at IS NOT NULL AND NOT ({PARKED})
      AND dispatched_at < now() - make_interval(secs => :stale_s)
      AND NOT EXISTS (
          SELECT 1 FROM jobs t WHERE t.state IN {TERMINAL} AND t.finished_at >= j.dispatched_at
            AND t.started_at <= j.dispatched_at + make_interval(secs => :stale_s))
      AND NOT EXISTS (
          SELECT 1 FROM jobs r WHERE r.state = {lit(R)}
            AND r.lease_expires_at >= j.dispatched_at + make_interval(secs => :lease_s)
            AND r.started_at <= j.dispatched_at + make_interval(secs => :stale_s))
    ORDER BY dispatched_at LIMIT :limit FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs j SET dispatched_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = {lit(P)}
RETURNING j.id, j.attempts, {trace_of("j.")}"""

# A job's events go in the statement that deletes it: they have no foreign key to cascade on
# (migration 0010 dropped it to save a row lock per write); its result is part of its row.
SQL_PURGE = f"""
WITH victims AS (
    SELECT id FROM jobs
    WHERE state IN {TERMINAL} AND finished_at < now() - make_interval(days => :days)
    ORDER BY finished_at LIMIT :batch FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs j WHERE j.id = ANY(ARRAY(SELECT id FROM victims)) RETURNING j.id
), events AS (
    DELETE FROM job_events e WHERE e.job_id = ANY(ARRAY(SELECT id FROM gone))
)
SELECT id FROM gone"""

# The sweep's report. Every count runs on a partial index, so its cost follows the live queue
# (and the last hour's finishes), never the size of the table.
SQL_QUEUE_REPORT = f"""
SELECT
  (SELECT count(*) FROM jobs WHERE state = {lit(P)} AND dispatched_at IS NULL) AS undispatched,
  (SELECT count(*) FROM jobs WHERE state = {lit(P)} AND dispatched_at IS NOT NULL)
      AS dispatched,
  (SELECT count(*) FROM jobs WHERE state = {lit(R)}) AS processing,
  (SELECT count(*) FROM jobs WHERE state = {lit(R)} AND lease_expires_at < now())
      AS expired_leases,
  (SELECT count(*) FROM jobs WHERE {PARKED}) AS parked,
  (SELECT count(*) FROM jobs WHERE {LATER}) AS later,
  (SELECT min({DUE_FROM}) FROM jobs WHERE {DUE}) AS oldest_due,
  (SELECT COALESCE(jsonb_object_agg(state, n), '{{}}'::jsonb) FROM (
     SELECT state, count(*) AS n FROM jobs
     WHERE state IN {TERMINAL} AND finished_at > now() - interval '1 hour' GROUP BY state
   ) f) AS finished_last_hour,
  now() AS now"""


SQL_PURGE_POISON = """
WITH victims AS (
    SELECT message_id FROM poison_messages
    WHERE received_at < now() - make_interval(days => :days)
    ORDER BY received_at LIMIT :batch FOR UPDATE SKIP LOCKED
)
DELETE FROM poison_messages p
WHERE p.message_id = ANY(ARRAY(SELECT message_id FROM victims))
RETURNING p.message_id"""




class MaintenanceQueries(StoreBase):
    """Dispatch marks, rescue, dead letters, retention and the queue report."""

    # -- maintenance (sweep) -----------------------------------------------------------------

    def mark_dispatched(self, items: Iterable[DispatchItem]) -> int:
        """Record that these jobs' messages were published (only if still PENDING at that
        attempt count). Returns how many rows were marked."""
        return self._set_dispatched(SQL_MARK_DISPATCHED, items)

    def take_due_for_dispatch(
        self, limit: int, *, redispatch_after: timedelta | None = None
    ) -> list[DispatchItem]:
        """Take up to `limit` PENDING jobs to publish: due and never published, then (with
        `redispatch_after`) published that long ago and still unclaimed. Taking stamps them
        dispatched, so a concurrent sweep skips them; `release_dispatch` what fails to publish."""
        rows = self._rows(SQL_TAKE_DISPATCH[False], limit=limit)
        if redispatch_after is not None and len(rows) < limit:
            rows += self._rows(
                SQL_TAKE_DISPATCH[True],
                limit=limit - len(rows),
                stale_s=redispatch_after.total_seconds(),
            )
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in rows]

    def release_dispatch(self, items: Iterable[DispatchItem]) -> int:
        """Un-stamp jobs whose publish failed, so the next pass takes them again at once."""
        return self._set_dispatched(SQL_RELEASE_DISPATCH, items)

    def _set_dispatched(self, sql: str, items: Iterable[DispatchItem]) -> int:
        batch = list(items)
        if not batch:
            return 0
        rows = self._rows(
            sql, ids=[str(i.id) for i in batch], attempts=[i.attempts for i in batch]
        )
        return len(rows)

    def find_expired_leases(self, limit: int) -> list[DispatchItem]:
        rows = self._rows(SQL_EXPIRED, limit=limit)
        return [DispatchItem(id=r["id"], attempts=r["attempts"]) for r in rows]

    def rescue_expired(self, limit: int) -> list[Rescued]:
        """Move up to `limit` jobs whose lease expired: PENDING again while attempts remain, else
        FAILED ('lease-expired'), or CANCELLED if a cancel was asked. Returns each job's new
        state (and owner, for the results notification)."""
        rows = self._rows(SQL_RESCUE, limit=limit)
        return [Rescued(r["id"], JobState(r["state"]), r["owner_id"], r["execution"]) for r in rows]

    def delivery_failed(
        self, job_id: UUID | str, attempt: int, *, message_id: str = "",
        policy: Settings | None = None,
    ) -> DeliveryFailure | None:
        """A message Pub/Sub gave up on, for a job still PENDING at `attempt` with its dispatch
        outstanding: the job is dispatched again after a growing delay ('delivery-failed'), or
        ends FAILED 'Undeliverable' past the delivery budget. None (nothing written) if the job
        is gone, terminal, running, past that attempt, or already back in the dispatch queue.
        The budget and delays come from `policy` (the caller's settings), else the store's."""
        s = policy or self._settings
        rows = self._rows(
            SQL_DELIVERY_FAILED,
            id=as_uuid(job_id),
            attempt=attempt,
            message_id=message_id,
            budget_s=s.delivery_budget_s,
            base_s=s.delivery_retry_base_s,
            cap_s=s.delivery_retry_cap_s,
            error_message="Pub/Sub could not deliver the job's message for "
            f"{s.delivery_budget_s:g} s; retry the job to run it",
        )
        if not rows:
            return None
        r = rows[0]
        return DeliveryFailure(r["id"], JobState(r["state"]), r["owner_id"], r["failures"])

    def take_stranded(self, limit: int, stall_after_s: float) -> list[DispatchItem]:
        """Take up to `limit` PENDING jobs published over `stall_after_s` ago into a worker that
        showed no sign of life for that long after (see SQL_TAKE_STRANDED), stamping them
        dispatched as `take_due_for_dispatch` does; `release_dispatch` what fails to publish."""
        rows = self._rows(SQL_TAKE_STRANDED, limit=limit, stale_s=float(stall_after_s),
                          lease_s=float(self._settings.lease_seconds))
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in rows]

    def purge_terminal(self, older_than_days: int, *, batch_size: int, max_batches: int) -> int:
        """Delete terminal jobs older than the retention period, with their events,
        in short batches, each its own transaction. Returns how many jobs were deleted."""
        if older_than_days < 0 or batch_size < 1 or max_batches < 1:
            raise InvalidInput("retention", "days must be >= 0, batch sizes >= 1")
        total = 0
        for _ in range(max_batches):
            deleted = len(self._rows(SQL_PURGE, days=older_than_days, batch=batch_size))
            total += deleted
            if deleted < batch_size:
                break
        return total

    def sweep_lock(self) -> SweepLock:
        """The lock that keeps sweep passes from overlapping (see `sweep_lock`)."""
        return SweepLock(self._checkout)

    def queue_report(self) -> dict[str, Any]:
        """Queue depth by state (PENDING split into due, parked and later), how long the oldest
        due job has waited, the last hour's finishes."""
        row = self._rows(SQL_QUEUE_REPORT)[0]
        oldest = row["oldest_due"]
        pending = row["undispatched"] + row["dispatched"]
        return {
            "depth": {"PENDING": pending, "PROCESSING": row["processing"]},
            "pending_undispatched": row["undispatched"],
            # PENDING split: due (waiting on us), parked (on its owner's slot), later (run_at or
            # a retry backoff still to come).
            "pending_due": pending - row["parked"] - row["later"],
            "pending_parked": row["parked"],
            "pending_later": row["later"],
            "expired_leases": row["expired_leases"],
            # Since the oldest due job became due: run-later and parked jobs are not late.
            "oldest_pending_age_s": (
                round(max(0.0, (row["now"] - oldest).total_seconds()), 3) if oldest else None
            ),
            "finished_last_hour": dict(row["finished_last_hour"]),
        }

    def purge_poison(self, older_than_days: int, *, batch_size: int) -> int:
        """Delete one batch of recorded poison messages older than the retention period."""
        return len(self._rows(SQL_PURGE_POISON, days=older_than_days, batch=batch_size))

