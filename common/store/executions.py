"""Long jobs' moves (issue 29): naming the execution that runs an attempt, and giving an attempt
back when its execution could not be started.

`record_execution` is written by both sides of the hand-off: `process` after the executor
started the execution, and the execution itself before it runs the handler, whichever comes
first. Its guard (PROCESSING at that attempt, and no other execution named for that attempt)
makes it the execution's own claim: two executions can never both take one attempt, and once
an execution has taken it, `start_failed` (guarded by no execution being named) can no longer
put the job back. So a start that timed out in `process` but did start an execution leaves
either the execution running the attempt (the put-back refused) or the job back in PENDING
(the execution, finding its attempt gone, runs nothing): never both.

Short jobs never reach this module.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from uuid import UUID

from common.settings import Settings
from common.store.base import StoreBase
from common.store.fragments import (
    COLS,
    MAX_ERROR_MESSAGE,
    as_uuid,
    job_from_row,
    lit,
    sources,
    storable_text,
)
from common.store.models import Job
from common.store.states import JobState, Move

P, R = JobState.PENDING, JobState.PROCESSING

NOT_TAKEN = "(execution_attempt IS DISTINCT FROM :attempt OR execution = :name)"

SQL_RECORD_EXECUTION = f"""
UPDATE jobs SET execution = :name, execution_attempt = :attempt,
    start_failures = 0, start_failed_since = NULL
WHERE id = :id AND state IN {sources(Move.RECORD_EXECUTION)} AND attempts = :attempt
  AND {NOT_TAKEN}
RETURNING {COLS}, holds_slot, flow_held"""

# `prior` reads the locked row: how long starts have been failing, and the next delay (growing
# from DELIVERY_RETRY_BASE_S to its cap, jittered, as a dead letter's). The attempt is given
# back (attempt_limit + 1, as a lost lease's grace does): the job's own attempts are for its
# handler's failures, not ours.
UNSTARTED = (f"state IN {sources(Move.START_FAILED)} AND attempts = :attempt "
             "AND execution_attempt IS DISTINCT FROM :attempt")
SQL_START_FAILED = f"""
WITH prior AS (
    SELECT id, start_failures + 1 AS failures, cancel_requested AS cancel,
           COALESCE(start_failed_since, now()) AS since,
           COALESCE(start_failed_since, now()) < now() - make_interval(secs => :budget_s)
               AS exhausted,
           LEAST(CAST(:cap_s AS float8), :base_s * power(2, LEAST(start_failures, 30)))
               * (0.5 + random() / 2) AS delay_s
    FROM jobs WHERE id = :id AND {UNSTARTED}
    FOR UPDATE
), moved AS (
    UPDATE jobs j SET
        state = CASE WHEN prior.cancel THEN 'CANCELLED' WHEN prior.exhausted THEN 'FAILED'
                     ELSE {lit(P)} END,
        lease_expires_at = NULL, dispatched_at = NULL, updated_at = now(),
        finished_at = CASE WHEN prior.cancel OR prior.exhausted THEN now() END,
        not_before = CASE WHEN NOT (prior.cancel OR prior.exhausted)
                          THEN now() + make_interval(secs => prior.delay_s) END,
        attempt_limit = j.attempt_limit + 1,
        start_failures = prior.failures, start_failed_since = prior.since,
        result_error_type = CASE WHEN prior.exhausted AND NOT prior.cancel
                                 THEN 'Unstartable' END,
        result_error_message = CASE WHEN prior.exhausted AND NOT prior.cancel
                                    THEN CAST(:error_message AS text) END
    FROM prior
    WHERE j.id = prior.id AND {UNSTARTED}
    RETURNING j.id, j.state, j.attempts, j.owner_id, prior.failures, prior.delay_s,
              j.started_at, j.claim_id
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details, claimed_at,
                            claim_id)
    SELECT id, {lit(R)}, state,
           CASE state WHEN 'PENDING' THEN 'start-failed' WHEN 'CANCELLED' THEN 'cancelled'
                      ELSE 'unstartable' END,
           attempts,
           jsonb_build_object('error', CAST(:error_message AS text), 'start_failures', failures)
           || CASE WHEN state = 'PENDING'
                   THEN jsonb_build_object('delay_s', round(CAST(delay_s AS numeric), 3))
                   ELSE '{{}}'::jsonb END,
           started_at, claim_id
    FROM moved
)
SELECT id, state, owner_id, failures FROM moved"""

class Taken(NamedTuple):
    """A job as its execution took it: the attempt it holds, and the slots its claim took (its
    exit gives them back and releases what waits for them, as the push path's does)."""

    job: Job
    holds_slot: bool
    flow_held: bool


class StartFailure(NamedTuple):
    id: UUID
    state: JobState  # PENDING (started again later), FAILED (unstartable) or CANCELLED
    owner_id: str
    failures: int


class ExecutionMoves(StoreBase):
    """The two statements a long job adds to its attempt (the start's record, and the
    execution's own take, which is the same statement finding the name already there)."""

    def record_execution(self, job_id: UUID | str, attempt: int, name: str) -> Taken | None:
        """Name `name` as the execution of `attempt`. None if the job is no longer PROCESSING
        at that attempt, or another execution took it: that execution must run nothing."""
        rows = self._rows(SQL_RECORD_EXECUTION, id=as_uuid(job_id), attempt=attempt,
                          name=storable_text(name, 200))
        if not rows:
            return None
        row = rows[0]
        holds_slot = bool(row.pop("holds_slot"))
        flow_held = row.pop("flow_held") is not None
        return Taken(job_from_row(row), holds_slot, flow_held)

    def start_failed(
        self, job_id: UUID | str, attempt: int, error: str, *, policy: Settings | None = None,
    ) -> StartFailure | None:
        """The attempt's execution could not be started: put the job back (see the module).
        None if nothing was written: the attempt moved on, or an execution did start and
        took it after all."""
        s = policy or self._settings
        params: dict[str, Any] = {
            "id": as_uuid(job_id), "attempt": attempt,
            "error_message": storable_text(error, MAX_ERROR_MESSAGE) or "start failed",
            "budget_s": s.delivery_budget_s, "base_s": s.delivery_retry_base_s,
            "cap_s": s.delivery_retry_cap_s,
        }
        rows = self._rows(SQL_START_FAILED, **params)
        if not rows:
            return None
        r = rows[0]
        return StartFailure(r["id"], JobState(r["state"]), r["owner_id"], int(r["failures"]))
