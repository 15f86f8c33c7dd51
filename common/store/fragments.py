"""SQL fragments and row mapping shared by the store's query sets.

State names are inlined as literals (they come from the JobState enum, never from input) so
the planner can match the partial indexes' predicates; every value is a bind parameter.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from common.store.errors import InvalidInput
from common.store.models import Job, JobResult, NewJob
from common.store.states import TERMINAL_STATES, TRANSITIONS, JobState, Move

# Error messages are stored for people to read; a handler's huge exception text is cut here.
MAX_ERROR_MESSAGE = 2000
MAX_ERROR_TYPE = 200
# An owner is "<namespace>:<subject>" (common/api/auth.py): a 255-character subject plus room
# for its namespace.
MAX_OWNER_ID = 320
# The largest value of PostgreSQL's `integer`, the type of every attempt column.
INT4_MAX = 2_147_483_647
# Attempt numbers only grow (they are the fencing token) and each retry raises the ceiling, so
# the total is bounded here, far inside the int column: a retry that would pass it is refused.
MAX_TOTAL_ATTEMPTS = 10_000

# UTF-16 surrogates cannot be encoded as UTF-8, so PostgreSQL can never store them.
_SURROGATES = re.compile("[\ud800-\udfff]")
# A dict key shown in an error path: only a plain identifier, never arbitrary content.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,39}$")


def lit(state: JobState) -> str:
    return f"'{JobState(state).value}'"


def in_list(states: Iterable[JobState]) -> str:
    return "(" + ",".join(lit(s) for s in sorted(states)) + ")"


def sources(move: Move) -> str:
    return in_list(TRANSITIONS[move].sources)


def target(move: Move) -> str:
    return lit(TRANSITIONS[move].target)


_BASE_COLS = (
    "id, owner_id, preset, content, metadata, state, attempts, max_attempts, attempt_limit, "
    "idempotency_key, cancel_requested, lease_expires_at, dispatched_at, not_before, "
    "created_at, updated_at, started_at, finished_at, "
    "progress, progress_note, progress_at, progress_attempt, callback_url, "
    "priority, limit_key, wait_reason, workflow_id, step"
)


def trace_of(row: str = "") -> str:
    """The job's W3C traceparent as text: kept as bytes in `trace` since migration 0012, in
    the old text column on rows written before it."""
    return f"COALESCE(traceparent_text({row}trace), {row}traceparent) AS traceparent"


# A job's columns as the store reads them: COLS from `jobs` (or in an UPDATE's RETURNING),
# J_COLS from `jobs j`, OUT_COLS from a CTE that returned COLS.
COLS = f"{_BASE_COLS}, {trace_of()}"
OUT_COLS = f"{_BASE_COLS}, traceparent"
MOVE_COLS = "id, state, attempts, not_before, finished_at"
J_COLS = ", ".join("j." + c.strip() for c in _BASE_COLS.split(",")) + ", " + trace_of("j.")
# A job's result is part of its row (migration 0012): its status is the state, its time the
# finish; the columns are NULL on every other state.
RESULT_COLS = (
    "CASE j.state WHEN 'COMPLETED' THEN 'succeeded' WHEN 'FAILED' THEN 'failed' END AS r_status, "
    "j.result_output AS r_output, j.result_error_type AS r_error_type, "
    "j.result_error_message AS r_error_message, j.result_duration_ms AS r_duration_ms, "
    "j.finished_at AS r_created_at"
)
TERMINAL = in_list(TERMINAL_STATES)
P, R = JobState.PENDING, JobState.PROCESSING
# A claim takes the id its event would have had (migration 0023): from the events' sequence.
CLAIM_ID = "nextval('job_events_id_seq')"


def event_cte(from_state: str, reason: str, details: str = "'{}'::jsonb", *,
              ends_attempt: bool = False) -> str:
    """The moved rows' event. One that ends an attempt carries the attempt's claim (the row's
    `started_at` and `claim_id`, which `moved` must return): the claim writes no event of its
    own, and the view `job_trail` shows it from this one (migration 0023)."""
    claimed = (", claimed_at, claim_id", ", started_at, claim_id") if ends_attempt else ("", "")
    return (
        "ev AS (INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details"
        f"{claimed[0]}) SELECT id, {from_state}, state, {reason}, attempts, {details}{claimed[1]} "
        "FROM moved)"
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
    if (
        not owner_id
        or len(owner_id) > MAX_OWNER_ID
        or "\x00" in owner_id
        or has_surrogate(owner_id)
    ):
        raise InvalidInput(
            "owner_id", f"must be 1 to {MAX_OWNER_ID} characters, without NUL or surrogates"
        )
    return owner_id


def has_surrogate(text: str) -> bool:
    return _SURROGATES.search(text) is not None


def storable_text(text: str, limit: int) -> str:
    """Text PostgreSQL will take: NUL dropped, lone surrogates made U+FFFD, at most `limit`
    characters. For text that is only shown to people (error messages), never for content."""
    return _SURROGATES.sub("\ufffd", text[: limit * 2].replace("\x00", ""))[:limit]


def unstorable(value: Any, root: str = "$") -> str | None:
    """Why `value` cannot be stored as jsonb (the path and what is wrong), or None if it can.
    The reason names positions and plain keys only, never the content itself: it is logged and
    kept as an error message."""
    stack: list[tuple[Any, str]] = [(value, root)]
    seen: set[int] = set()  # containers already walked: a shared or self-containing one once
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if "\x00" in item:
                return f"at {path}: a string contains NUL (U+0000)"
            if has_surrogate(item):
                return f"at {path}: a string contains a lone surrogate"
        elif isinstance(item, int):
            if item.bit_length() > 14_000:  # json's own limit is 4,300 digits
                return f"at {path}: an integer too large for JSON"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"at {path}: a number that is not finite (NaN or infinity)"
        elif isinstance(item, dict):
            for index, (key, child) in enumerate(item.items()):
                if not isinstance(key, str):
                    if key is not None and not isinstance(key, int | float):  # json's own rule
                        return f"at {path}: a key of type {type(key).__name__}, not a string"
                    key = ""
                shown = f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}{{key #{index}}}"
                if "\x00" in key:
                    return f"at {shown}: a key contains NUL (U+0000)"
                if has_surrogate(key):
                    return f"at {shown}: a key contains a lone surrogate"
                stack.append((child, shown))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
        else:
            return f"at {path}: a value of type {type(item).__name__}, which is not JSON"
    return None


def to_json(value: Any, field: str = "output") -> str:
    """`value` as JSON text that jsonb accepts, else InvalidInput naming the path and the fault.
    Serialised first (at C speed); only a suspect result is walked, to find the reason."""
    try:
        text: str | None = json.dumps(
            value, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError, RecursionError):  # NaN, a set, a list that contains itself
        text = None
    if text is not None and "\\u0000" not in text and not has_surrogate(text):
        return text
    reason = unstorable(value)
    if reason is None and text is not None:  # only an escaped backslash before "u0000"
        return text
    raise InvalidInput(
        field, reason or "not JSON-serialisable (nested too deeply, or contains itself)"
    )


def storable_error(error_type: str, message: str) -> tuple[str, str]:
    """A handler's error type and message as they can be stored and shown: NUL removed, lone
    surrogates replaced, length bounded. The type is never empty (the results row needs one)."""
    etype = storable_text(str(error_type), MAX_ERROR_TYPE) or "Error"
    return etype, storable_text(str(message), MAX_ERROR_MESSAGE)


def request_hash(new: NewJob, max_attempts: int) -> str:
    """Fingerprint of a create request, to tell an idempotent replay from a conflicting reuse.
    A callback URL and a run-later time join it only when given, so requests keyed before they
    existed still match."""
    fields: list[Any] = [new.preset, new.content, new.metadata, max_attempts]
    if new.callback_url is not None:
        fields.append(new.callback_url)
    if new.run_at is not None or new.delay_s is not None:
        fields += [new.run_at, new.delay_s]
    if new.priority is not None or new.limit_key is not None:
        fields += [new.priority, new.limit_key]
    canonical = json.dumps(
        fields,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


