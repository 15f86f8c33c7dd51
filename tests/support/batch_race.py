"""Claim batches racing on threads (issue 30), for tests/test_batch_properties.py: two
instances' batches over the same jobs at once, with the sweep rescuing lapsed leases and an
owner cancelling a PENDING job at the same moment. Who wins is not predicted; at most one
request takes each attempt, each loser is told a true reason, and the machine's model
(tests/support/batch_machine.py) follows what happened. Driven from a seed, not by Hypothesis,
whose replays need each step to end the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from common.store.models import ClaimOutcome
from common.store.states import JobState
from common.worker.coalescer import Alone
from tests.support.batch_machine import BatchMachine
from tests.support.state_machine import TALLY
from tests.support.state_model import lapsable

P, R, X = JobState.PENDING, JobState.PROCESSING, JobState.CANCELLED


def claims_race(self: BatchMachine, a: list[tuple[int, int]], b: list[tuple[int, int]],
                rescue: bool, cancel: int | None) -> None:
    """Batches `a` and `b` (job picks, stale-by) at once; `rescue`: a lease lapses just before
    and the sweep runs meanwhile; `cancel`: which PENDING job its owner cancels meanwhile."""
    if rescue and self._any(lapsable):
        self._move_into_past(self._pick_where(a[0][0], lapsable), lease=True)
    rescue_want, graced = self._rescue_want()
    batches = [[self._pick_request(n, s) for n, s in side] for side in (a, b)]
    pending = [j for j in self.ever if j in self.jobs and self.jobs[j].state is P]
    victim = pending[cancel % len(pending)] if cancel is not None and pending else None
    results: dict[str, Any] = {}
    start = threading.Barrier(2 + bool(rescue) + (victim is not None))

    def run(name: str, call: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[name] = call()
        except BaseException as exc:  # reported below, on the test's thread
            results[name] = exc

    calls: dict[str, Callable[[], Any]] = {
        f"batch{i}": (lambda reqs=reqs: _claim_as_coalescer(self, reqs))
        for i, reqs in enumerate(batches)}
    if rescue:
        calls["rescue"] = lambda: self.store.rescue_expired(100)
    if victim is not None:
        owner = self.jobs[victim].owner
        calls["cancel"] = lambda: self.store.cancel(owner, victim)
    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, got in results.items():
        assert not isinstance(got, BaseException), (name, got)
    if rescue:
        assert {r.id: r.state for r in results["rescue"]} == rescue_want
        self._apply_rescue(rescue_want, graced)
    _follow_race(self, batches, results, victim, set(rescue_want) if rescue else set())
    TALLY["claim races"] += 1


def _claim_as_coalescer(self: BatchMachine, requests: list[tuple[UUID, int]]) -> list[ClaimOutcome]:
    answered = self.batching._claim_many(requests)
    return [self.batching._claim_one(req) if isinstance(got, Alone) else got
            for req, got in zip(requests, answered, strict=True)]  # type: ignore[misc]


def _follow_race(self: BatchMachine, batches: list[list[tuple[UUID, int]]],
                 results: dict[str, Any], victim: UUID | None, rescued: set[UUID]) -> None:
    won: dict[UUID, list[tuple[str, ClaimOutcome]]] = {}
    for i, requests in enumerate(batches):
        for index, (req, got) in enumerate(zip(requests, results[f"batch{i}"], strict=True)):
            TALLY[f"race claim: {got.reason}"] += 1
            if got.reason == "claimed":
                won.setdefault(req[0], []).append((f"race-{i}-{index}", got))
    for job_id, winners in won.items():
        assert len(winners) == 1, ("two claimers took one attempt", job_id, winners)
    cancelled = results.get("cancel")
    if victim is not None:  # the cancel came first (CANCELLED) or after the claim (flag)
        assert cancelled.state in (X, R), cancelled
        if cancelled.state is X:
            assert victim not in won, (victim, won)
    for job_id, [(who, outcome)] in won.items():
        expected = [e for reqs in batches for j, e in reqs if j == job_id]
        assert self.jobs[job_id].attempts in expected
        self._claimed(job_id, outcome, who, 0)
    if victim is not None:
        exp = self.jobs[victim]
        if cancelled.state is X:
            exp.state, exp.due = X, True
        else:
            exp.cancel_requested = True
        TALLY[f"race cancel -> {cancelled.state.value}"] += 1
    for i, requests in enumerate(batches):  # each loser was told a true reason
        for (job_id, expected), got in zip(requests, results[f"batch{i}"], strict=True):
            if got.reason == "claimed":
                continue
            exp = self.jobs.get(job_id)
            allowed = {self._predict(job_id, expected), "in-progress", "stale-message"}
            if job_id in rescued:  # the single claim saw it running, its peek after the
                allowed.add("not-due")  # rescue sees it PENDING: acknowledged either way
            if job_id == victim:
                allowed.add("terminal")
            if exp is not None and (self._limited(job_id) or job_id in won):
                allowed.add("deferred")
            assert got.reason in allowed, (got.reason, allowed, exp)
