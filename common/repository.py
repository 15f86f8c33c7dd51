"""All SQL about jobs, in one place.

Every operation is one SQL statement run in autocommit mode: one round trip, one transaction.
A state change, its `job_events` row and (for terminal outcomes) its `job_results` row are written
by data-modifying CTEs of that single statement, so they commit together or not at all.

Writes are guarded in their WHERE clause by the states the move may start from (taken from
`common.states.TRANSITIONS`) and, for moves made by a worker, by the attempt it holds. The
attempt number is the fencing token: it only ever grows, so a worker whose lease was taken over
can never write over a newer attempt. When a guard does not hold, a cheap follow-up read tells
which typed error to raise; nothing was written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from common import prepared
from common.cursor import decode_cursor, encode_cursor
from common.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    StaleAttempt,
    UnknownPreset,
)
from common.models import (
    ClaimOutcome,
    DispatchItem,
    Job,
    JobEvent,
    JobMove,
    JobPage,
    JobResult,
    NewJob,
)
from common.settings import Settings
from common.states import TERMINAL_STATES, TRANSITIONS, JobState, Move

# Error messages are stored for people to read; a handler's huge exception text is cut here.
MAX_ERROR_MESSAGE = 2000
MAX_OWNER_ID = 255

# --------------------------------------------------------------------------------------------
# SQL fragments. State names are inlined as literals (they come from the JobState enum, never
# from input) so the planner can match the partial indexes' predicates; every value is a bind.
# --------------------------------------------------------------------------------------------


def _lit(state: JobState) -> str:
    return f"'{JobState(state).value}'"


def _in(states: Iterable[JobState]) -> str:
    return "(" + ",".join(_lit(s) for s in sorted(states)) + ")"


def _src(move: Move) -> str:
    return _in(TRANSITIONS[move].sources)


def _to(move: Move) -> str:
    return _lit(TRANSITIONS[move].target)


COLS = (
    "id, owner_id, preset, content, metadata, state, attempts, max_attempts, attempt_limit, "
    "idempotency_key, cancel_requested, lease_expires_at, dispatched_at, not_before, "
    "created_at, updated_at, started_at, finished_at"
)
MOVE_COLS = "id, state, attempts, not_before, finished_at"
J_COLS = ", ".join("j." + c.strip() for c in COLS.split(","))
RESULT_COLS = (
    "r.status AS r_status, r.output AS r_output, r.error_type AS r_error_type, "
    "r.error_message AS r_error_message, r.duration_ms AS r_duration_ms, "
    "r.created_at AS r_created_at"
)
TERMINAL = _in(TERMINAL_STATES)
P, R = JobState.PENDING, JobState.PROCESSING


def _event_cte(from_state: str, reason: str, details: str = "'{}'::jsonb") -> str:
    return (
        "ev AS (INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details) "
        f"SELECT id, {from_state}, state, {reason}, attempts, {details} FROM moved)"
    )


SQL_CREATE = f"""
WITH moved AS (
    INSERT INTO jobs (owner_id, preset, content, metadata, max_attempts, attempt_limit,
                      idempotency_key, request_hash, state)
    VALUES (:owner_id, :preset, :content, CAST(:metadata AS jsonb), :max_attempts, :max_attempts,
            :idempotency_key, :request_hash, {_to(Move.CREATE)})
    ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {COLS}
), {_event_cte("NULL", "'created'")}
SELECT {COLS} FROM moved"""

SQL_BY_KEY = f"""
SELECT {COLS}, request_hash FROM jobs
WHERE owner_id = :owner_id AND idempotency_key = :idempotency_key"""

SQL_GET = f"""
SELECT {J_COLS}, {RESULT_COLS} FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id
WHERE j.id = :id AND j.owner_id = :owner_id"""

SQL_GET_ANY_OWNER = f"""
SELECT {J_COLS}, {RESULT_COLS} FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id
WHERE j.id = :id"""

SQL_EVENTS = """
SELECT e.id, e.job_id, e.from_state, e.to_state, e.reason, e.attempt, e.details, e.at
FROM job_events e JOIN jobs j ON j.id = e.job_id
WHERE j.id = :id AND j.owner_id = :owner_id
ORDER BY e.id"""

SQL_PING = "SELECT 1 AS ok"

SQL_PEEK = """
SELECT state, attempts, cancel_requested,
       COALESCE(not_before > now(), false) AS not_due,
       COALESCE(lease_expires_at > now(), false) AS lease_live
FROM jobs WHERE id = :id"""


def _list_sql(with_state: bool, with_cursor: bool) -> str:
    where = "j.owner_id = :owner_id"
    if with_state:
        where += " AND j.state = :state"
    if with_cursor:
        where += " AND (j.created_at, j.id) < (:c_created, :c_id)"
    return f"""
SELECT {J_COLS}, {RESULT_COLS} FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id
WHERE {where}
ORDER BY j.created_at DESC, j.id DESC
LIMIT :limit"""


SQL_LIST = {(s, c): _list_sql(s, c) for s in (False, True) for c in (False, True)}


def _claim_sql(expect_attempts: bool) -> str:
    guard = " AND attempts = :expected_attempts" if expect_attempts else ""
    return f"""
WITH moved AS (
    UPDATE jobs SET state = {_to(Move.CLAIM)}, attempts = attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s),
        started_at = now(), updated_at = now(), not_before = NULL
    WHERE id = :id AND state IN {_src(Move.CLAIM)} AND NOT cancel_requested
      AND (not_before IS NULL OR not_before <= now()){guard}
    RETURNING {COLS}
), {_event_cte(_lit(P), "'claimed'")}
SELECT {COLS} FROM moved"""


SQL_CLAIM = {flag: _claim_sql(flag) for flag in (False, True)}

# A worker's exits. A cancel requested while the job ran wins over every outcome, so each exit
# computes its target in SQL from the row it guards, within the same statement.
CANCELLED_IF_ASKED = f"WHEN cancel_requested THEN {_to(Move.CONFIRM_CANCEL)}"
EXIT_STATE = {
    Move.COMPLETE: f"CASE {CANCELLED_IF_ASKED} ELSE {_to(Move.COMPLETE)} END",
    Move.FAIL: f"CASE {CANCELLED_IF_ASKED} ELSE {_to(Move.FAIL)} END",
    Move.RETRY_LATER: (
        f"CASE {CANCELLED_IF_ASKED} WHEN attempts >= attempt_limit THEN {_to(Move.FAIL)} "
        f"ELSE {_to(Move.RETRY_LATER)} END"
    ),
    Move.CONFIRM_CANCEL: _to(Move.CONFIRM_CANCEL),
}
EXIT_REASON = (
    "CASE state WHEN 'COMPLETED' THEN 'completed' WHEN 'CANCELLED' THEN 'cancelled' "
    "WHEN 'PENDING' THEN 'retry-scheduled' "
    "ELSE CASE WHEN :permanent THEN 'failed' ELSE 'attempts-exhausted' END END"
)


def _exit_sql(move: Move) -> str:
    new_state = EXIT_STATE[move]
    return f"""
WITH moved AS (
    UPDATE jobs SET state = {new_state},
        lease_expires_at = NULL, updated_at = now(),
        finished_at = CASE WHEN {new_state} IN {TERMINAL} THEN now() END,
        not_before = CASE WHEN {new_state} = {_lit(P)}
                          THEN now() + make_interval(secs => :delay_s) END,
        dispatched_at = NULL
    WHERE id = :id AND state IN {_src(move)} AND attempts = :attempt
    RETURNING {MOVE_COLS}
), {_event_cte(_lit(R), EXIT_REASON, "CAST(:details AS jsonb)")},
res AS (
    INSERT INTO job_results (job_id, status, output, error_type, error_message, duration_ms)
    SELECT id, CASE state WHEN 'COMPLETED' THEN 'succeeded' ELSE 'failed' END,
           CASE state WHEN 'COMPLETED' THEN CAST(:output AS jsonb) END,
           CASE state WHEN 'FAILED' THEN CAST(:error_type AS text) END,
           CASE state WHEN 'FAILED' THEN CAST(:error_message AS text) END,
           :duration_ms
    FROM moved WHERE state IN ('COMPLETED', 'FAILED')
)
SELECT {MOVE_COLS} FROM moved"""


SQL_EXIT = {move: _exit_sql(move) for move in EXIT_STATE}

SQL_EXTEND_LEASE = f"""
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => :lease_s), updated_at = now()
WHERE id = :id AND state = {_lit(R)} AND attempts = :attempt
RETURNING cancel_requested"""

CANCELLABLE = TRANSITIONS[Move.CANCEL].sources | TRANSITIONS[Move.REQUEST_CANCEL].sources
# The caller's cancel: PENDING ends at once; PROCESSING raises the flag the worker honours.
SQL_CANCEL = f"""
WITH moved AS (
    UPDATE jobs SET
        state = CASE WHEN state IN {_src(Move.CANCEL)} THEN {_to(Move.CANCEL)} ELSE state END,
        finished_at = CASE WHEN state IN {_src(Move.CANCEL)} THEN now() END,
        cancel_requested = state IN {_src(Move.REQUEST_CANCEL)},
        dispatched_at = CASE WHEN state IN {_src(Move.CANCEL)} THEN NULL ELSE dispatched_at END,
        not_before = CASE WHEN state IN {_src(Move.CANCEL)} THEN NULL ELSE not_before END,
        updated_at = now()
    WHERE id = :id AND owner_id = :owner_id
      AND state IN {_in(CANCELLABLE)}
    RETURNING {COLS}
), {
    _event_cte(
        f"CASE WHEN state = {_to(Move.CANCEL)} THEN {_lit(P)} ELSE {_lit(R)} END",
        f"CASE WHEN state = {_to(Move.CANCEL)} THEN 'cancelled' ELSE 'cancel-requested' END",
    )
}
SELECT {COLS} FROM moved"""

# Retrying a FAILED job gives it a fresh budget of attempts without reusing attempt numbers:
# resetting the count would hand a zombie worker's fencing token to a new attempt.
SQL_RETRY = f"""
WITH moved AS (
    UPDATE jobs SET state = {_to(Move.RETRY)}, attempt_limit = attempts + max_attempts,
        finished_at = NULL, not_before = NULL, dispatched_at = NULL, cancel_requested = false,
        updated_at = now()
    WHERE id = :id AND owner_id = :owner_id AND state IN {_src(Move.RETRY)}
    RETURNING {COLS}
), old AS (
    DELETE FROM job_results r USING moved WHERE r.job_id = moved.id
    RETURNING r.job_id, r.error_type, r.error_message
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT moved.id, {_lit(JobState.FAILED)}, moved.state, 'retried', moved.attempts,
           jsonb_build_object('previous_error_type', old.error_type,
                              'previous_error_message', old.error_message)
    FROM moved LEFT JOIN old ON old.job_id = moved.id
)
SELECT {COLS} FROM moved"""

# Outbox bookkeeping, not a state change: guarded by state and attempt like every write.
# Marking a publish stamps dispatched_at; releasing a failed one clears it.
def _set_dispatched_sql(value: str) -> str:
    return f"""
UPDATE jobs SET dispatched_at = {value}
FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[])) AS d(id, attempts)
WHERE jobs.id = d.id AND jobs.attempts = d.attempts AND jobs.state = {_lit(P)}
RETURNING jobs.id"""


SQL_MARK_DISPATCHED = _set_dispatched_sql("now()")
SQL_RELEASE_DISPATCH = _set_dispatched_sql("NULL")

# Maintenance statements pick their rows on a partial index, then touch them by primary key
# (`id = ANY(ARRAY(SELECT ...))`): written as a join, the planner may scan the whole table to
# match a few hundred ids, and the cost would follow the table instead of the work.
#
# The sweep's re-dispatch takes its rows by stamping dispatched_at first (SKIP LOCKED), so two
# sweeps at once never publish the same job; a publish that then fails un-stamps its row. One
# statement per partial index: never-published due jobs, and those published long ago.
DISPATCH_DUE = {
    False: ("dispatched_at IS NULL AND COALESCE(not_before, created_at) <= now()",
            "COALESCE(not_before, created_at)"),
    True: ("dispatched_at IS NOT NULL "
           "AND dispatched_at < now() - make_interval(secs => :stale_s)", "dispatched_at"),
}


def _take_dispatch_sql(stale: bool) -> str:
    where, order = DISPATCH_DUE[stale]
    return f"""
WITH picked AS (
    SELECT id FROM jobs WHERE state = {_lit(P)} AND {where}
    ORDER BY {order} LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET dispatched_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state = {_lit(P)}
RETURNING j.id, j.attempts"""


SQL_TAKE_DISPATCH = {stale: _take_dispatch_sql(stale) for stale in (False, True)}

SQL_EXPIRED = f"""
SELECT id, attempts FROM jobs
WHERE state = {_lit(R)} AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT :limit"""

# Expired leases back to PENDING while attempts remain, else FAILED. SKIP LOCKED lets two sweeps
# share the work; the re-checked WHERE lets a worker that completes first win the race.
RESCUE_STATE = (
    f"CASE WHEN j.cancel_requested THEN {_to(Move.CONFIRM_CANCEL)} "
    f"WHEN j.attempts >= j.attempt_limit THEN {_to(Move.FAIL)} ELSE {_to(Move.RESCUE)} END"
)
SQL_RESCUE = f"""
WITH picked AS (
    SELECT id FROM jobs WHERE state IN {_src(Move.RESCUE)} AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT :limit FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs j SET state = {RESCUE_STATE},
        finished_at = CASE WHEN {RESCUE_STATE} IN {TERMINAL} THEN now() END,
        lease_expires_at = NULL, dispatched_at = NULL, not_before = NULL, updated_at = now()
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state IN {_src(Move.RESCUE)}
      AND j.lease_expires_at < now()
    RETURNING {J_COLS}
), {
    _event_cte(
        _lit(R),
        "CASE state WHEN 'PENDING' THEN 'lease-expired-retry' WHEN 'CANCELLED' THEN 'cancelled' "
        "ELSE 'lease-expired' END",
    )
},
res AS (
    INSERT INTO job_results (job_id, status, error_type, error_message)
    SELECT id, 'failed', 'LeaseExpired',
           'the worker lost its lease on the last allowed attempt' FROM moved
    WHERE state = 'FAILED'
)
SELECT id, state, attempts, owner_id FROM moved"""

# RETURNING shows only the new row; the prior state (PENDING or PROCESSING) comes from the
# locked row read in the same statement, so the event records where the job came from.
SQL_DEAD_LETTER = f"""
WITH prior AS (
    SELECT id, state FROM jobs WHERE id = :id FOR UPDATE
), moved AS (
    UPDATE jobs j SET state = {_to(Move.DEAD_LETTER)}, finished_at = now(),
        lease_expires_at = NULL, dispatched_at = NULL, not_before = NULL, updated_at = now()
    FROM prior
    WHERE j.id = prior.id AND j.state IN {_src(Move.DEAD_LETTER)} AND j.attempts <= :attempt
      AND (j.state = {_lit(P)} OR j.lease_expires_at < now())
    RETURNING {J_COLS}, prior.state AS prior_state
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, prior_state, state, 'dead-lettered', attempts, CAST(:details AS jsonb) FROM moved
), res AS (
    INSERT INTO job_results (job_id, status, error_type, error_message)
    SELECT id, 'failed', 'DeadLettered', :error_message FROM moved
)
SELECT {COLS} FROM moved"""

SQL_PURGE = f"""
WITH victims AS (
    SELECT id FROM jobs
    WHERE state IN {TERMINAL} AND finished_at < now() - make_interval(days => :days)
    ORDER BY finished_at LIMIT :batch FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs j WHERE j.id = ANY(ARRAY(SELECT id FROM victims))
RETURNING j.id"""

# The sweep's report. Every count runs on a partial index, so its cost follows the live queue
# (and the last hour's finishes), never the size of the table.
SQL_QUEUE_REPORT = f"""
SELECT
  (SELECT count(*) FROM jobs WHERE state = {_lit(P)} AND dispatched_at IS NULL) AS undispatched,
  (SELECT count(*) FROM jobs WHERE state = {_lit(P)} AND dispatched_at IS NOT NULL)
      AS dispatched,
  (SELECT count(*) FROM jobs WHERE state = {_lit(R)}) AS processing,
  (SELECT count(*) FROM jobs WHERE state = {_lit(R)} AND lease_expires_at < now())
      AS expired_leases,
  LEAST(
    (SELECT min(created_at) FROM jobs WHERE state = {_lit(P)} AND dispatched_at IS NULL),
    (SELECT min(created_at) FROM jobs WHERE state = {_lit(P)} AND dispatched_at IS NOT NULL)
  ) AS oldest_pending,
  (SELECT COALESCE(jsonb_object_agg(state, n), '{{}}'::jsonb) FROM (
     SELECT state, count(*) AS n FROM jobs
     WHERE state IN {TERMINAL} AND finished_at > now() - interval '1 hour' GROUP BY state
   ) f) AS finished_last_hour,
  now() AS now"""

# An owner's own queue, for `GET /stats`: runs on the owner's rows only (owner/state index).
SQL_OWNER_STATS = f"""
SELECT state, count(*) AS n,
       min(created_at) FILTER (WHERE state = {_lit(P)}) AS oldest_pending,
       count(*) FILTER (WHERE finished_at > now() - interval '5 minutes') AS finished_5m,
       now() AS now
FROM jobs WHERE owner_id = :owner_id GROUP BY state"""

SQL_PURGE_POISON = """
WITH victims AS (
    SELECT message_id FROM poison_messages
    WHERE received_at < now() - make_interval(days => :days)
    ORDER BY received_at LIMIT :batch FOR UPDATE SKIP LOCKED
)
DELETE FROM poison_messages p
WHERE p.message_id = ANY(ARRAY(SELECT message_id FROM victims))
RETURNING p.message_id"""

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


# --------------------------------------------------------------------------------------------
# Row mapping and small helpers.
# --------------------------------------------------------------------------------------------


def _job(row: Mapping[str, Any]) -> Job:
    data = dict(row)
    status = data.pop("r_status", None)
    result = None
    if status is not None:
        result = JobResult(
            status=status,
            output=data.pop("r_output"),
            error_type=data.pop("r_error_type"),
            error_message=data.pop("r_error_message"),
            duration_ms=data.pop("r_duration_ms"),
            created_at=data.pop("r_created_at"),
        )
    data.pop("request_hash", None)
    return Job.model_validate({**data, "result": result})


def _as_uuid(job_id: UUID | str) -> UUID:
    if isinstance(job_id, UUID):
        return job_id
    try:
        return UUID(str(job_id))
    except ValueError:
        raise InvalidInput("id", "not a UUID") from None


def _owner(owner_id: str) -> str:
    if not owner_id or len(owner_id) > MAX_OWNER_ID or "\x00" in owner_id:
        raise InvalidInput("owner_id", f"must be 1 to {MAX_OWNER_ID} characters, without NUL")
    return owner_id


def _json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("output", f"not JSON-serialisable: {exc}") from None


def _error_details(error_type: str, message: str) -> tuple[str, str]:
    return error_type[:200].replace("\x00", ""), message[:MAX_ERROR_MESSAGE].replace("\x00", "")


def request_hash(new: NewJob, max_attempts: int) -> str:
    """Fingerprint of a create request, to tell an idempotent replay from a conflicting reuse."""
    canonical = json.dumps(
        [new.preset, new.content, new.metadata, max_attempts],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _is_unavailable(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return True
    return prepared.means_unavailable(prepared.sqlstate(exc.orig))


class Rescued(NamedTuple):
    id: UUID
    state: JobState
    owner_id: str


class JobStore:
    """The job repository. Thread-safe: each call checks one connection out of the pool."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        presets: Collection[str] | None = None,
    ) -> None:
        # The engine must be in autocommit mode (create_engine_from_settings makes it so):
        # every statement here is its own transaction; see the module docstring.
        self._engine = engine
        self._settings = settings
        self._presets = sorted(presets) if presets is not None else None

    # -- plumbing ---------------------------------------------------------------------------

    def _checkout(self) -> Connection:
        """A pooled connection. A dead one found by pre-ping is discarded by the pool, but
        pg8000 can report it as a bare OSError that escapes SQLAlchemy's ping handling: so one
        more checkout is tried before the database is called unavailable."""
        for last in (False, True):
            try:
                return self._engine.connect()
            except sa_exc.DBAPIError as exc:
                if not _is_unavailable(exc):
                    raise
                if last:
                    raise DatabaseUnavailable(type(exc.orig).__name__) from exc
            except OSError as exc:
                if last:
                    raise DatabaseUnavailable(type(exc).__name__) from exc
            except sa_exc.TimeoutError as exc:  # the pool had no connection to give in time
                raise DatabaseUnavailable("pool timeout") from exc
        raise AssertionError("unreachable")

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self._checkout() as conn:
            return prepared.run(conn, sql, params)

    def _one_job(self, sql: str, **params: Any) -> Job | None:
        rows = self._rows(sql, **params)
        return _job(rows[0]) if rows else None

    def _explain_refusal(self, job_id: UUID, move: Move, held: int | None) -> JobStoreErrorT:
        """After a guarded write matched nothing: say why, without having written anything."""
        rows = self._rows(SQL_PEEK, id=job_id)
        if not rows:
            return JobNotFound(job_id)
        state, attempts = JobState(rows[0]["state"]), int(rows[0]["attempts"])
        if held is not None and attempts != held:
            return StaleAttempt(job_id, move.value, state.value, held, attempts)
        return IllegalTransition(job_id, move.value, state.value)

    def ping(self) -> None:
        """A round trip to the database, for health checks."""
        self._rows(SQL_PING)

    # -- callers' operations (scoped by owner) ------------------------------------------------

    def create(self, owner_id: str, new: NewJob) -> tuple[Job, bool]:
        """Create a job; returns (job, created). A replay of the same keyed request returns the
        existing job with created=False; the same key with a different request raises."""
        owner = _owner(owner_id)
        self._check_new_job(new)
        max_attempts = new.max_attempts or self._settings.default_max_attempts
        digest = request_hash(new, max_attempts) if new.idempotency_key else None
        params = {
            "owner_id": owner,
            "preset": new.preset,
            "content": new.content,
            "metadata": _json(new.metadata),
            "max_attempts": max_attempts,
            "idempotency_key": new.idempotency_key,
            "request_hash": digest,
        }
        # Two tries: the conflicting row may be deleted by retention between the two statements.
        for _ in range(2):
            created = self._one_job(SQL_CREATE, **params)
            if created is not None:
                return created, True
            rows = self._rows(SQL_BY_KEY, owner_id=owner, idempotency_key=new.idempotency_key)
            if rows:
                if rows[0]["request_hash"] != digest:
                    raise IdempotencyConflict(rows[0]["id"])
                return _job(rows[0]), False
        raise DatabaseUnavailable("idempotency race did not settle")

    def get(self, owner_id: str, job_id: UUID | str) -> Job:
        job = self._one_job(SQL_GET, id=_as_uuid(job_id), owner_id=_owner(owner_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list_jobs(
        self,
        owner_id: str,
        *,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        params: dict[str, Any] = {"owner_id": _owner(owner_id)}
        if not 1 <= limit <= self._settings.max_page_size:
            raise InvalidInput("limit", f"must be between 1 and {self._settings.max_page_size}")
        if state is not None:
            try:
                params["state"] = JobState(state).value
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise InvalidInput("state", f"must be one of {names}") from None
        if cursor:
            params["c_created"], params["c_id"] = decode_cursor(cursor)
        params["limit"] = limit + 1
        rows = self._rows(SQL_LIST[(state is not None, bool(cursor))], **params)
        jobs = [_job(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def events(self, owner_id: str, job_id: UUID | str) -> list[JobEvent]:
        rows = self._rows(SQL_EVENTS, id=_as_uuid(job_id), owner_id=_owner(owner_id))
        if not rows:  # every job has at least its 'created' event
            raise JobNotFound(job_id)
        return [JobEvent.model_validate(r) for r in rows]

    def cancel(self, owner_id: str, job_id: UUID | str) -> Job:
        """PENDING → CANCELLED at once; PROCESSING → cancel requested; terminal → refused."""
        uid = _as_uuid(job_id)
        job = self._one_job(SQL_CANCEL, id=uid, owner_id=_owner(owner_id))
        if job is None:
            self.get(owner_id, uid)  # raises JobNotFound for a missing or foreign job
            raise self._explain_refusal(uid, Move.CANCEL, None)
        return job

    def retry(self, owner_id: str, job_id: UUID | str) -> Job:
        """FAILED → PENDING with a fresh budget of attempts; the caller then dispatches it."""
        uid = _as_uuid(job_id)
        job = self._one_job(SQL_RETRY, id=uid, owner_id=_owner(owner_id))
        if job is None:
            self.get(owner_id, uid)
            raise self._explain_refusal(uid, Move.RETRY, None)
        return job

    # -- the worker's operations (fenced by attempt) -----------------------------------------

    def get_for_worker(self, job_id: UUID | str) -> Job | None:
        return self._one_job(SQL_GET_ANY_OWNER, id=_as_uuid(job_id))

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
        uid = _as_uuid(job_id)
        params: dict[str, Any] = {"id": uid, "lease_s": lease_s or self._settings.lease_seconds}
        if expected_attempts is not None:
            params["expected_attempts"] = expected_attempts
        job = self._one_job(SQL_CLAIM[expected_attempts is not None], **params)
        if job is not None:
            return ClaimOutcome(job=job, reason="claimed")
        rows = self._rows(SQL_PEEK, id=uid)
        if not rows:
            return ClaimOutcome(job=None, reason="not-found")
        peek = rows[0]
        if JobState(peek["state"]).terminal:
            return ClaimOutcome(job=None, reason="terminal")
        if peek["state"] == JobState.PROCESSING:
            return ClaimOutcome(job=None, reason="in-progress")
        if expected_attempts is not None and peek["attempts"] != expected_attempts:
            return ClaimOutcome(job=None, reason="stale-message")
        return ClaimOutcome(job=None, reason="not-due")

    def extend_lease(self, job_id: UUID, attempt: int, *, lease_s: float | None = None) -> bool:
        """Heartbeat for a long handler. Returns whether a cancel was requested meanwhile."""
        rows = self._rows(
            SQL_EXTEND_LEASE,
            id=job_id,
            attempt=attempt,
            lease_s=lease_s or self._settings.lease_seconds,
        )
        if not rows:
            raise self._explain_refusal(job_id, Move.CLAIM, attempt)
        return bool(rows[0]["cancel_requested"])

    def _exit(self, move: Move, job_id: UUID, attempt: int, **params: Any) -> JobMove:
        values: dict[str, Any] = {
            "id": job_id,
            "attempt": attempt,
            "delay_s": 0.0,
            "output": None,
            "error_type": None,
            "error_message": None,
            "duration_ms": None,
            "permanent": move is Move.FAIL,
            "details": "{}",
        }
        values.update(params)
        rows = self._rows(SQL_EXIT[move], **values)
        if not rows:
            raise self._explain_refusal(job_id, move, attempt)
        return JobMove.model_validate(rows[0])

    def complete(
        self, job_id: UUID, attempt: int, output: Any, *, duration_ms: int | None = None
    ) -> JobMove:
        """PROCESSING → COMPLETED with its one result row (CANCELLED if a cancel was asked)."""
        return self._exit(
            Move.COMPLETE, job_id, attempt, output=_json(output), duration_ms=duration_ms
        )

    def fail(
        self,
        job_id: UUID,
        attempt: int,
        error_type: str,
        error_message: str,
        *,
        duration_ms: int | None = None,
    ) -> JobMove:
        """A permanent failure: PROCESSING → FAILED at once, the error kept as the result."""
        etype, emsg = _error_details(error_type, error_message)
        return self._exit(
            Move.FAIL,
            job_id,
            attempt,
            error_type=etype,
            error_message=emsg,
            duration_ms=duration_ms,
            details=_json({"error_type": etype, "error_message": emsg}),
        )

    def retry_later(
        self,
        job_id: UUID,
        attempt: int,
        error_type: str,
        error_message: str,
        *,
        delay: timedelta,
        duration_ms: int | None = None,
    ) -> JobMove:
        """A transient failure: back to PENDING, due after `delay`, while attempts remain; FAILED
        ('attempts-exhausted') on the last one. The sweep re-dispatches it when due."""
        etype, emsg = _error_details(error_type, error_message)
        delay_s = max(delay.total_seconds(), 0.0)
        return self._exit(
            Move.RETRY_LATER,
            job_id,
            attempt,
            error_type=etype,
            error_message=emsg,
            delay_s=delay_s,
            duration_ms=duration_ms,
            details=_json({"error_type": etype, "error_message": emsg, "delay_s": delay_s}),
        )

    def confirm_cancel(self, job_id: UUID, attempt: int) -> JobMove:
        """The worker saw the cancel flag and stopped: PROCESSING → CANCELLED."""
        return self._exit(Move.CONFIRM_CANCEL, job_id, attempt)

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
        return [DispatchItem(id=r["id"], attempts=r["attempts"]) for r in rows]

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
        return [Rescued(r["id"], JobState(r["state"]), r["owner_id"]) for r in rows]

    def dead_letter(self, job_id: UUID | str, attempt: int, *, message_id: str = "") -> Job | None:
        """A message that Pub/Sub gave up on: its job ends FAILED ('dead-lettered'), unless it is
        terminal, running under a live lease, or already past `attempt` (the message is older
        than the job's current attempt). Returns the job if it was moved."""
        return self._one_job(
            SQL_DEAD_LETTER,
            id=_as_uuid(job_id),
            attempt=attempt,
            details=_json({"message_id": message_id}),
            error_message="Pub/Sub could not deliver the job's message; retry the job to run it",
        )

    def purge_terminal(self, older_than_days: int, *, batch_size: int, max_batches: int) -> int:
        """Delete terminal jobs older than the retention period (events and results cascade),
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

    def queue_report(self) -> dict[str, Any]:
        """Queue depth by state, the age of the oldest PENDING job, the last hour's finishes."""
        row = self._rows(SQL_QUEUE_REPORT)[0]
        oldest = row["oldest_pending"]
        return {
            "depth": {
                "PENDING": row["undispatched"] + row["dispatched"],
                "PROCESSING": row["processing"],
            },
            "pending_undispatched": row["undispatched"],
            "expired_leases": row["expired_leases"],
            "oldest_pending_age_s": (
                round((row["now"] - oldest).total_seconds(), 3) if oldest else None
            ),
            "finished_last_hour": dict(row["finished_last_hour"]),
        }

    def owner_stats(self, owner_id: str) -> dict[str, Any]:
        """The owner's jobs by state, the age of their oldest PENDING one, and how many of theirs
        finished in the last five minutes."""
        rows = self._rows(SQL_OWNER_STATS, owner_id=_owner(owner_id))
        depth = {state.value: 0 for state in JobState}
        oldest, finished, now = None, 0, None
        for row in rows:
            depth[row["state"]] = int(row["n"])
            finished += int(row["finished_5m"])
            oldest = row["oldest_pending"] or oldest
            now = row["now"]
        return {
            "depth": depth,
            "oldest_pending_age_s": (
                round((now - oldest).total_seconds(), 3) if oldest and now else None
            ),
            "finished_last_5_min": finished,
        }

    def purge_poison(self, older_than_days: int, *, batch_size: int) -> int:
        """Delete one batch of recorded poison messages older than the retention period."""
        return len(self._rows(SQL_PURGE_POISON, days=older_than_days, batch=batch_size))

    # -- worker records ----------------------------------------------------------------------

    def record_poison(self, message_id: str, reason: str, excerpt: str) -> bool:
        """Keep an undecodable message that is being acknowledged. False if this message id
        was recorded before (a redelivery)."""
        rows = self._rows(
            SQL_POISON,
            message_id=message_id[:MAX_OWNER_ID],
            reason=reason[:MAX_ERROR_MESSAGE],
            excerpt=excerpt.replace("\x00", "\ufffd"),
        )
        return bool(rows)

    def record_chaos_run(self, job_id: str, attempt: int, outcome: str) -> None:
        self._rows(SQL_CHAOS_RUN, job_id=_as_uuid(job_id), attempt=attempt, outcome=outcome)

    def chaos_runs(self, job_ids: Iterable[UUID | str]) -> list[tuple[UUID, int, str]]:
        """The chaos preset's run log for these jobs, oldest first: (job_id, attempt, outcome)."""
        rows = self._rows(SQL_CHAOS_RUNS, ids=[str(_as_uuid(j)) for j in job_ids])
        return [(r["job_id"], r["attempt"], r["outcome"]) for r in rows]

    # -- validation ------------------------------------------------------------------------

    def _check_new_job(self, new: NewJob) -> None:
        if self._presets is not None and new.preset not in self._presets:
            raise UnknownPreset(new.preset, self._presets)
        if len(new.content.encode()) > self._settings.max_content_bytes:
            raise InvalidInput(
                "content", f"larger than {self._settings.max_content_bytes} bytes (UTF-8)"
            )
        if len(_json(new.metadata).encode()) > self._settings.max_metadata_bytes:
            raise InvalidInput(
                "metadata", f"larger than {self._settings.max_metadata_bytes} bytes as JSON"
            )


JobStoreErrorT = JobNotFound | IllegalTransition
