"""The table of allowed moves, and every illegal move refused by the store with nothing written."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.store.errors import IllegalTransition
from common.store.job_store import JobStore
from common.store.models import Job
from common.store.states import TERMINAL_STATES, TRANSITIONS, JobState, Move, allowed
from tests.jobs_helpers import job_in_state, snapshot


def test_table_covers_every_move_and_terminal_states_are_final() -> None:
    assert set(TRANSITIONS) == set(Move)
    for move, t in TRANSITIONS.items():
        assert not (t.sources & TERMINAL_STATES) or move in (Move.RETRY, Move.RESTORE), move
    # Only an explicit retry leaves a terminal state: FAILED, and (a workflow's retry of a
    # step, issue 28) the steps it had cancelled upstream, back to WAITING for it.
    assert TRANSITIONS[Move.RETRY].sources == {JobState.FAILED}
    assert TRANSITIONS[Move.RESTORE].sources == {JobState.CANCELLED}
    assert TRANSITIONS[Move.RESTORE].target is JobState.WAITING


def test_worker_moves_are_fenced() -> None:
    for move in (Move.COMPLETE, Move.FAIL, Move.RETRY_LATER, Move.CONFIRM_CANCEL):
        assert TRANSITIONS[move].fenced
    assert not TRANSITIONS[Move.CLAIM].fenced


# Each move as the store exposes it, called with the job's *current* attempt so that only the
# state guard (not fencing) can refuse it.
MOVES: dict[Move, Callable[[JobStore, Job], Any]] = {
    Move.COMPLETE: lambda s, j: s.complete(j.id, j.attempts, {"x": 1}),
    Move.FAIL: lambda s, j: s.fail(j.id, j.attempts, "E", "m"),
    Move.RETRY_LATER: lambda s, j: s.retry_later(j.id, j.attempts, "E", "m", delay=timedelta(0)),
    Move.CONFIRM_CANCEL: lambda s, j: s.confirm_cancel(j.id, j.attempts),
    Move.RETRY: lambda s, j: s.retry("alice", j.id),
}

ILLEGAL = [(m, st) for m in MOVES for st in JobState if not allowed(m, st)]


@pytest.mark.parametrize(("move", "state"), ILLEGAL, ids=[f"{m}-from-{s}" for m, s in ILLEGAL])
def test_illegal_move_raises_and_writes_nothing(
    store: JobStore, engine: Engine, move: Move, state: JobState
) -> None:
    job = job_in_state(store, state)
    before = snapshot(engine, job)
    with pytest.raises(IllegalTransition) as err:
        MOVES[move](store, job)
    assert err.value.state == state.value
    assert snapshot(engine, job) == before


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_cancel_of_a_terminal_job_is_refused(
    store: JobStore, engine: Engine, state: JobState
) -> None:
    job = job_in_state(store, state)
    before = snapshot(engine, job)
    with pytest.raises(IllegalTransition):
        store.cancel("alice", job.id)
    assert snapshot(engine, job) == before


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.PENDING])
def test_claim_takes_only_pending_jobs(store: JobStore, engine: Engine, state: JobState) -> None:
    job = job_in_state(store, state)
    before = snapshot(engine, job)
    assert store.claim(job.id).job is None
    assert snapshot(engine, job) == before


def test_a_delivery_failure_never_fails_a_job_that_ran() -> None:
    """A dead letter acts only on a job that never ran that attempt: PENDING, back to PENDING
    (dispatched again later) or, past the delivery budget, FAILED 'Undeliverable'."""
    for move in (Move.DELIVERY_FAILED, Move.UNDELIVERABLE):
        assert TRANSITIONS[move].sources == {JobState.PENDING} and not TRANSITIONS[move].fenced
    assert TRANSITIONS[Move.DELIVERY_FAILED].target is JobState.PENDING
    assert TRANSITIONS[Move.UNDELIVERABLE].target is JobState.FAILED
    assert not any(JobState.PROCESSING in t.sources and t.target is JobState.FAILED
                   for m, t in TRANSITIONS.items() if not t.fenced)


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.PENDING])
def test_a_dead_letter_leaves_every_job_but_a_pending_one_alone(
    store: JobStore, engine: Engine, state: JobState
) -> None:
    job = job_in_state(store, state)
    if state is JobState.PROCESSING:  # even with its lease expired: that is the rescuer's
        with engine.connect() as conn:
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 s', "
                              "dispatched_at = now() WHERE id = :id"), {"id": job.id})
            conn.commit()
    before = snapshot(engine, job)
    for attempt in {0, job.attempts, job.attempts + 1}:
        assert store.delivery_failed(job.id, attempt) is None
    assert snapshot(engine, job) == before


def test_every_state_change_has_its_event(store: JobStore, engine: Engine) -> None:
    for state in JobState:
        job = job_in_state(store, state)
        events = store.events("alice", job.id)
        assert events[-1].to_state is state
        chain = [(e.from_state, e.to_state) for e in events]
        for (_, prev_to), (nxt_from, _) in itertools.pairwise(chain):
            assert nxt_from == prev_to  # the trail has no gaps
