"""Workflows proved by properties (issue 28), on real PostgreSQL through the real store.

Hypothesis builds random graphs (each step waiting for any earlier ones, some running anyway
after a failure) and interleaves what moves their steps: claims of any step, exits of every
kind, lease rescues by the sweep, cancels of a step or of the whole, retries of the whole or of
one step, and children spawned by running steps (some twice, as a rerun handler would). After
every step the tables are read back:
- a step is claimed only when every parent has ended COMPLETED (or, for a step that runs
  anyway, ended at all), and is PENDING only then: never started early (a retried parent
  sends a not yet started run-anyway child back to WAITING);
- a WAITING step waits for exactly the parents that have not ended well (`waiting_on`);
- no WAITING step has all its parents ended: nothing is left waiting forever;
- the workflow's count of ended steps, and its state, match its steps;
- each (spawner, key) has one child.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from common.settings import Settings
from common.store.errors import IllegalTransition
from common.store.job_store import JobStore
from common.store.models import JobTemplate
from common.store.workflow_models import parse_new_workflow
from common.store.workflows import SpawnRefused
from tests.conftest import PRESETS

EXAMPLES = int(os.environ.get("WORKFLOW_PROPS_EXAMPLES", "25"))
STEPS = int(os.environ.get("WORKFLOW_PROPS_STEPS", "50"))
PICK = st.integers(0, 10_000)
TALLY: dict[str, int] = {}
# The parents job :id still waits for: not COMPLETED, or for a step that runs anyway, not ended.
OPEN_PARENTS = """
SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.parent_id JOIN jobs c ON c.id = d.child_id
WHERE d.child_id = :id AND NOT (p.state = 'COMPLETED' OR (c.on_upstream_failure = 'run'
                                AND p.state IN ('FAILED', 'CANCELLED')))"""


def _count(name: str) -> None:
    TALLY[name] = TALLY.get(name, 0) + 1


@st.composite
def graphs(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 3), unique=True))
        steps.append({"name": f"s{i}", "preset": "echo", "content": str(i),
                      "after": [f"s{p}" for p in parents] if i else [],
                      "on_upstream_failure": draw(st.sampled_from(["cancel", "cancel", "run"])),
                      "max_attempts": draw(st.sampled_from([1, 2]))})
    return steps


class WorkflowMachine(RuleBasedStateMachine):
    engine: Engine
    store: JobStore

    def __init__(self) -> None:
        super().__init__()
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE jobs, job_events, webhook_deliveries, workflows, "
                              "job_deps, owner_limits, owner_running, flow_limits"))
        self.workflows: list[UUID] = []

    def _jobs(self, where: str = "true") -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(
                f"SELECT id, state, attempts, workflow_id, step FROM jobs WHERE {where} "
                "ORDER BY created_at, step")))  # not by id: its random bits vary per run

    def _pick(self, n: int, where: str) -> Any | None:
        rows = self._jobs(where)
        return rows[n % len(rows)] if rows else None

    @initialize(steps=graphs())
    def a_first_workflow(self, steps: list[dict[str, Any]]) -> None:
        self.submit(steps)

    @rule(n=PICK)
    def deliver(self, n: int) -> None:
        """Deliveries and ends outnumber every other event: a PENDING step's claim, then its
        end, in one rule."""
        row = self._pick(n, "state = 'PENDING'")
        if row is not None:
            self._claim(row)
        self.finish(n, ["complete", "complete", "complete", "fail"][n % 4])

    @rule(steps=graphs())
    def submit(self, steps: list[dict[str, Any]]) -> None:
        wf, _, _ = self.store.create_workflow("alice", parse_new_workflow({"steps": steps}))
        self.workflows.append(wf.id)
        _count("submit")

    def _claim(self, row: Any) -> None:
        with self.engine.connect() as conn:
            ready = conn.execute(text(f"SELECT NOT EXISTS ({OPEN_PARENTS})"),
                                 {"id": row.id}).scalar_one()
        reason = self.store.claim(row.id).reason
        assert reason != "claimed" or ready, (row, "claimed before its parents ended")
        _count(f"claim: {reason}")

    @rule(n=PICK)
    def claim(self, n: int) -> None:
        row = self._pick(n, "state IN ('WAITING', 'PENDING')")
        if row is not None:
            self._claim(row)

    @rule(n=PICK, how=st.sampled_from(["complete", "complete", "fail", "retry", "cancel"]))
    def finish(self, n: int, how: str) -> None:
        row = self._pick(n, "state = 'PROCESSING'")
        if row is None:
            return
        if how == "complete":
            self.store.complete(row.id, row.attempts, {"ok": True})
        elif how == "fail":
            self.store.fail(row.id, row.attempts, "E", "boom")
        elif how == "retry":
            self.store.retry_later(row.id, row.attempts, "E", "again", delay=timedelta(0))
        else:
            self.store.cancel("alice", row.id)
            self.store.confirm_cancel(row.id, row.attempts)
        _count(f"exit: {how}")

    @rule(n=PICK, key=st.sampled_from(["k0", "k1", "k2"]), stale=st.booleans())
    def spawn(self, n: int, key: str, stale: bool) -> None:
        row = self._pick(n, "state = 'PROCESSING' AND workflow_id IS NOT NULL")
        if row is None:
            return
        try:
            self.store.spawn(row.id, row.attempts + (1 if stale else 0), key,
                             JobTemplate(preset="echo", content="child"))
            _count("spawn")
        except SpawnRefused:
            assert stale
            _count("spawn refused")

    @rule(n=PICK)
    def lease_lapses_and_the_sweep_rescues(self, n: int) -> None:
        row = self._pick(n, "state = 'PROCESSING'")
        if row is None:
            return
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                              "WHERE id = :id"), {"id": row.id})
        if self.store.rescue_expired(100):
            _count("rescue")

    @rule(n=PICK, whole=st.booleans())
    def cancel(self, n: int, whole: bool) -> None:
        row = self._pick(n, "state IN ('WAITING', 'PENDING')")
        if row is None:
            return
        if whole:
            self.store.cancel_workflow("alice", row.workflow_id)
            _count("cancel: workflow")
        else:
            try:
                self.store.cancel("alice", row.id)
                _count("cancel: step")
            except IllegalTransition:
                pass

    @rule(n=PICK)
    def retry(self, n: int) -> None:
        one = n % 2 == 0
        row = self._pick(n, "state = 'FAILED' AND workflow_id IS NOT NULL")
        if row is None:
            return
        self.store.retry_workflow("alice", row.workflow_id, row.step if one else None)
        _count("retry: step" if one else "retry: workflow")

    @invariant()
    def steps_follow_their_parents(self) -> None:
        with self.engine.connect() as conn:
            early = conn.execute(text("""
                SELECT c.step, c.state, p.step AS parent, p.state AS parent_state
                FROM job_deps d JOIN jobs c ON c.id = d.child_id JOIN jobs p ON p.id = d.parent_id
                WHERE c.state = 'PENDING'
                  AND NOT (p.state = 'COMPLETED'
                           OR (c.on_upstream_failure = 'run' AND p.state IN
                               ('FAILED', 'CANCELLED')))""")).all()
            assert early == [], early
            counts = conn.execute(text("""
                SELECT c.step, c.waiting_on, (SELECT count(*) FROM job_deps d
                    JOIN jobs p ON p.id = d.parent_id WHERE d.child_id = c.id
                    AND NOT (p.state = 'COMPLETED' OR (c.on_upstream_failure = 'run'
                             AND p.state IN ('FAILED', 'CANCELLED')))) AS open
                FROM jobs c WHERE c.state = 'WAITING'""")).all()
            for row in counts:
                assert row.waiting_on == row.open and row.open > 0, row  # never stuck
            flows = conn.execute(text("""
                SELECT w.id, w.state, w.steps_total, w.steps_done,
                       count(j.id) AS steps,
                       count(j.id) FILTER (WHERE j.state IN ('COMPLETED','FAILED','CANCELLED'))
                           AS ended,
                       count(j.id) FILTER (WHERE j.state = 'FAILED') AS failed,
                       count(j.id) FILTER (WHERE j.state = 'CANCELLED') AS cancelled
                FROM workflows w LEFT JOIN jobs j ON j.workflow_id = w.id
                GROUP BY w.id""")).all()
            for w in flows:
                assert (w.steps_total, w.steps_done) == (w.steps, w.ended), w
                want = ("RUNNING" if w.ended < w.steps else "FAILED" if w.failed
                        else "CANCELLED" if w.cancelled else "COMPLETED")
                assert w.state == want, w
            twins = conn.execute(text(
                "SELECT spawned_by, spawn_key FROM jobs WHERE spawned_by IS NOT NULL "
                "GROUP BY 1, 2 HAVING count(*) > 1")).all()
            assert twins == []


def test_workflows_keep_their_promises_under_any_interleaving(engine: Engine,
                                                             settings: Settings) -> None:
    WorkflowMachine.engine = engine
    WorkflowMachine.store = JobStore(engine, settings, presets=PRESETS)
    TALLY.clear()
    run_state_machine_as_test(WorkflowMachine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
        database=None, suppress_health_check=[HealthCheck.too_slow]))
    print("workflow machine tally:", dict(sorted(TALLY.items())))
    for path in ("submit", "claim: claimed", "exit: complete", "exit: fail", "spawn",
                 "spawn refused", "rescue", "retry: workflow", "cancel: workflow"):
        assert TALLY.get(path, 0) > 0, (path, TALLY)
