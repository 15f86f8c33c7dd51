"""SQL fragments and row mapping shared by the store's query sets.

State names are inlined as literals (they come from the JobState enum, never from input) so
the planner can match the partial indexes' predicates; every value is a bind parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from common.store.errors import InvalidInput
from common.store.models import Job, JobResult, NewJob
from common.store.states import TERMINAL_STATES, TRANSITIONS, JobState, Move

# Error messages are stored for people to read; a handler's huge exception text is cut here.
MAX_ERROR_MESSAGE = 2000
MAX_OWNER_ID = 255



def lit(state: JobState) -> str:
    return f"'{JobState(state).value}'"


def in_list(states: Iterable[JobState]) -> str:
    return "(" + ",".join(lit(s) for s in sorted(states)) + ")"


def sources(move: Move) -> str:
    return in_list(TRANSITIONS[move].sources)


def target(move: Move) -> str:
    return lit(TRANSITIONS[move].target)


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
TERMINAL = in_list(TERMINAL_STATES)
P, R = JobState.PENDING, JobState.PROCESSING


def event_cte(from_state: str, reason: str, details: str = "'{}'::jsonb") -> str:
    return (
        "ev AS (INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details) "
        f"SELECT id, {from_state}, state, {reason}, attempts, {details} FROM moved)"
    )


# --------------------------------------------------------------------------------------------
# Row mapping and small helpers.
# --------------------------------------------------------------------------------------------


def job_from_row(row: Mapping[str, Any]) -> Job:
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


def as_uuid(job_id: UUID | str) -> UUID:
    if isinstance(job_id, UUID):
        return job_id
    try:
        return UUID(str(job_id))
    except ValueError:
        raise InvalidInput("id", "not a UUID") from None


def checked_owner(owner_id: str) -> str:
    if not owner_id or len(owner_id) > MAX_OWNER_ID or "\x00" in owner_id:
        raise InvalidInput("owner_id", f"must be 1 to {MAX_OWNER_ID} characters, without NUL")
    return owner_id


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("output", f"not JSON-serialisable: {exc}") from None


def storable_error(error_type: str, message: str) -> tuple[str, str]:
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


