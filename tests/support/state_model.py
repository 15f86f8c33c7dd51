"""What tests/test_state_properties.py expects of the database: a model of each job, and the
invariants every state of the tables must satisfy, whatever sequence of moves led there.

The allowed moves and the result each terminal state carries are derived from
`common/store/states.py` and from what the store writes, never listed by hand, so that a move
added to the table (as the dead-letter rework of issue #12 adds one) needs no edit here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, text

from common.store.states import TRANSITIONS, JobState

# Every (from_state, to_state) an event may record: the table's sources times target of each move,
# and (None, target) for a move without sources (creation).
ALLOWED_PAIRS: frozenset[tuple[JobState | None, JobState]] = frozenset(
    (source, t.target)
    for t in TRANSITIONS.values()
    for source in (t.sources or frozenset({None}))
)

# What the store writes to job_results for each state: one row for COMPLETED ('succeeded') and
# FAILED ('failed'); none for CANCELLED (no handler outcome to keep) nor for a live job.
RESULT_STATUS: dict[JobState, str | None] = {
    JobState.COMPLETED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: None,
    JobState.PENDING: None,
    JobState.PROCESSING: None,
}

# A result whose error type the test does not predict (a dead letter's: being redesigned).
ANY_ERROR = "<any>"


@dataclass
class Expected:
    """The model of one job: what the next read of its row must show."""

    owner: str
    max_attempts: int
    state: JobState = JobState.PENDING
    attempts: int = 0
    attempt_limit: int = 0
    lease_graces: int = 0  # extra attempts a lost lease on the last attempt gave (at most 1)
    cancel_requested: bool = False
    due: bool = True  # PENDING only: not_before absent or past
    lease_live: bool = False  # PROCESSING only
    result: tuple[str, str | None, Any] | None = None  # (status, error_type, output)
    # Long jobs (issue 29): the execution named for an attempt, (attempt, name).
    execution: tuple[int, str] | None = None


def choose(pools: list[list[Any]], n: int) -> Any:
    """Pool n modulo len(pools) (or the next non-empty one), then an item of it by n."""
    k = n % len(pools)
    pool = next(p for p in pools[k:] + pools[:k] if p)
    return pool[(n // len(pools)) % len(pool)]


def lapsable(e: Expected) -> bool:
    return e.state is JobState.PROCESSING and e.lease_live


def lapsed(e: Expected) -> bool:
    return e.state is JobState.PROCESSING and not e.lease_live


def waiting(e: Expected) -> bool:
    return e.state is JobState.PENDING and not e.due


@dataclass
class Row:
    state: JobState
    owner: str
    attempts: int
    attempt_limit: int
    cancel_requested: bool
    has_lease: bool
    lease_live: bool
    finished: bool
    not_due: bool


@dataclass
class Tables:
    jobs: dict[UUID, Row] = field(default_factory=dict)
    events: dict[UUID, list[tuple[JobState | None, JobState, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    results: dict[UUID, list[tuple[str, str | None, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )


SQL_TABLES = """
SELECT
  (SELECT COALESCE(jsonb_agg(jsonb_build_object(
      'id', id, 'state', state, 'owner', owner_id, 'attempts', attempts,
      'attempt_limit', attempt_limit, 'cancel_requested', cancel_requested,
      'has_lease', lease_expires_at IS NOT NULL,
      'lease_live', COALESCE(lease_expires_at > now(), false),
      'finished', finished_at IS NOT NULL, 'not_due', COALESCE(not_before > now(), false))),
      '[]') FROM jobs),
  (SELECT COALESCE(jsonb_agg(jsonb_build_array(job_id, from_state, to_state, attempt)
                             ORDER BY attempt, reason <> 'claimed', id), '[]') FROM job_trail),
  (SELECT COALESCE(jsonb_agg(jsonb_build_array(job_id, status, error_type, output)), '[]')
   FROM job_results)"""


def read_tables(engine: Engine) -> Tables:
    """The three tables as they are now, in one statement (one snapshot, one round trip); the
    test's database holds only this example's jobs. The trail in the order it happened, as the
    API lists it (common/store/callers.py): since migration 0023 a 'claimed' event shares its
    id with the event that ended its attempt, so the id alone does not order them."""
    with engine.connect() as conn:
        jobs, events, results = conn.execute(text(SQL_TABLES)).one()
    tables = Tables()
    for j in jobs:
        tables.jobs[UUID(j["id"])] = Row(
            JobState(j["state"]), j["owner"], j["attempts"], j["attempt_limit"],
            j["cancel_requested"], j["has_lease"], j["lease_live"], j["finished"], j["not_due"])
    for job_id, source, dest, attempt in events:
        tables.events[UUID(job_id)].append(
            (JobState(source) if source is not None else None, JobState(dest), attempt))
    for job_id, status, error_type, output in results:
        tables.results[UUID(job_id)].append((status, error_type, output))
    return tables


SQL_SNAPSHOT = """
SELECT (SELECT to_jsonb(j) FROM jobs j WHERE id = :id),
       (SELECT COALESCE(jsonb_agg(to_jsonb(e) ORDER BY e.attempt, e.reason <> 'claimed', e.id),
                        '[]') FROM job_trail e
        WHERE job_id = :id),
       (SELECT to_jsonb(r) FROM job_results r WHERE job_id = :id)"""


def snapshot(engine: Engine, job_id: UUID) -> tuple[Any, ...]:
    """Everything stored about one job, to show that a refused move changed nothing."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(SQL_SNAPSHOT), {"id": job_id}).one())


@dataclass
class Seen:
    """What earlier reads showed, for the properties that compare with the past."""

    attempts: dict[UUID, int] = field(default_factory=dict)
    events: dict[UUID, int] = field(default_factory=dict)


def check(tables: Tables, model: dict[UUID, Expected], seen: Seen) -> None:
    """Every invariant, on every job. Raises AssertionError naming the job and the property."""
    assert set(tables.jobs) == set(model), "jobs lost or appeared"
    assert set(tables.events) <= set(tables.jobs), "events of a deleted job"
    assert set(tables.results) <= set(tables.jobs), "results of a deleted job"
    for job_id, row in tables.jobs.items():
        exp, trail, results = model[job_id], tables.events[job_id], tables.results[job_id]
        where = f"job {job_id}: {row} vs model {exp}; events {trail}; results {results}"
        # Exactly one state: the model's, and the one its audit trail ends in.
        assert row.state is exp.state, where
        assert trail and trail[-1][1] is row.state, where
        # The trail is a gap-free chain of allowed moves whose attempts never go down.
        previous: JobState | None = None
        last_attempt = 0
        for source, dest, attempt in trail:
            assert (source, dest) in ALLOWED_PAIRS, f"move {source}->{dest} not in table; {where}"
            assert source is previous, where
            assert attempt >= last_attempt, where
            previous, last_attempt = dest, attempt
        assert len(trail) >= seen.events.get(job_id, 0), "events disappeared; " + where
        # Attempts never decrease, never pass the ceiling, and are what the model says.
        assert row.attempts >= seen.attempts.get(job_id, 0), where
        assert row.attempts <= row.attempt_limit, where
        assert (row.attempts, row.attempt_limit) == (exp.attempts, exp.attempt_limit), where
        # A lease exactly while PROCESSING; live unless the test let it lapse.
        assert row.has_lease == (row.state is JobState.PROCESSING), where
        if row.state is JobState.PROCESSING:
            assert row.lease_live == exp.lease_live, where
        if row.state is JobState.PENDING:
            assert row.not_due == (not exp.due), where
        assert row.cancel_requested == exp.cancel_requested, where
        # Terminal: finished, with the one result row its state carries.
        assert row.finished == row.state.terminal, where
        status = RESULT_STATUS[row.state]
        assert [r[0] for r in results] == ([status] if status else []), where
        if results and exp.result is not None and exp.result[1] != ANY_ERROR:
            assert results[0] == exp.result, where
        seen.attempts[job_id] = row.attempts
        seen.events[job_id] = len(trail)
