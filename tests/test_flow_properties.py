"""Flow control's counters and waits proved by properties (issue 27), on real PostgreSQL.

Hypothesis interleaves what moves jobs under limits: submits with and without a key, claims of
any job (parked, held or fresh), exits of every kind, cancels, lapsed leases rescued by the
sweep, limits set, changed and removed (per owner, per key, per preset), and the releases of
parked jobs. After every step the tables are read back:
- every running counter (owner_running, flow_limits.running) equals the PROCESSING jobs that
  hold its slot, so no path leaks or double-frees one;
- a claim never started a job when a running limit over it was full, and a parked or held
  job spent no attempt;
- `wait_reason` is set only on PENDING jobs, and every held job has its slot as not_before.
Time moves by rewriting lease_expires_at and not_before in SQL, never by sleeping.
"""

from __future__ import annotations

import os
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

from common.settings import PresetLimit, Settings
from common.store.errors import IllegalTransition, LimitNotFound
from common.store.job_store import JobStore
from common.store.models import NewJob
from tests.conftest import PRESETS

EXAMPLES = int(os.environ.get("FLOW_PROPS_EXAMPLES", "25"))
STEPS = int(os.environ.get("FLOW_PROPS_STEPS", "60"))
OWNERS = ("alice", "bob")
KEYS = (None, "k1", "k2")
PICK = st.integers(0, 10_000)
TALLY: dict[str, int] = {}


def _count(name: str) -> None:
    TALLY[name] = TALLY.get(name, 0) + 1


class FlowMachine(RuleBasedStateMachine):
    engine: Engine
    store: JobStore

    def __init__(self) -> None:
        super().__init__()
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE jobs, job_events, webhook_deliveries, owner_limits, "
                              "owner_running, flow_limits"))
        self.jobs: list[UUID] = []
        self.attempts: dict[UUID, int] = {}

    def _pick(self, n: int) -> UUID | None:
        return self.jobs[n % len(self.jobs)] if self.jobs else None

    def _pick_running(self, n: int) -> UUID | None:
        """A PROCESSING job, if any: exits are about running jobs."""
        with self.engine.connect() as conn:
            running = [r[0] for r in conn.execute(text(
                "SELECT id FROM jobs WHERE state = 'PROCESSING' ORDER BY id"))]
        return running[n % len(running)] if running else None

    def _job(self, job_id: UUID) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text(
                "SELECT state, attempts, owner_id, preset, limit_key, wait_reason "
                "FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one())

    def _full(self, job: dict[str, Any]) -> bool:
        """Whether a running limit over this job is full right now (owner, preset or key)."""
        with self.engine.connect() as conn:
            return bool(conn.execute(text("""
                SELECT EXISTS (SELECT 1 FROM flow_limits f WHERE f.running >= f.max_running
                    AND ((f.owner_id = '' AND f.name = :preset)
                         OR (f.owner_id = :owner AND f.name = :key)))
                OR EXISTS (SELECT 1 FROM owner_limits l JOIN owner_running r USING (owner_id)
                           WHERE l.owner_id = :owner AND l.max_running > 0
                             AND r.running >= l.max_running)"""),
                {"preset": job["preset"], "owner": job["owner_id"],
                 "key": job["limit_key"]}).scalar_one())

    @initialize(running=st.integers(1, 2), rate=st.booleans())
    def some_jobs_under_a_limit(self, running: int, rate: bool) -> None:
        """Start where the interesting paths are: a key limit and jobs under it."""
        self.store.set_key_limit("alice", "k1", max_running=running,
                                 max_starts=2 if rate else None,
                                 interval_s=1.0 if rate else None)
        for n in range(6):
            self.submit("alice", "k1" if n % 3 else None, n)

    @rule(n=PICK)
    def deliver_again(self, n: int) -> None:
        """Deliveries outnumber every other event: a second rule for the claim."""
        self.claim(n)

    @rule(n=PICK, how=st.sampled_from(["complete", "retry", "fail"]))
    def another_exit(self, n: int, how: str) -> None:
        """And exits follow them: a second rule for the end of a run."""
        self.finish(n, how)

    @rule(owner=st.sampled_from(OWNERS), key=st.sampled_from(KEYS),
          priority=st.integers(0, 9))
    def submit(self, owner: str, key: str | None, priority: int) -> None:
        job, _ = self.store.create(owner, NewJob(preset="echo", content="x", limit_key=key,
                                                 priority=priority))
        self.jobs.append(job.id)
        self.attempts[job.id] = 0

    @rule(n=PICK)
    def claim(self, n: int) -> None:
        job_id = self._pick(n)
        if job_id is None:
            return
        before = self._job(job_id)
        full = before["state"] == "PENDING" and self._full(before)
        outcome = self.store.claim(job_id)
        _count(f"claim: {outcome.reason}")
        after = self._job(job_id)
        if outcome.reason == "claimed":
            assert not full, (before, "started while a running limit over it was full")
            assert after["attempts"] == before["attempts"] + 1
        else:
            assert after["attempts"] == before["attempts"]  # parked or held: no attempt spent
        self.attempts[job_id] = after["attempts"]

    @rule(n=PICK, how=st.sampled_from(["complete", "complete", "fail", "retry", "cancel",
                                       "cancel-pending"]))
    def finish(self, n: int, how: str) -> None:
        job_id = self._pick_running(n) if how != "cancel-pending" else self._pick(n)
        if job_id is None:
            return
        job = self._job(job_id)
        if how == "cancel-pending":
            self._cancel_pending(job_id)
            return
        if job["state"] != "PROCESSING":
            return
        attempt = job["attempts"]
        from datetime import timedelta

        if how == "complete":
            self.store.complete(job_id, attempt, {"ok": True})
        elif how == "fail":
            self.store.fail(job_id, attempt, "E", "boom")
        elif how == "retry":
            self.store.retry_later(job_id, attempt, "E", "again", delay=timedelta(0))
        else:
            self.store.cancel(job["owner_id"], job_id)
            self.store.confirm_cancel(job_id, attempt)
        _count(f"exit: {how}")

    def _cancel_pending(self, job_id: UUID) -> None:
        job = self._job(job_id)
        if job["state"] == "PENDING":
            try:
                self.store.cancel(job["owner_id"], job_id)
                _count("cancel: pending")
            except IllegalTransition:
                pass

    @rule(n=PICK)
    def lease_lapses_and_the_sweep_rescues(self, n: int) -> None:
        job_id = self._pick(n)
        if job_id is None:
            return
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                              "WHERE id = :id AND state = 'PROCESSING'"), {"id": job_id})
        if self.store.rescue_expired(100):
            _count("rescue")

    @rule(n=PICK)
    def time_passes(self, n: int) -> None:
        """A held job's slot, or a backoff, comes due."""
        job_id = self._pick(n)
        if job_id is not None:
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE jobs SET not_before = now() - interval '1 second' "
                                  "WHERE id = :id AND not_before IS NOT NULL"), {"id": job_id})

    @rule(kind=st.sampled_from(["key", "preset", "owner"]), owner=st.sampled_from(OWNERS),
          key=st.sampled_from(KEYS[1:]), running=st.sampled_from([None, None, 1, 2, 3]),
          rate=st.booleans())
    def change_a_limit(self, kind: str, owner: str, key: str, running: int | None,
                       rate: bool) -> None:
        if kind == "preset":
            self.store.sync_preset_limits({} if running is None
                                          else {"echo": PresetLimit(max_running=running)})
            _count("limit: preset set")
        elif kind == "owner":
            self.store.set_owner_limit(owner, running)
        else:
            self._set_key_limit(owner, key, running, rate)

    def _set_key_limit(self, owner: str, key: str, running: int | None, rate: bool) -> None:
        if running is None and not rate:
            try:
                self.store.delete_key_limit(owner, key)
                _count("limit: deleted")
            except LimitNotFound:
                pass
            return
        self.store.set_key_limit(owner, key, max_running=running,
                                 max_starts=2 if rate else None,
                                 interval_s=1.0 if rate else None)
        _count("limit: key set")

    @rule()
    def a_flood(self) -> None:
        """Every waiting job delivered at once, as after a burst of submits: a limit fills and
        the rest park, whatever the timing of the machine (its load decides how many leases
        lapse and slots come due between steps, so the random rules alone may never fill one)."""
        with self.engine.connect() as conn:
            waiting = [r[0] for r in conn.execute(text(
                "SELECT id FROM jobs WHERE state = 'PENDING' ORDER BY id"))]
        for job_id in waiting:
            self.claim(self.jobs.index(job_id))

    @rule(n=PICK)
    def release(self, n: int) -> None:
        job_id = self._pick(n)
        if job_id is None:
            return
        job = self._job(job_id)
        taken = self.store.take_flow_parked(job["owner_id"], job["preset"], job["limit_key"])
        taken += self.store.take_parked(job["owner_id"])
        taken += self.store.take_flow_parked_all(5)
        if taken:
            _count("released")

    @invariant()
    def counters_match_their_holders(self) -> None:
        with self.engine.connect() as conn:
            drift = conn.execute(text("""
                SELECT f.owner_id, f.name, f.running, (
                    SELECT count(*) FROM jobs j WHERE j.state = 'PROCESSING'
                      AND ((f.owner_id = '' AND j.preset = f.name AND j.flow_held & 1 = 1)
                           OR (f.owner_id <> '' AND j.owner_id = f.owner_id
                               AND j.limit_key = f.name AND j.flow_held & 2 = 2))) AS holders
                FROM flow_limits f WHERE f.max_running IS NOT NULL""")).all()
            for row in drift:
                assert row.running == row.holders, row
            owners = conn.execute(text("""
                SELECT r.owner_id, r.running, (SELECT count(*) FROM jobs j
                    WHERE j.owner_id = r.owner_id AND j.state = 'PROCESSING'
                      AND j.holds_slot IS DISTINCT FROM false) AS holders
                FROM owner_running r""")).all()
            for row in owners:
                assert row.running == row.holders, row
            stray = conn.execute(text(
                "SELECT count(*) FROM jobs WHERE wait_reason IS NOT NULL AND state <> 'PENDING'"
            )).scalar_one()
            assert stray == 0
            unslotted = conn.execute(text(
                "SELECT count(*) FROM jobs WHERE wait_reason = 'rate-reserved' "
                "AND state = 'PENDING' AND not_before IS NULL")).scalar_one()
            assert unslotted == 0


def test_flow_counters_and_waits_hold_under_any_interleaving(engine: Engine,
                                                             settings: Settings) -> None:
    FlowMachine.engine = engine
    FlowMachine.store = JobStore(engine, settings, presets=PRESETS)
    TALLY.clear()
    run_state_machine_as_test(FlowMachine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
        database=None, suppress_health_check=[HealthCheck.too_slow]))
    print("flow machine tally:", dict(sorted(TALLY.items())))
    for path in ("claim: claimed", "claim: deferred", "claim: held", "rescue", "released",
                 "limit: deleted", "limit: preset set", "exit: cancel"):
        assert TALLY.get(path, 0) > 0, (path, TALLY)
