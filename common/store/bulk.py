"""Bulk actions: cancel or retry every job of one owner that matches a filter.

Never one giant statement: each call moves at most BULK_BATCH jobs, picked on the owner index
(owner, state, created_at, id) in key order after a cursor, and is its own short transaction.
The caller loops (JobService.bulk_cancel / bulk_retry) with the cursor each step returns, so
a step costs what it moves, and a job moved, or skipped, is never picked again by the same
action. The moves are the single cancel's and retry's own statements (callers.cancel_sql,
callers.retry_sql), with the same guards by state (and, for a retry, the attempt ceiling):
a job that changed state since it was picked is re-checked under its row lock and left alone.

Jobs created after the action began are not part of it: the filter's `created_before` is capped
at the database's clock when the action starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from common.store.callers import CallerOperations, cancel_sql, retry_sql
from common.store.errors import InvalidInput
from common.store.fragments import MAX_TOTAL_ATTEMPTS, checked_owner, lit, trace_of
from common.store.models import DispatchItem
from common.store.states import TRANSITIONS, JobState, Move

BULK_BATCH = 500
# The states each action can move a job from: the single move's own sources.
CANCEL_STATES = (JobState.WAITING, JobState.PENDING, JobState.PROCESSING)
RETRY_STATES = (JobState.FAILED,)
assert set(CANCEL_STATES) == TRANSITIONS[Move.CANCEL].sources | TRANSITIONS[
    Move.REQUEST_CANCEL].sources
assert set(RETRY_STATES) == TRANSITIONS[Move.RETRY].sources

_START = "0001-01-01T00:00:00+00:00"
_NIL = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class BulkFilter:
    """Which of the owner's jobs an action applies to; None matches any."""

    state: JobState | None = None
    preset: str | None = None
    created_before: datetime | None = None
    limit_key: str | None = None  # the caller's key (issue 27): every job under one limit

    @property
    def matches_everything(self) -> bool:
        return (self.state is None and self.preset is None and self.created_before is None
                and self.limit_key is None)


@dataclass(frozen=True)
class Cursor:
    """The last job a step picked, in key order (created_at, id)."""

    created_at: str = _START
    id: str = _NIL


@dataclass(frozen=True)
class BulkStep:
    picked: int  # jobs the step looked at (moved or not): BULK_BATCH means there may be more
    moved: list[dict[str, Any]]  # one row per moved job: id, state, attempts, traceparent
    cursor: Cursor | None  # None once the step picked fewer than BULK_BATCH: nothing is left


def _where(state: JobState, flt: BulkFilter) -> str:
    """The pick's filter on one state. A PROCESSING job already asked to cancel is not picked
    again (a second request would change nothing); nor a FAILED job out of attempts."""
    where = f"owner_id = :owner_id AND state = {lit(state)} AND created_at < CAST(:before AS " \
            "timestamptz)"
    if flt.preset is not None:
        where += " AND preset = :preset"
    if flt.limit_key is not None:
        where += " AND limit_key = :limit_key"
    if state is JobState.PROCESSING:
        where += " AND NOT cancel_requested"
    if state is JobState.FAILED:
        where += " AND attempts < :max_total"
    return where


def _pick(state: JobState, flt: BulkFilter, columns: str) -> str:
    return f"""SELECT {columns} FROM jobs
    WHERE {_where(state, flt)}
      AND (created_at, id) > (CAST(:c_created AS timestamptz), CAST(:c_id AS uuid))
    ORDER BY created_at, id LIMIT :batch"""


_LAST = "(SELECT created_at, id FROM picked ORDER BY created_at DESC, id DESC LIMIT 1)"


def cancel_step_sql(state: JobState, flt: BulkFilter) -> str:
    return f"""
WITH picked AS ({_pick(state, flt, "id, created_at")}), {
    cancel_sql("id = ANY(ARRAY(SELECT id FROM picked))", f"id, state, attempts, {trace_of()}",
               extra_guard=" AND NOT cancel_requested")}
SELECT 'moved' AS kind, id, state, attempts, traceparent, CAST(NULL AS text) AS created_at
FROM moved
UNION ALL
SELECT 'last', id, NULL, (SELECT count(*) FROM picked), NULL, CAST(created_at AS text)
FROM {_LAST} last"""


def retry_step_sql(flt: BulkFilter) -> str:
    prior = _pick(JobState.FAILED, flt, "id, created_at, result_error_type, result_error_message")
    return f"""
WITH picked AS ({prior}), {
    retry_sql("SELECT id, result_error_type, result_error_message FROM picked",
              f"j.id, j.state, j.attempts, {trace_of('j.')}")}
SELECT 'moved' AS kind, id, state, attempts, traceparent, CAST(NULL AS text) AS created_at
FROM moved
UNION ALL
SELECT 'last', id, NULL, (SELECT count(*) FROM picked), NULL, CAST(created_at AS text)
FROM {_LAST} last"""


def count_sql(state: JobState, flt: BulkFilter) -> str:
    return f"SELECT count(*) AS n FROM jobs WHERE {_where(state, flt)}"


SQL_START = "SELECT LEAST(now(), CAST(CAST(:before AS text) AS timestamptz)) AS before"


class BulkQueries(CallerOperations):
    """One step of a bulk action, and the count a confirmation shows."""

    def bulk_start(self, flt: BulkFilter) -> datetime:
        """The `before` bound of an action starting now: the filter's, capped at the
        database's clock, so jobs created while it runs are not part of it."""
        before = flt.created_before.isoformat() if flt.created_before is not None else "infinity"
        bound: datetime = self._rows(SQL_START, before=before)[0]["before"]
        return bound

    def bulk_count(self, owner_id: str, states: tuple[JobState, ...], flt: BulkFilter,
                   before: datetime) -> int:
        """How many jobs the action would move now (a dry run: nothing is written)."""
        owner = checked_owner(owner_id)
        return sum(
            int(self._rows(count_sql(s, flt), **self._params(owner, flt, before))[0]["n"])
            for s in states
        )

    def bulk_cancel_step(self, owner_id: str, state: JobState, flt: BulkFilter,
                         before: datetime, cursor: Cursor) -> BulkStep:
        """Cancel (PENDING) or ask to cancel (PROCESSING) up to BULK_BATCH jobs in `state`
        after `cursor`."""
        if state not in CANCEL_STATES:
            raise InvalidInput("state", "a cancel applies to PENDING or PROCESSING jobs")
        return self._step(cancel_step_sql(state, flt), owner_id, flt, before, cursor)

    def bulk_retry_step(self, owner_id: str, flt: BulkFilter, before: datetime,
                        cursor: Cursor) -> BulkStep:
        """Retry up to BULK_BATCH FAILED jobs after `cursor`; they come back undispatched
        (the caller publishes them, as a single retry does)."""
        return self._step(retry_step_sql(flt), owner_id, flt, before, cursor)

    def _params(self, owner: str, flt: BulkFilter, before: datetime) -> dict[str, Any]:
        params: dict[str, Any] = {"owner_id": owner, "before": before.isoformat(),
                                  "max_total": MAX_TOTAL_ATTEMPTS}
        if flt.preset is not None:
            params["preset"] = flt.preset
        if flt.limit_key is not None:
            params["limit_key"] = flt.limit_key
        return params

    def _step(self, sql: str, owner_id: str, flt: BulkFilter, before: datetime,
              cursor: Cursor) -> BulkStep:
        params = self._params(checked_owner(owner_id), flt, before)
        rows = self._rows(sql, **params, c_created=cursor.created_at, c_id=cursor.id,
                          batch=BULK_BATCH)
        moved = [r for r in rows if r["kind"] == "moved"]
        last = [r for r in rows if r["kind"] == "last"]
        picked = int(last[0]["attempts"]) if last else 0
        if picked < BULK_BATCH:
            return BulkStep(picked, moved, None)
        return BulkStep(picked, moved, Cursor(last[0]["created_at"], str(last[0]["id"])))


def dispatch_items(moved: list[dict[str, Any]]) -> list[DispatchItem]:
    return [DispatchItem(id=UUID(str(r["id"])), attempts=r["attempts"],
                         traceparent=r["traceparent"]) for r in moved]
