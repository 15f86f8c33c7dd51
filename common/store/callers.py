"""Callers' operations: what an owner's request reads and writes, always scoped by owner.

A foreign job is indistinguishable from a missing one (JobNotFound).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from common.store.base import StoreBase
from common.store.create_sql import SQL_CREATE, SQL_CREATE_QUOTA
from common.store.cursor import decode_cursor, encode_cursor
from common.store.errors import (
    AttemptLimitReached,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidInput,
    JobNotFound,
    PendingLimitReached,
    UnknownPreset,
)
from common.store.fair_share import DUE, DUE_FROM
from common.store.flow_sql import PARKED
from common.store.fragments import (
    COLS,
    J_COLS,
    MAX_TOTAL_ATTEMPTS,
    OUT_COLS,
    RESULT_COLS,
    P,
    R,
    as_uuid,
    checked_owner,
    event_cte,
    has_surrogate,
    in_list,
    job_from_row,
    lit,
    request_hash,
    sources,
    target,
    to_json,
    unstorable,
)
from common.store.models import (
    DEFAULT_PRIORITY,
    PRESET_PATTERN,
    Job,
    JobEvent,
    JobPage,
    JobTemplate,
    NewJob,
)
from common.store.states import TRANSITIONS, JobState, Move
from common.store.timing import resolve_not_before

# A replay answers with the job as GET shows it, its result included once it has one.
SQL_BY_KEY = f"""
SELECT {J_COLS}, j.request_hash, {RESULT_COLS} FROM jobs j
WHERE j.owner_id = :owner_id AND j.idempotency_key = :idempotency_key"""

# One job as GET /jobs/{id} shows it: with a long job's execution (issue 29), which no other
# read needs (the claim path never reads these columns).
SQL_GET = f"""
SELECT {J_COLS}, {RESULT_COLS}, j.execution, j.execution_attempt FROM jobs j
WHERE j.id = :id AND j.owner_id = :owner_id"""

# The waiting request's probe: the state only, on the primary key, owner-scoped.
SQL_STATE = """
SELECT state FROM jobs WHERE id = :id AND owner_id = :owner_id"""

SQL_EVENTS = """
SELECT e.id, e.job_id, e.from_state, e.to_state, e.reason, e.attempt, e.details, e.at
FROM job_trail e JOIN jobs j ON j.id = e.job_id
WHERE j.id = :id AND j.owner_id = :owner_id
ORDER BY e.id"""


def _list_sql(with_state: bool, with_cursor: bool, with_preset: bool = False) -> str:
    """A page of the owner's jobs, newest first, on the one owner index (owner, state, created,
    id). Without a state filter: one short backward scan per state, each stopped at the page
    size, merged (PostgreSQL 15 cannot merge the states of one index scan itself). A second
    owner index without `state` would serve it in one scan, but every transition would write
    an entry into it (migration 0010)."""
    where = "owner_id = :owner_id"
    if with_preset:
        where += " AND preset = :preset"
    if with_cursor:
        where += " AND (created_at, id) < (:c_created, :c_id)"
    states = ["CAST(:state AS text)"] if with_state else [lit(s) for s in sorted(JobState)]
    branches = "\n    UNION ALL\n".join(
        f"    (SELECT id, created_at FROM jobs WHERE {where} AND state = {state}\n"
        "     ORDER BY created_at DESC, id DESC LIMIT :limit)"
        for state in states
    )
    return f"""
WITH page AS (
    SELECT id, created_at FROM (
{branches}
    ) u ORDER BY created_at DESC, id DESC LIMIT :limit
)
SELECT {J_COLS}, {RESULT_COLS} FROM page p JOIN jobs j ON j.id = p.id
ORDER BY j.created_at DESC, j.id DESC"""


SQL_LIST = {(s, c): _list_sql(s, c) for s in (False, True) for c in (False, True)}
# The dashboard's preset filter reads the same owner indexes and filters on the way: a preset
# is a coarse cut of one owner's jobs, not worth an index of its own.
SQL_LIST_PRESET = {
    (s, c): _list_sql(s, c, with_preset=True) for s in (False, True) for c in (False, True)
}


CANCELLABLE = TRANSITIONS[Move.CANCEL].sources | TRANSITIONS[Move.REQUEST_CANCEL].sources
# The caller's cancel: PENDING ends at once; PROCESSING raises the flag the worker honours.
# `rows` picks the jobs: one by id here, a filtered batch in bulk (common/store/bulk.py); the
# guard and the moves are the same for both. Returns the statement's CTEs (after WITH).
def cancel_sql(rows: str, returning: str = COLS, extra_guard: str = "") -> str:
    return f"""
moved AS (
    UPDATE jobs SET
        state = CASE WHEN state IN {sources(Move.CANCEL)} THEN {target(Move.CANCEL)} ELSE state END,
        finished_at = CASE WHEN state IN {sources(Move.CANCEL)} THEN now() END,
        cancel_requested = state IN {sources(Move.REQUEST_CANCEL)},
        dispatched_at = CASE WHEN state IN {sources(Move.CANCEL)} THEN NULL ELSE dispatched_at END,
        not_before = CASE WHEN state IN {sources(Move.CANCEL)} THEN NULL ELSE not_before END,
        updated_at = now()
    WHERE {rows} AND owner_id = :owner_id
      AND state IN {in_list(CANCELLABLE)}{extra_guard}
    RETURNING {returning}
), {
    event_cte(
        f"CASE WHEN state = {target(Move.CANCEL)} THEN {lit(P)} ELSE {lit(R)} END",
        f"CASE WHEN state = {target(Move.CANCEL)} THEN 'cancelled' ELSE 'cancel-requested' END",
    )
}"""


SQL_CANCEL = "WITH" + cancel_sql("id = :id") + f"""
SELECT {OUT_COLS} FROM moved"""

# Retrying a FAILED job gives it a fresh budget of attempts without reusing attempt numbers:
# resetting the count would hand a zombie worker's fencing token to a new attempt. The budget
# stops at MAX_TOTAL_ATTEMPTS; a job that has used them all cannot be retried.
def retry_sql(prior: str, returning: str) -> str:
    """`prior` picks the FAILED jobs to retry (id and last error, read before the update): one
    by id here, a filtered batch in bulk (common/store/bulk.py). Returns the CTEs."""
    return f"""
prior AS (
    {prior}
), moved AS (
    UPDATE jobs j SET state = {target(Move.RETRY)},
        attempt_limit = LEAST(j.attempts + j.max_attempts, :max_total), lease_graces = 0,
        finished_at = NULL, not_before = NULL, dispatched_at = NULL, cancel_requested = false,
        updated_at = now(), result_output = NULL, result_error_type = NULL,
        result_error_message = NULL, result_duration_ms = NULL
    FROM prior
    WHERE j.id = prior.id AND j.owner_id = :owner_id AND j.state IN {sources(Move.RETRY)}
      AND j.attempts < :max_total
    RETURNING {returning}, prior.result_error_type AS previous_error_type,
              prior.result_error_message AS previous_error_message
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, {lit(JobState.FAILED)}, state, 'retried', attempts,
           jsonb_build_object('previous_error_type', previous_error_type,
                              'previous_error_message', previous_error_message)
    FROM moved
)"""


SQL_RETRY = "WITH" + retry_sql(
    "SELECT id, result_error_type, result_error_message FROM jobs\n"
    "    WHERE id = :id AND owner_id = :owner_id", J_COLS,
) + f"""
SELECT {OUT_COLS} FROM moved"""


# An owner's own queue, for `GET /stats`: runs on the owner's rows only (owner/state index).
SQL_OWNER_STATS = f"""
SELECT state, count(*) AS n,
       min({DUE_FROM}) FILTER (WHERE {DUE}) AS oldest_due,
       count(*) FILTER (WHERE {DUE}) AS due,
       count(*) FILTER (WHERE {PARKED}) AS parked,
       count(*) FILTER (WHERE finished_at > now() - interval '5 minutes') AS finished_5m,
       now() AS now
FROM jobs WHERE owner_id = :owner_id GROUP BY state"""


class CallerOperations(StoreBase):
    """Create, read, list, cancel and retry, for one owner."""

    def _owner_page(self, sql: dict[bool, str], owner_id: str, limit: int,
                    cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of an owner's rows newest first (schedules, workflows): the rows, and the
        cursor of the next page if there is one. `sql[True]` continues after a cursor."""
        if not 1 <= limit <= self._settings.max_page_size:
            raise InvalidInput("limit", f"must be between 1 and {self._settings.max_page_size}")
        params: dict[str, Any] = {"owner_id": checked_owner(owner_id), "limit": limit + 1}
        if cursor:
            params["c_created"], params["c_id"] = decode_cursor(cursor)
        rows = self._rows(sql[bool(cursor)], **params)
        last = rows[limit - 1] if len(rows) > limit else None
        return rows[:limit], encode_cursor(last["created_at"], last["id"]) if last else None

    # -- callers' operations (scoped by owner) ------------------------------------------------

    def create(
        self, owner_id: str, new: NewJob, *, traceparent: str | None = None,
        dispatching: bool = False, max_pending: int = 0,
        on_pending: Callable[[int], None] | None = None,
    ) -> tuple[Job, bool]:
        """Create a job; returns (job, created). A replay of the same keyed request returns the
        existing job with created=False; the same key with a different request raises.
        `traceparent` (the creating request's W3C trace) is kept for the job's later messages.
        `dispatching` stamps the job dispatched as it is created, for a caller that publishes
        it next and releases it (`release_dispatch`) if the publish fails. With `max_pending`
        above 0, a new job is refused (PendingLimitReached) while the owner has that many
        PENDING jobs, and `on_pending` hears how many the statement saw (at most max_pending);
        a replay is still answered."""
        owner = checked_owner(owner_id)
        self._check_new_job(new)
        max_attempts = new.max_attempts or self._settings.default_max_attempts
        digest = request_hash(new, max_attempts) if new.idempotency_key else None
        not_before, delay_s = resolve_not_before(
            new.run_at, new.delay_s, max_days=self._settings.max_run_ahead_days,
            now=datetime.now(UTC),
        )
        params = {
            "owner_id": owner,
            "preset": new.preset,
            "content": new.content,
            "metadata": to_json(new.metadata, "metadata"),
            "max_attempts": max_attempts,
            "idempotency_key": new.idempotency_key,
            "request_hash": digest,
            "callback_url": new.callback_url,
            "priority": new.priority if new.priority is not None else DEFAULT_PRIORITY,
            "limit_key": new.limit_key,
            "traceparent": traceparent,
            "not_before": not_before,
            "delay_s": delay_s,
            "dispatching": dispatching,
        }
        sql = SQL_CREATE[digest is not None]
        if max_pending > 0:
            sql = SQL_CREATE_QUOTA[digest is not None]
            params["max_pending"] = max_pending
        # Two tries: the conflicting row may be deleted by retention between the two statements.
        for _ in range(2):
            created = self._created(sql, params, on_pending if max_pending > 0 else None)
            if created is not None:
                return created, True
            if digest is None:  # no key to conflict on: only the quota refuses a new job
                raise PendingLimitReached(max_pending)
            rows = self._rows(SQL_BY_KEY, owner_id=owner, idempotency_key=new.idempotency_key)
            if rows:
                if rows[0]["request_hash"] != digest:
                    raise IdempotencyConflict(rows[0]["id"])
                return job_from_row(rows[0]), False
            if max_pending > 0:
                raise PendingLimitReached(max_pending)
        raise DatabaseUnavailable("idempotency race did not settle")

    def _created(self, sql: str, params: dict[str, Any],
                 on_pending: Callable[[int], None] | None) -> Job | None:
        """The job the INSERT wrote, if it wrote one; a counting INSERT always answers one row,
        whose job columns are NULL when it wrote nothing."""
        rows = self._rows(sql, **params)
        if not rows:
            return None
        row = dict(rows[0])
        seen = row.pop("pending_seen", None)
        if seen is not None and on_pending is not None:
            on_pending(int(seen))
        return job_from_row(row) if row["id"] is not None else None

    def get(self, owner_id: str, job_id: UUID | str) -> Job:
        job = self._one_job(SQL_GET, id=as_uuid(job_id), owner_id=checked_owner(owner_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    def job_state(self, owner_id: str, job_id: UUID | str) -> JobState | None:
        """The job's state alone (None if missing or foreign): what a waiting request reads
        between its full reads."""
        rows = self._rows(SQL_STATE, id=as_uuid(job_id), owner_id=checked_owner(owner_id))
        return JobState(rows[0]["state"]) if rows else None

    def list_jobs(
        self,
        owner_id: str,
        *,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        preset: str | None = None,
    ) -> JobPage:
        params: dict[str, Any] = {"owner_id": checked_owner(owner_id)}
        if not 1 <= limit <= self._settings.max_page_size:
            raise InvalidInput("limit", f"must be between 1 and {self._settings.max_page_size}")
        if state is not None:
            try:
                params["state"] = JobState(state).value
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise InvalidInput("state", f"must be one of {names}") from None
        if preset is not None:
            if len(preset) > 64 or not re.fullmatch(PRESET_PATTERN, preset):
                raise InvalidInput("preset", "must be a preset name")
            params["preset"] = preset
        if cursor:
            params["c_created"], params["c_id"] = decode_cursor(cursor)
        params["limit"] = limit + 1
        queries = SQL_LIST if preset is None else SQL_LIST_PRESET
        rows = self._rows(queries[(state is not None, bool(cursor))], **params)
        jobs = [job_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def events(self, owner_id: str, job_id: UUID | str) -> list[JobEvent]:
        rows = self._rows(SQL_EVENTS, id=as_uuid(job_id), owner_id=checked_owner(owner_id))
        if not rows:  # every job has at least its 'created' event
            raise JobNotFound(job_id)
        return [JobEvent.model_validate(r) for r in rows]

    def cancel(self, owner_id: str, job_id: UUID | str) -> Job:
        """PENDING → CANCELLED at once; PROCESSING → cancel requested; terminal → refused."""
        uid = as_uuid(job_id)
        job = self._one_job(SQL_CANCEL, id=uid, owner_id=checked_owner(owner_id))
        if job is None:
            self.get(owner_id, uid)  # raises JobNotFound for a missing or foreign job
            raise self._explain_refusal(uid, Move.CANCEL, None)
        return job

    def retry(self, owner_id: str, job_id: UUID | str) -> Job:
        """FAILED → PENDING with a fresh budget of attempts (up to MAX_TOTAL_ATTEMPTS in all);
        the caller then dispatches it."""
        uid = as_uuid(job_id)
        job = self._one_job(
            SQL_RETRY, id=uid, owner_id=checked_owner(owner_id), max_total=MAX_TOTAL_ATTEMPTS
        )
        if job is None:
            current = self.get(owner_id, uid)
            if current.state in TRANSITIONS[Move.RETRY].sources:
                raise AttemptLimitReached(uid, current.attempts, MAX_TOTAL_ATTEMPTS)
            raise self._explain_refusal(uid, Move.RETRY, None)
        return job

    def owner_stats(self, owner_id: str) -> dict[str, Any]:
        """The owner's jobs by state, how many PENDING ones are due and how many parked, how long
        the oldest due one has waited (run-later and parked jobs are not late), and how many of
        theirs finished in the last five minutes."""
        rows = self._rows(SQL_OWNER_STATS, owner_id=checked_owner(owner_id))
        depth = {state.value: 0 for state in JobState}
        oldest, finished, now, due, parked = None, 0, None, 0, 0
        for row in rows:
            depth[row["state"]] = int(row["n"])
            finished += int(row["finished_5m"])
            due += int(row["due"])
            parked += int(row["parked"])
            oldest = row["oldest_due"] or oldest
            now = row["now"]
        return {
            "depth": depth,
            "pending_due": due,
            "pending_parked": parked,
            "oldest_pending_age_s": (
                round(max(0.0, (now - oldest).total_seconds()), 3) if oldest and now else None
            ),
            "finished_last_5_min": finished,
        }

    # -- validation ------------------------------------------------------------------------

    def _check_new_job(self, new: JobTemplate) -> None:
        # First: text with lone surrogates cannot even be measured in UTF-8, let alone stored.
        key = getattr(new, "idempotency_key", None)  # a schedule's template has none
        callback = getattr(new, "callback_url", None)
        for name, text in (("content", new.content), ("idempotency_key", key),
                           ("callback_url", callback)):
            if text is not None and has_surrogate(text):
                raise InvalidInput(name, "contains a lone surrogate (not valid Unicode text)")
        if (reason := unstorable(new.metadata, "metadata")) is not None:
            raise InvalidInput("metadata", reason)
        if self._presets is not None and new.preset not in self._presets:
            raise UnknownPreset(new.preset, self._presets)
        if len(new.content.encode()) > self._settings.max_content_bytes:
            raise InvalidInput(
                "content", f"larger than {self._settings.max_content_bytes} bytes (UTF-8)"
            )
        if len(to_json(new.metadata, "metadata").encode()) > self._settings.max_metadata_bytes:
            raise InvalidInput(
                "metadata", f"larger than {self._settings.max_metadata_bytes} bytes as JSON"
            )
