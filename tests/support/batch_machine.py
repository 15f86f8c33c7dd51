"""The rules of tests/test_batch_properties.py: the state machine of tests/support/state_machine.py
(callers, workers, the sweep, each move checked against the model), with the worker's claims
and exits made as `process` makes them since issue 30: alone through the coalescer when
nothing else runs, or many at once in one statement (common/worker/batching.py), with
duplicates, stale attempts and mixed moves in a batch, some jobs under an owner limit or a key
limit (left by the batch to the single claim); and, driven from a seed rather than by
Hypothesis (whose replays need each step to end the same way), batches racing each other, a
rescue and a cancel on real threads (tests/support/batch_race.py).

On top of the model's checks, after every step:
- a holder model: at most one successful claim per (job, attempt), so no job is ever held by
  two claimers, and an exit succeeds only for the attempt its holder claimed, the current one;
- every claim that succeeded is in the trail exactly once as 'claimed' (job_trail's
  synthesised event, migration 0023), and no other;
- owner_running and flow_limits.running equal the jobs that hold their slots, and no limit
  has more running than it allows.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any
from uuid import UUID

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from sqlalchemy import text

from common.store.errors import IllegalTransition, JobNotFound, JobStoreError, StaleAttempt
from common.store.models import ClaimOutcome, JobMove, NewJob
from common.store.states import JobState, Move
from common.store.worker_moves import ExitRequest
from common.worker.batching import Batching
from common.worker.coalescer import Alone
from tests.support.state_machine import OWNERS, PICK, TALLY, WORKERS, JobMachine
from tests.support.state_model import Expected, read_tables

P, R = JobState.PENDING, JobState.PROCESSING
C, F, X = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
LIMITED_OWNER, KEY = "bob", "k1"  # bob has an owner limit; alice's k1 jobs a key limit
LIMIT = 1
STALE = st.sampled_from([0, 0, 0, 1, 2])
MEMBER = st.tuples(PICK, STALE)
HOW = st.sampled_from(["complete", "fail", "retry-now", "retry-in-an-hour", "cancel"])


class BatchMachine(JobMachine):
    batching: Batching

    def __init__(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("DELETE FROM owner_limits"))
            conn.execute(text("DELETE FROM owner_running"))
            conn.execute(text("DELETE FROM flow_limits"))
        super().__init__()
        self.store.set_owner_limit(LIMITED_OWNER, LIMIT)
        self.store.set_key_limit("alice", KEY, max_running=LIMIT)
        self.keyed: set[UUID] = set()
        self.holders: dict[tuple[UUID, int], str] = {}

    # -- the model of claims ----------------------------------------------------------------

    def _limited(self, job_id: UUID) -> bool:
        exp = self.jobs[job_id]
        return exp.owner == LIMITED_OWNER or job_id in self.keyed

    def _full(self, job_id: UUID) -> bool:
        """Whether the limit over this job has LIMIT jobs running (they hold its slot)."""
        def same(other: UUID) -> bool:
            if self.jobs[job_id].owner == LIMITED_OWNER:
                return self.jobs[other].owner == LIMITED_OWNER
            return other in self.keyed
        return sum(1 for j, e in self.jobs.items() if e.state is R and same(j)) >= LIMIT

    def _predict(self, job_id: UUID, expected: int) -> str:
        exp = self.jobs.get(job_id)
        if exp is None:
            return "not-found"
        if exp.state.terminal:
            return "terminal"
        if exp.state is R:
            return "in-progress"
        if expected != exp.attempts:
            return "stale-message"
        if not exp.due:
            return "not-due"
        return "deferred" if self._limited(job_id) and self._full(job_id) else "claimed"

    def _settled_by_batch(self, job_id: UUID, expected: int) -> bool:
        """Whether the batched statement answers this request itself (else the single claim)."""
        reason = self._predict(job_id, expected)
        return reason != "not-due" and (reason != "claimed" or not self._limited(job_id)) and (
            reason != "deferred")

    def _claimed(self, job_id: UUID, outcome: ClaimOutcome, who: str, worker: int) -> None:
        exp = self.jobs[job_id]
        attempt = exp.attempts + 1
        assert (job_id, attempt) not in self.holders, ("claimed twice", job_id, attempt,
                                                       self.holders[(job_id, attempt)], who)
        assert outcome.job is not None and (outcome.job.state, outcome.job.attempts) == (
            R, attempt), outcome
        self.holders[(job_id, attempt)] = who
        exp.state, exp.attempts, exp.lease_live, exp.due = R, attempt, True, True
        self.tokens[worker].append((job_id, attempt))

    def _pick_request(self, n: int, stale_by: int) -> tuple[UUID, int]:
        job_id = self._pick(n, lambda e: e.state is P)
        exp = self.jobs.get(job_id)
        return job_id, (exp.attempts if exp else 0) - stale_by

    # -- claims: alone, batched, racing -------------------------------------------------------

    @precondition(lambda self: self.ever)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK, stale_by=STALE)
    def claim(self, worker: int, n: int, stale_by: int) -> None:
        """A lone delivery: the coalescer runs today's single claim at once."""
        job_id, expected = self._pick_request(n, stale_by)
        want = self._predict(job_id, expected)
        outcome = self.batching.claim(job_id, expected)
        assert outcome.reason == want, (outcome.reason, want, self.jobs.get(job_id))
        TALLY[f"lone claim: {want}"] += 1
        if want == "claimed":
            self._claimed(job_id, outcome, f"lone-{worker}", worker)

    @precondition(lambda self: self.ever)
    @rule(worker=st.integers(0, WORKERS - 1), members=st.lists(MEMBER, min_size=2, max_size=6),
          twice=st.lists(st.integers(0, 5), max_size=2))
    def claim_batch(self, worker: int, members: list[tuple[int, int]], twice: list[int]) -> None:
        """The claims of deliveries that arrived together, one statement, some job asked for
        twice (a duplicate message, or a stale one beside the current one). What the batch
        leaves to the single claim (ALONE) is claimed alone after it, as the coalescer does."""
        requests = [self._pick_request(n, s) for n, s in members]
        requests += [requests[i % len(requests)] for i in twice]
        first = {j: i for i, (j, _) in reversed(list(enumerate(requests)))}
        answered = self.batching._claim_many(requests)
        assert len(answered) == len(requests)
        # The statement settles each job's first request, from the rows as they were.
        later: list[int] = []
        for index, ((job_id, expected), got) in enumerate(zip(requests, answered, strict=True)):
            settled = first[job_id] == index and self._settled_by_batch(job_id, expected)
            assert isinstance(got, Alone) != settled, (index, got, requests, self.jobs)
            if isinstance(got, Alone):
                later.append(index)
                continue
            assert isinstance(got, ClaimOutcome)
            want = self._predict(job_id, expected)
            assert got.reason == want, (got.reason, want)
            TALLY[f"batch claim: {want}"] += 1
            if want == "claimed":
                self._claimed(job_id, got, f"batch-{worker}-{index}", worker)
        for index in later:  # then each left alone, in turn
            job_id, expected = requests[index]
            want = self._predict(job_id, expected)
            outcome = self.batching._claim_one(requests[index])
            assert outcome.reason == want, (outcome.reason, want)
            TALLY[f"batch member alone: {want}"] += 1
            if want == "claimed":
                self._claimed(job_id, outcome, f"alone-{worker}-{index}", worker)
        TALLY["claim batches"] += 1

    # -- exits: many at once -----------------------------------------------------------------

    def _request(self, how: str, job_id: UUID, attempt: int, output: Any) -> ExitRequest:
        if how == "complete":
            return self.store.complete_request(job_id, attempt, output)
        if how == "fail":
            return self.store.fail_request(job_id, attempt, "Boom", "handler failed")
        if how == "cancel":
            return self.store.exit_request(Move.CONFIRM_CANCEL, job_id, attempt)
        delay = timedelta(0) if how == "retry-now" else timedelta(hours=1)
        return self.store.retry_later_request(job_id, attempt, "Flaky", "again", delay=delay)

    @precondition(JobMachine._holding)
    @rule(members=st.lists(st.tuples(st.integers(0, WORKERS - 1), PICK, HOW), min_size=2,
                           max_size=6),
          twice=st.lists(st.integers(0, 5), max_size=2))
    def exit_batch(self, members: list[tuple[int, int, str]], twice: list[int]) -> None:
        """The exits of deliveries that ended together, one statement, mixed moves, some for an
        attempt long fenced out, a job twice (its later exits are written alone, after)."""
        requests: list[tuple[str, ExitRequest, Any]] = []
        for worker, n, how in members:
            job_id, held = self._token(worker, n)
            output = {"w": worker, "n": n}
            requests.append((how, self._request(how, job_id, held, output), output))
        requests += [requests[i % len(requests)] for i in twice]
        answered = self.batching._exit_many([r for _, r, _ in requests])
        got = [self._exit_alone(r) if isinstance(a, Alone) else a
               for (_, r, _), a in zip(requests, answered, strict=True)]
        firsts: dict[UUID, int] = {}
        for index, (_, request, _) in enumerate(requests):
            firsts.setdefault(request.job_id, index)
        order = sorted(firsts.values())
        order += [i for i in range(len(requests)) if i not in order]
        for index in order:  # first exits of each job, then the later ones: as written
            how, request, output = requests[index]
            self._follow_exit(how, request, output, got[index])
        TALLY["exit batches"] += 1

    def _exit_alone(self, request: ExitRequest) -> JobMove | JobStoreError:
        try:
            return self.store.exit(request)
        except JobStoreError as refusal:
            return refusal

    def _follow_exit(self, how: str, request: ExitRequest, output: Any,
                     got: JobMove | BaseException) -> None:
        exp = self.jobs.get(request.job_id)
        if exp is None:
            assert isinstance(got, JobNotFound), got
            TALLY["batch exit: purged job refused"] += 1
            return
        if exp.attempts != request.attempt:
            assert isinstance(got, StaleAttempt), got
            assert (got.held, got.current) == (request.attempt, exp.attempts)
            TALLY["batch exit: fenced out"] += 1
            return
        if exp.state is not R:
            assert isinstance(got, IllegalTransition) and not isinstance(got, StaleAttempt), got
            TALLY["batch exit: not running refused"] += 1
            return
        assert isinstance(got, JobMove), got
        assert (request.job_id, request.attempt) in self.holders, "an exit nobody claimed"
        if exp.cancel_requested or how == "cancel":
            self._exit(exp, X, ("", None, None))
        elif how == "complete":
            self._exit(exp, C, ("succeeded", None, output))
        elif how == "fail":
            self._exit(exp, F, ("failed", "Boom", None))
        elif exp.attempts >= exp.attempt_limit:
            self._exit(exp, F, ("failed", "Flaky", None))
        else:
            self._exit(exp, P, ("", None, None))
            exp.due = how == "retry-now"
        assert (got.state, got.attempts) == (exp.state, exp.attempts)
        TALLY[f"batch exit: {how} -> {exp.state.value}"] += 1

    # -- the sweep, and what the base machine claims ------------------------------------------

    def _rescue_want(self) -> tuple[dict[UUID, JobState], set[UUID]]:
        from common.store.maintenance_queries import LEASE_GRACES

        want: dict[UUID, JobState] = {}
        graced: set[UUID] = set()
        for job_id, exp in self.jobs.items():
            if exp.state is R and not exp.lease_live:
                grace = (not exp.cancel_requested and exp.attempts >= exp.attempt_limit
                         and exp.lease_graces < LEASE_GRACES)
                if grace:
                    graced.add(job_id)
                want[job_id] = (X if exp.cancel_requested else
                                F if exp.attempts >= exp.attempt_limit and not grace else P)
        return want, graced

    def _apply_rescue(self, want: dict[UUID, JobState], graced: set[UUID]) -> None:
        for job_id, state in want.items():
            exp = self.jobs[job_id]
            if job_id in graced:
                exp.attempt_limit, exp.lease_graces = exp.attempt_limit + 1, exp.lease_graces + 1
            self._exit(exp, state, ("failed", "LeaseExpired", None))
            exp.due = True
            TALLY[f"race rescue -> {state.value}"] += 1

    @precondition(lambda self: bool(self._live_tokens()))
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK)
    def takeover(self, worker: int, n: int) -> None:
        """As the base machine's, its claim through the holder model."""
        tokens = self._live_tokens()
        job_id, held = tokens[n % len(tokens)]
        self._move_into_past(job_id, lease=True)
        self.rescue(0, lapse_first=False)
        exp = self.jobs.get(job_id)
        if exp is None or exp.state is not P or not exp.due:
            return
        want = self._predict(job_id, exp.attempts)
        outcome = self.batching.claim(job_id, exp.attempts)
        assert outcome.reason == want == "claimed", (outcome, want)
        self._claimed(job_id, outcome, f"takeover-{worker}", worker)
        err = self._refused(
            job_id, lambda: self.store.complete(job_id, held, {"zombie": True}), StaleAttempt)
        assert isinstance(err, StaleAttempt)
        TALLY["fenced-out worker refused"] += 1

    @precondition(lambda self: len(self.jobs) < 5)
    @rule(owner=st.sampled_from(OWNERS))
    def submit_under_a_limit(self, owner: str) -> None:
        """bob's every job is under his owner limit; alice's keyed ones under her key limit."""
        job, _ = self.store.create(owner, NewJob(preset="echo", content="c",
                                                 limit_key=KEY if owner == "alice" else None))
        limit = self.app_settings.default_max_attempts
        self.jobs[job.id] = Expected(owner, limit, attempt_limit=limit)
        self.ever.append(job.id)
        if owner == "alice":
            self.keyed.add(job.id)

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def tables_keep_the_promise(self) -> None:  # the base invariant, then ours
        super().tables_keep_the_promise()
        self._claims_are_held_once()

    def _claims_are_held_once(self) -> None:
        trail = read_tables(self.engine).events
        with self.engine.connect() as conn:
            claimed = Counter((r[0], r[1]) for r in conn.execute(text(
                "SELECT job_id, attempt FROM job_trail WHERE reason = 'claimed'")))
            drift = conn.execute(text(COUNTER_DRIFT)).all()
        for job_id in self.jobs:
            mine = Counter((j, a) for (j, a) in self.holders if j == job_id)
            theirs = Counter({k: v for k, v in claimed.items() if k[0] == job_id})
            assert mine == theirs, ("claims in the trail", job_id, mine, theirs,
                                    trail[job_id])
        assert not drift, drift
        for limited in (lambda j: self.jobs[j].owner == LIMITED_OWNER,
                        lambda j: j in self.keyed):
            running = sum(1 for j, e in self.jobs.items() if e.state is R and limited(j))
            assert running <= LIMIT, ("a limit overrun", running)


# Each running counter against the PROCESSING jobs holding its slot (tests/test_flow_properties).
COUNTER_DRIFT = """
SELECT * FROM (
SELECT 'flow' AS kind, f.owner_id, f.name, f.running, (
    SELECT count(*) FROM jobs j WHERE j.state = 'PROCESSING'
      AND ((f.owner_id = '' AND j.preset = f.name AND j.flow_held & 1 = 1)
           OR (f.owner_id <> '' AND j.owner_id = f.owner_id AND j.limit_key = f.name
               AND j.flow_held & 2 = 2))) AS holders
FROM flow_limits f WHERE f.max_running IS NOT NULL
UNION ALL
SELECT 'owner', r.owner_id, '', r.running, (SELECT count(*) FROM jobs j
    WHERE j.owner_id = r.owner_id AND j.state = 'PROCESSING'
      AND j.holds_slot IS DISTINCT FROM false)
FROM owner_running r) AS d WHERE running <> holders"""
