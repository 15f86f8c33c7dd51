"""Batched claims and exits (issue 30) proved by properties, against real PostgreSQL and the real
JobStore and Batching: the state machine of tests/test_state_properties.py, whose claims and
exits go through `process`'s batching (alone, or many in one statement, with duplicates, stale
attempts, mixed moves and jobs under limits), interleaved with rescues, cancels and retries;
and claim batches racing each other, a rescue and a cancel on threads, among the same steps
drawn from a seed (Hypothesis replays steps and needs each to end the same way; a race does
not). tests/support/batch_machine.py lists the invariants checked after every step.

CI runs a bounded, derandomized budget; BATCH_PROPS_EXAMPLES, BATCH_PROPS_STEPS and
BATCH_RACE_ROUNDS run it longer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import Engine

from common.settings import Settings
from common.store.job_store import JobStore
from common.worker.batching import Batching
from tests.conftest import PRESETS
from tests.support.batch_machine import BatchMachine
from tests.support.batch_race import claims_race
from tests.support.state_machine import LEASE_S, TALLY

EXAMPLES = int(os.environ.get("BATCH_PROPS_EXAMPLES", "25"))
STEPS = int(os.environ.get("BATCH_PROPS_STEPS", "60"))
RACE_ROUNDS = int(os.environ.get("BATCH_RACE_ROUNDS", "300"))


def _machine(engine: Engine, settings: Settings) -> None:
    # The batch leaves every claim to the single one when all owners have a limit: not here.
    tuned = settings.model_copy(update={"lease_seconds": LEASE_S, "owner_max_running": 0})
    BatchMachine.engine = engine
    BatchMachine.app_settings = tuned
    BatchMachine.store = JobStore(engine, tuned, presets=PRESETS)
    BatchMachine.batching = Batching(BatchMachine.store, tuned)
    TALLY.clear()


def test_batched_claims_and_exits_hold_under_any_interleaving(
    engine: Engine, settings: Settings
) -> None:
    _machine(engine, settings)
    run_state_machine_as_test(BatchMachine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
        database=None, suppress_health_check=[HealthCheck.too_slow,
                                              HealthCheck.filter_too_much]))
    print("batch machine tally:", dict(sorted(TALLY.items())))
    # Every path the properties are about was really taken, not only generated.
    for path in ("claim batches", "exit batches", "batch claim: claimed",
                 "batch claim: stale-message", "batch claim: in-progress",
                 "batch member alone: claimed", "batch member alone: deferred",
                 "batch member alone: in-progress", "lone claim: claimed",
                 "batch exit: fenced out", "batch exit: not running refused",
                 "fenced-out worker refused", "cancel requested while processing",
                 "cancelled while pending", "owner retry"):
        assert TALLY[path] > 0, (path, TALLY)
    assert any(k.startswith("batch exit: complete -> ") for k in TALLY), TALLY
    assert any(k.startswith("rescue -> ") for k in TALLY), TALLY


def test_claim_batches_racing_rescues_and_cancels(engine: Engine, settings: Settings) -> None:
    """The machine's steps from a seeded draw, a third of them races: two claim batches over
    the same jobs on threads, with a rescue of lapsed leases and an owner's cancel of a PENDING
    job at the same moment. The invariants are checked after every step."""
    _machine(engine, settings)
    rng = random.Random(30)
    machine = BatchMachine()
    machine.two_jobs()

    def members() -> list[tuple[int, int]]:
        return [(rng.randrange(64), rng.choice([0, 0, 0, 1])) for _ in range(rng.randint(1, 5))]

    steps: list[tuple[int, Callable[[], bool], Callable[[], None]]] = [
        (6, lambda: True, lambda: claims_race(machine,
            members(), members(), rng.random() < 0.5,
            rng.randrange(64) if rng.random() < 0.5 else None)),
        (2, lambda: len(machine.jobs) < 5, lambda: machine.submit_under_a_limit(
            rng.choice(["alice", "bob"]))),
        (2, lambda: len(machine.jobs) < 5, lambda: machine.submit(
            rng.choice(["alice", "bob"]), "a", rng.choice([None, 1, 2]), None)),
        (3, machine._holding, lambda: machine.exit_batch(
            [(rng.randrange(3), rng.randrange(64), rng.choice(
                ["complete", "fail", "retry-now", "cancel"])) for _ in range(rng.randint(2, 5))],
            [])),
        (2, lambda: True, lambda: machine.rescue(rng.randrange(64), rng.random() < 0.7)),
        (1, lambda: any(e.state.terminal for e in machine.jobs.values()),
         lambda: machine.purge(0, everything=True)),
        (1, lambda: bool(machine.ever), lambda: machine.cancel(rng.randrange(64), False)),
        (1, lambda: bool(machine.ever), lambda: machine.retry(rng.randrange(64), False)),
    ]
    weighted = [step for step in steps for _ in range(step[0])]
    for _ in range(RACE_ROUNDS):
        _, ready, run = rng.choice(weighted)
        if ready():
            run()
            machine.tables_keep_the_promise()
    print("race tally:", dict(sorted(TALLY.items())))
    assert TALLY["claim races"] > 0 and TALLY["race claim: claimed"] > 0, TALLY
    assert TALLY["race claim: in-progress"] > 0 and TALLY["race cancel -> CANCELLED"] > 0, TALLY
    assert any(k.startswith("race rescue -> ") for k in TALLY), TALLY
