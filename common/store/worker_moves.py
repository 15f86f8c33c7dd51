"""The worker's fenced moves: claim, heartbeat, and the exits, each guarded by state and attempt.

A state change and its `job_events` row are written by one statement (a data-modifying CTE),
so they commit together or not at all; a COMPLETED or FAILED job's result is part of the row
version that statement writes. The attempt number is the fencing token: it only ever grows, so
a worker whose lease was taken over can never write over a newer attempt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NamedTuple
from uuid import UUID

from common.store.base import SQL_PEEK, StoreBase
from common.store.claim_sql import SQL_CLAIM
from common.store.exit_sql import SQL_EXIT, progress_set
from common.store.fragments import (
    J_COLS,
    MAX_ERROR_MESSAGE,
    RESULT_COLS,
    R,
    as_uuid,
    job_from_row,
    lit,
    storable_error,
    storable_text,
    to_json,
)
from common.store.models import (
    ClaimOutcome,
    Job,
    JobMove,
)
from common.store.states import JobState, Move

MAX_MESSAGE_ID = 255

SQL_GET_ANY_OWNER = f"""
SELECT {J_COLS}, {RESULT_COLS} FROM jobs j WHERE j.id = :id"""


SQL_EXTEND_LEASE = f"""
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => :lease_s), updated_at = now(),
    {progress_set()}
WHERE id = :id AND state = {lit(R)} AND attempts = :attempt
RETURNING cancel_requested"""


# Worker records: not job state, but about jobs, so their SQL lives here too.
SQL_POISON = """
INSERT INTO poison_messages (message_id, reason, excerpt) VALUES (:message_id, :reason, :excerpt)
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id"""

SQL_CHAOS_RUN = """
INSERT INTO chaos_runs (job_id, attempt, outcome) VALUES (:job_id, :attempt, :outcome)
RETURNING id"""

SQL_CHAOS_RUNS = """
SELECT job_id, attempt, outcome FROM chaos_runs WHERE job_id = ANY(CAST(:ids AS uuid[]))
ORDER BY id"""



def skipped(state: str | None, attempts: int | None, expected: int | None
            ) -> ClaimOutcome | None:
    """Why a claim that moved nothing took nothing, read from the row (None: no row): gone,
    ended, running, or a message for another attempt. None if the row looks claimable (not
    due yet, or under a limit): the caller says which."""
    if state is None:
        return ClaimOutcome(job=None, reason="not-found")
    if JobState(state).terminal:
        return ClaimOutcome(job=None, reason="terminal")
    if state == JobState.PROCESSING:
        return ClaimOutcome(job=None, reason="in-progress")
    if expected is not None and attempts != expected:
        return ClaimOutcome(job=None, reason="stale-message")
    return None


class Progress(NamedTuple):
    """A handler's report: how far (0..1) and a short note for people."""

    fraction: float
    note: str | None = None


MAX_PROGRESS_NOTE = 200


class ExitRequest(NamedTuple):
    """One exit, its values bound: written alone (`exit`) or in a batch (`exit_many`)."""

    move: Move
    job_id: UUID
    attempt: int
    values: dict[str, Any]


def _progress_params(progress: Progress | None) -> dict[str, Any]:
    if progress is None:
        return {"progress": None, "progress_note": None}
    fraction = progress.fraction if math.isfinite(progress.fraction) else 0.0
    note = storable_text(progress.note, MAX_PROGRESS_NOTE) if progress.note else None
    return {"progress": min(max(fraction, 0.0), 1.0), "progress_note": note}


class WorkerMoves(StoreBase):
    """What `process` does to a job, fenced by the attempt it holds."""

    # -- the worker's operations (fenced by attempt) -----------------------------------------

    def get_for_worker(self, job_id: UUID | str) -> Job | None:
        return self._one_job(SQL_GET_ANY_OWNER, id=as_uuid(job_id))

    def claim(
        self,
        job_id: UUID | str,
        *,
        expected_attempts: int | None = None,
        lease_s: float | None = None,
    ) -> ClaimOutcome:
        """PENDING → PROCESSING under a lease, attempts + 1. Never raises for a job that cannot be
        claimed: the outcome says why, so the worker can acknowledge a duplicate and move on.
        `expected_attempts` (the attempt count the message was published for) turns a message
        left over from an earlier attempt into 'stale-message'."""
        uid = as_uuid(job_id)
        params: dict[str, Any] = {"id": uid, "lease_s": lease_s or self._settings.lease_seconds,
                                  "default_limit": self._settings.owner_max_running,
                                  "hold_s": self._settings.flow_hold_s,
                                  "ahead": self._settings.flow_ahead}
        if expected_attempts is not None:
            params["expected_attempts"] = expected_attempts
        claimed = self._rows(SQL_CLAIM[expected_attempts is not None], **params)
        if claimed:
            row = claimed[0]
            outcome = row.pop("outcome")
            holds_slot = bool(row.pop("holds_slot"))
            rated, flow_held = bool(row.pop("rated")), row.pop("flow_held")
            hold_s = row.pop("hold_s")
            if outcome == "parked":  # a limit is full: parked, no attempt spent
                return ClaimOutcome(job=None, reason="deferred")
            job = job_from_row(row)
            if outcome == "held":  # a rate slot is reserved for it: claim again then
                return ClaimOutcome(job=None, reason="held", hold_until=job.not_before,
                                    hold_s=float(hold_s))
            return ClaimOutcome(job=job, reason="claimed", holds_slot=holds_slot,
                                rated=rated, flow_held=bool(flow_held))
        rows = self._rows(SQL_PEEK, id=uid)
        peek = rows[0] if rows else {"state": None, "attempts": None}
        return (skipped(peek["state"], peek["attempts"], expected_attempts)
                or ClaimOutcome(job=None, reason="not-due"))

    def extend_lease(
        self,
        job_id: UUID,
        attempt: int,
        *,
        lease_s: float | None = None,
        progress: Progress | None = None,
    ) -> bool:
        """Heartbeat for a long handler. Returns whether a cancel was requested meanwhile.
        `progress`, the handler's latest report since the last heartbeat, is stored with it."""
        rows = self._rows(
            SQL_EXTEND_LEASE,
            id=job_id,
            attempt=attempt,
            lease_s=lease_s or self._settings.lease_seconds,
            **_progress_params(progress),
        )
        if not rows:
            raise self._explain_refusal(job_id, Move.CLAIM, attempt)
        return bool(rows[0]["cancel_requested"])

    def exit_request(
        self, move: Move, job_id: UUID, attempt: int, progress: Progress | None = None,
        **params: Any,
    ) -> ExitRequest:
        """An exit's values, ready for `exit` (alone) or `exit_many` (batched, issue 30)."""
        values: dict[str, Any] = {
            **_progress_params(progress),
            "delay_s": 0.0,
            "output": None,
            "error_type": None,
            "error_message": None,
            "duration_ms": None,
            "permanent": move is Move.FAIL,
            "details": "{}",
        }
        values.update(params)
        return ExitRequest(move, job_id, attempt, values)

    def exit(self, request: ExitRequest) -> JobMove:
        """One exit in a statement of its own."""
        rows = self._rows(SQL_EXIT[request.move], id=request.job_id, attempt=request.attempt,
                          **request.values)
        if not rows:
            raise self._explain_refusal(request.job_id, request.move, request.attempt)
        return JobMove.model_validate(rows[0])

    def complete(
        self, job_id: UUID, attempt: int, output: Any, *, duration_ms: int | None = None,
        progress: Progress | None = None,
    ) -> JobMove:
        """PROCESSING → COMPLETED with its one result row (CANCELLED if a cancel was asked).
        Each exit also stores the handler's last progress report, if the heartbeat has not."""
        return self.exit(self.complete_request(job_id, attempt, output, duration_ms=duration_ms,
                                               progress=progress))

    def complete_request(
        self, job_id: UUID, attempt: int, output: Any, *, duration_ms: int | None = None,
        progress: Progress | None = None,
    ) -> ExitRequest:
        """`complete`'s values; InvalidInput here if the output cannot be stored."""
        return self.exit_request(Move.COMPLETE, job_id, attempt, progress,
                                 output=to_json(output), duration_ms=duration_ms)

    def fail(
        self, job_id: UUID, attempt: int, error_type: str, error_message: str, *,
        duration_ms: int | None = None, progress: Progress | None = None,
    ) -> JobMove:
        """A permanent failure: PROCESSING → FAILED at once, the error kept as the result."""
        return self.exit(self.fail_request(job_id, attempt, error_type, error_message,
                                           duration_ms=duration_ms, progress=progress))

    def fail_request(
        self, job_id: UUID, attempt: int, error_type: str, error_message: str, *,
        duration_ms: int | None = None, progress: Progress | None = None,
    ) -> ExitRequest:
        etype, emsg = storable_error(error_type, error_message)
        return self.exit_request(
            Move.FAIL, job_id, attempt, progress, error_type=etype, error_message=emsg,
            duration_ms=duration_ms,
            details=to_json({"error_type": etype, "error_message": emsg}),
        )

    def retry_later(
        self, job_id: UUID, attempt: int, error_type: str, error_message: str, *,
        delay: timedelta, duration_ms: int | None = None, progress: Progress | None = None,
    ) -> JobMove:
        """A transient failure: back to PENDING, due after `delay`, while attempts remain; FAILED
        ('attempts-exhausted') on the last one. The sweep re-dispatches it when due."""
        return self.exit(self.retry_later_request(
            job_id, attempt, error_type, error_message, delay=delay, duration_ms=duration_ms,
            progress=progress))

    def retry_later_request(
        self, job_id: UUID, attempt: int, error_type: str, error_message: str, *,
        delay: timedelta, duration_ms: int | None = None, progress: Progress | None = None,
    ) -> ExitRequest:
        etype, emsg = storable_error(error_type, error_message)
        delay_s = max(delay.total_seconds(), 0.0)
        return self.exit_request(
            Move.RETRY_LATER, job_id, attempt, progress, error_type=etype, error_message=emsg,
            delay_s=delay_s, duration_ms=duration_ms,
            details=to_json({"error_type": etype, "error_message": emsg, "delay_s": delay_s}),
        )

    def confirm_cancel(
        self, job_id: UUID, attempt: int, *, progress: Progress | None = None
    ) -> JobMove:
        """The worker saw the cancel flag and stopped: PROCESSING → CANCELLED."""
        return self.exit(self.exit_request(Move.CONFIRM_CANCEL, job_id, attempt, progress))

    # -- worker records ----------------------------------------------------------------------

    def record_poison(self, message_id: str, reason: str, excerpt: str) -> bool:
        """Keep an undecodable message that is being acknowledged. False if this message id
        was recorded before (a redelivery). Every text is made storable (no NUL, no lone
        surrogate): a message that cannot even be recorded would be redelivered forever."""
        rows = self._rows(
            SQL_POISON,
            message_id=storable_text(message_id, MAX_MESSAGE_ID) or "unknown",
            reason=storable_text(reason, MAX_ERROR_MESSAGE),
            excerpt=storable_text(excerpt.replace("\x00", "\ufffd"), MAX_ERROR_MESSAGE),
        )
        return bool(rows)

    def record_chaos_run(self, job_id: str, attempt: int, outcome: str) -> None:
        self._rows(SQL_CHAOS_RUN, job_id=as_uuid(job_id), attempt=attempt, outcome=outcome)

    def chaos_runs(self, job_ids: Iterable[UUID | str]) -> list[tuple[UUID, int, str]]:
        """The chaos preset's run log for these jobs, oldest first: (job_id, attempt, outcome)."""
        rows = self._rows(SQL_CHAOS_RUNS, ids=[str(as_uuid(j)) for j in job_ids])
        return [(r["job_id"], r["attempt"], r["outcome"]) for r in rows]

