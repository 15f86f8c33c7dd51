"""The worker's exits as SQL: one job's (`SQL_EXIT`), or a batch of them in one statement
(`SQL_EXIT_MANY`, issue 30), written from one template so the two can never disagree.

A state change and its `job_events` row are written by one statement (a data-modifying CTE), so
they commit together or not at all; a COMPLETED or FAILED job's result is part of the row
version that statement writes. Each row is guarded by its state and by the attempt its worker
holds (the fencing token): a batch is many guarded writes sharing one round trip and one commit,
never a looser guard. The event carries the attempt's claim time (migration 0023).
"""

from __future__ import annotations

from collections.abc import Callable

from common.store.fragments import MOVE_COLS, TERMINAL, P, R, event_cte, lit, sources, target
from common.store.states import Move

# A value of the exit: a bind parameter for one job, a column of the batch's `req` for many.
Value = Callable[[str, str], str]


def one(name: str, sqltype: str) -> str:
    return f"CAST(:{name} AS {sqltype})"


def per_row(name: str, sqltype: str) -> str:
    return f"CAST(r_{name} AS {sqltype})"


def progress_set(value: Value = one) -> str:
    """The handler's latest progress rides on the heartbeat and on the exit, never in a write of
    its own: a NULL progress leaves what is stored as it is."""
    fraction, note = value("progress", "real"), value("progress_note", "text")
    return (
        f"progress = COALESCE({fraction}, progress), "
        f"progress_note = CASE WHEN {fraction} IS NULL THEN progress_note ELSE {note} END, "
        f"progress_at = CASE WHEN {fraction} IS NULL THEN progress_at ELSE now() END, "
        f"progress_attempt = CASE WHEN {fraction} IS NULL THEN progress_attempt ELSE attempts END"
    )


# A cancel requested while the job ran wins over every outcome, so each exit computes its target
# in SQL from the row it guards, within the same statement.
CANCELLED_IF_ASKED = f"WHEN cancel_requested THEN {target(Move.CONFIRM_CANCEL)}"
EXIT_STATE = {
    Move.COMPLETE: f"CASE {CANCELLED_IF_ASKED} ELSE {target(Move.COMPLETE)} END",
    Move.FAIL: f"CASE {CANCELLED_IF_ASKED} ELSE {target(Move.FAIL)} END",
    Move.RETRY_LATER: (
        f"CASE {CANCELLED_IF_ASKED} WHEN attempts >= attempt_limit THEN {target(Move.FAIL)} "
        f"ELSE {target(Move.RETRY_LATER)} END"
    ),
    Move.CONFIRM_CANCEL: target(Move.CONFIRM_CANCEL),
}
EXIT_SOURCES = sources(Move.COMPLETE)
assert all(sources(move) == EXIT_SOURCES for move in EXIT_STATE), "a batch guards one way"


def _exit_reason(value: Value) -> str:
    return (
        "CASE state WHEN 'COMPLETED' THEN 'completed' WHEN 'CANCELLED' THEN 'cancelled' "
        "WHEN 'PENDING' THEN 'retry-scheduled' "
        f"ELSE CASE WHEN {value('permanent', 'boolean')} THEN 'failed' "
        "ELSE 'attempts-exhausted' END END"
    )


# For a workflow's step only (a plain job reads nothing more): whether it has children, whose
# moves its end made (so the worker takes and publishes those it made due), and whether its
# workflow has a webhook (so the worker delivers it at once, should this end be the last).
WORKFLOW_AFTER = """
    workflow_id IS NOT NULL AND EXISTS (SELECT 1 FROM job_deps d WHERE d.parent_id = moved.id)
        AS has_children,
    workflow_id IS NOT NULL AND EXISTS (SELECT 1 FROM workflows w WHERE w.id = moved.workflow_id
                                        AND w.callback_url IS NOT NULL) AS workflow_hook"""


def _exit_sql(new_state: str, value: Value, batch: str, guard: str, carried: str) -> str:
    return f"""
{batch}moved AS (
    UPDATE jobs SET state = {new_state},
        lease_expires_at = NULL, updated_at = now(),
        finished_at = CASE WHEN {new_state} IN {TERMINAL} THEN now() END,
        not_before = CASE WHEN {new_state} = {lit(P)}
                          THEN now() + make_interval(secs => {value("delay_s", "float8")}) END,
        dispatched_at = NULL, {progress_set(value)},
        result_output = CASE WHEN {new_state} = 'COMPLETED' THEN {value("output", "jsonb")} END,
        result_error_type = CASE WHEN {new_state} = 'FAILED'
                                 THEN {value("error_type", "text")} END,
        result_error_message = CASE WHEN {new_state} = 'FAILED'
                                    THEN {value("error_message", "text")} END,
        result_duration_ms = CASE WHEN {new_state} IN ('COMPLETED', 'FAILED')
                                  THEN {value("duration_ms", "integer")} END
    {guard}
    RETURNING {MOVE_COLS}, workflow_id, started_at, claim_id{carried}
), {event_cte(lit(R), _exit_reason(value), value("details", "jsonb"), ends_attempt=True)}
SELECT {MOVE_COLS}, {WORKFLOW_AFTER} FROM moved"""


SQL_EXIT = {
    move: _exit_sql(state, one, "WITH ",
                    f"WHERE id = :id AND state IN {sources(move)} AND attempts = :attempt", "")
    for move, state in EXIT_STATE.items()
}

# The batch: one row of `req` per exit, each with its own move, values and attempt, sent as one
# JSON array (an array parameter per column would read an unquoted text element `null` as
# NULL). Jobs are touched by primary key, in id order. Only exits that lock nothing but their
# own job row are batched (common/worker/runner.py): the rows a batch shares with any other
# statement are then none, so no order of theirs can deadlock.
EXIT_COLUMNS = {
    "id": "uuid", "attempt": "integer", "move": "text", "delay_s": "float8", "output": "text",
    "error_type": "text", "error_message": "text", "duration_ms": "integer",
    "progress": "real", "progress_note": "text", "permanent": "boolean", "details": "text",
}
_RECORD = ", ".join(f"r_{name} {sqltype}" for name, sqltype in EXIT_COLUMNS.items())
_MANY_STATE = ("CASE r_move " + " ".join(
    f"WHEN '{move.value}' THEN {state}" for move, state in EXIT_STATE.items()) + " END")
SQL_EXIT_MANY = _exit_sql(
    _MANY_STATE, per_row,
    f"WITH req AS (SELECT * FROM jsonb_to_recordset(CAST(:exits AS jsonb)) AS r({_RECORD})\n"
    "    ORDER BY r_id),\n",
    f"FROM req WHERE id = r_id AND state IN {EXIT_SOURCES} AND attempts = r_attempt",
    ", r_permanent, r_details",
)
