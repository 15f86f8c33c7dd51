"""The job state machine: one table of allowed moves.

Every write in the repository takes its guard (the states it may start from) and its target from
this table, so a move the table does not allow cannot be written at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    # A workflow step whose parents have not all ended (issue 28): not due, not dispatched.
    WAITING = "WAITING"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Move(StrEnum):
    CREATE = "create"
    CLAIM = "claim"
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY_LATER = "retry_later"
    CANCEL = "cancel"
    REQUEST_CANCEL = "request_cancel"
    CONFIRM_CANCEL = "confirm_cancel"
    RETRY = "retry"
    RESCUE = "rescue"
    DELIVERY_FAILED = "delivery_failed"
    UNDELIVERABLE = "undeliverable"
    # Workflows (issue 28, migration 0021): a step with parents is created WAITING; the end of
    # its last parent makes it PENDING, or CANCELLED when a parent failed (both by trigger, in
    # the statement that ends the parent); a retry of a step restores its cancelled descendants.
    CREATE_WAITING = "create_waiting"
    UNBLOCK = "unblock"
    UPSTREAM_FAILED = "upstream_failed"
    RESTORE = "restore"
    # Long jobs (issue 29): the execution running an attempt is recorded on the job; a start
    # that failed gives the attempt back.
    RECORD_EXECUTION = "record_execution"
    START_FAILED = "start_failed"


@dataclass(frozen=True)
class Transition:
    sources: frozenset[JobState]
    target: JobState
    # Fenced moves are made by the worker holding an attempt: they must name that attempt, and a
    # worker whose lease was taken over can never write over a newer attempt.
    fenced: bool


W, P, R = JobState.WAITING, JobState.PENDING, JobState.PROCESSING
C, F, X = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED

TRANSITIONS: dict[Move, Transition] = {
    Move.CREATE: Transition(frozenset(), P, fenced=False),
    Move.CLAIM: Transition(frozenset({P}), R, fenced=False),
    Move.COMPLETE: Transition(frozenset({R}), C, fenced=True),
    Move.FAIL: Transition(frozenset({R}), F, fenced=True),
    # Back to PENDING for a later attempt; becomes FAIL when attempts are exhausted and
    # CONFIRM_CANCEL when a cancel was requested meanwhile (decided inside the same statement).
    Move.RETRY_LATER: Transition(frozenset({R}), P, fenced=True),
    Move.CANCEL: Transition(frozenset({W, P}), X, fenced=False),
    # Not a state change: raises the cancel flag that the worker honours. It still gets an event.
    Move.REQUEST_CANCEL: Transition(frozenset({R}), R, fenced=False),
    Move.CONFIRM_CANCEL: Transition(frozenset({R}), X, fenced=True),
    Move.RETRY: Transition(frozenset({F}), P, fenced=False),
    # Lease expired: back to PENDING while attempts remain, else FAILED (same statement).
    Move.RESCUE: Transition(frozenset({R}), P, fenced=False),
    # A dead-lettered message for a job that never ran that attempt: Pub/Sub could not deliver
    # it (our worker or database was down), which is no failure of the job. It waits a growing
    # delay and is dispatched again; only past the delivery budget does it end FAILED
    # ('undeliverable'), decided inside the same statement.
    Move.DELIVERY_FAILED: Transition(frozenset({P}), P, fenced=False),
    Move.UNDELIVERABLE: Transition(frozenset({P}), F, fenced=False),
    Move.CREATE_WAITING: Transition(frozenset(), W, fenced=False),
    Move.UNBLOCK: Transition(frozenset({W}), P, fenced=False),
    Move.UPSTREAM_FAILED: Transition(frozenset({W}), X, fenced=False),
    Move.RESTORE: Transition(frozenset({X}), W, fenced=False),
    # Not a state change: the attempt's execution is named, once (common/store/executions.py).
    Move.RECORD_EXECUTION: Transition(frozenset({R}), R, fenced=True),
    # An execution could not be started: a delivery failure. Back to PENDING with the attempt
    # given back; FAILED ('unstartable') past the delivery budget, CANCELLED if a cancel was
    # asked (decided inside the same statement).
    Move.START_FAILED: Transition(frozenset({R}), P, fenced=True),
}


def transition(move: Move) -> Transition:
    return TRANSITIONS[move]


def allowed(move: Move, state: JobState) -> bool:
    return state in TRANSITIONS[move].sources
