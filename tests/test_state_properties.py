"""The job state machine proved by properties, against real PostgreSQL and the real JobStore.

Hypothesis interleaves what every party does to jobs: callers submit (with and without
idempotency keys), cancel (ending a PENDING job, or asking a PROCESSING one to stop) and retry;
several simulated workers claim (with the attempt their message was for, or a stale one),
heartbeat, complete, fail, retry later and confirm a cancel, including workers that were fenced
out long ago; the sweep rescues lapsed leases, settles dead letters (of current and stale
attempts) and purges old jobs. Time moves by rewriting lease_expires_at, not_before and
finished_at in SQL, never by sleeping. After every step the tables are read back and checked
(tests/support/state_model.py): one state per job, the result row its state carries, attempts
that never go down, every event an allowed move of common/store/states.py, no PROCESSING job
without a lease, and the model's prediction of each move.

Dead letters are checked through the table and the store's return value, not by naming an
outcome, because their semantics are being reworked (issue #12, part 1).

CI runs a bounded, derandomized budget; `make bench` (bench/state_properties.py) runs the same
machine with many more examples through STATE_PROPS_EXAMPLES and STATE_PROPS_STEPS.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import Engine

from common.settings import Settings
from common.store.job_store import JobStore
from common.store.states import TRANSITIONS, JobState, Move
from tests.conftest import PRESETS
from tests.support.state_machine import TALLY, JobMachine
from tests.support.state_model import ALLOWED_PAIRS

EXAMPLES = int(os.environ.get("STATE_PROPS_EXAMPLES", "50"))
STEPS = int(os.environ.get("STATE_PROPS_STEPS", "100"))
P, R, C = JobState.PENDING, JobState.PROCESSING, JobState.COMPLETED


def test_the_table_gives_every_move_its_pairs() -> None:
    """The allowed pairs come from the table: each move's sources times its target, and creation."""
    for move, t in TRANSITIONS.items():
        for source in t.sources or {None}:
            assert (source, t.target) in ALLOWED_PAIRS, move
    assert (None, P) in ALLOWED_PAIRS and (C, P) not in ALLOWED_PAIRS
    # A dead letter is a delivery failure: it moves only a job that never ran that attempt.
    assert TRANSITIONS[Move.DELIVERY_FAILED].sources == {P}
    assert TRANSITIONS[Move.UNDELIVERABLE].sources == {P}


def test_state_machine_properties_hold_under_any_interleaving(
    engine: Engine, settings: Settings
) -> None:
    JobMachine.engine = engine
    JobMachine.app_settings = settings
    JobMachine.store = JobStore(engine, settings, presets=PRESETS)
    TALLY.clear()
    run_state_machine_as_test(JobMachine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
        database=None, suppress_health_check=[HealthCheck.too_slow,
                                              HealthCheck.filter_too_much]))
    print("state machine tally:", dict(sorted(TALLY.items())))
    # Every path the properties are about was really taken, not only generated.
    for path in ("fenced-out worker refused", "worker move on a job no longer running refused",
                 "cancel requested while processing", "cancelled while pending", "owner retry",
                 "rescue -> PENDING", "rescue -> FAILED", "dead letter ignored", "purged",
                 "heartbeat", "claim: stale-message", "execution recorded",
                 "second execution refused", "start failed -> PENDING",
                 "start failure refused"):
        assert TALLY[path] > 0, (path, TALLY)
    assert any(k.startswith("dead letter -> ") for k in TALLY), TALLY
    assert TALLY["exit: complete -> CANCELLED"] + TALLY["rescue -> CANCELLED"] > 0, TALLY
