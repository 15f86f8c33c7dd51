"""The rules of tests/test_state_properties.py: what callers, workers and the sweep do to jobs,
each step checked against a model (tests/support/state_model.py) of what it must have done.

Jobs are picked by a drawn number from pools (jobs the move applies to, any stored job, any id
ever created), so that most steps do something and the rest probe refusals. Time moves by
rewriting lease_expires_at, not_before and finished_at in SQL, never by sleeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Engine, text

from common.settings import Settings
from common.store.errors import IdempotencyConflict, IllegalTransition, JobNotFound, StaleAttempt
from common.store.job_store import JobStore
from common.store.maintenance_queries import LEASE_GRACES
from common.store.models import DispatchItem, NewJob
from common.store.states import JobState
from tests.support.state_model import (
    ALLOWED_PAIRS,
    RESULT_STATUS,
    Expected,
    Seen,
    check,
    choose,
    lapsable,
    lapsed,
    read_tables,
    snapshot,
    waiting,
)

P, R = JobState.PENDING, JobState.PROCESSING
C, F, X = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
OWNERS = ("alice", "bob")
WORKERS = 3
MAX_JOBS = 5
LEASE_S = 300.0
PICK = st.integers(min_value=0, max_value=63)
# What happened across the run, so the test can show each path was really taken.
TALLY: Counter[str] = Counter()


class JobMachine(RuleBasedStateMachine):
    engine: Engine
    store: JobStore
    app_settings: Settings

    def __init__(self) -> None:
        super().__init__()
        with self.engine.connect() as conn:
            # No foreign keys to cascade on (migration 0010): the trail goes with the jobs.
            conn.execute(text("DELETE FROM job_events"))  # a job's result is in its row
            conn.execute(text("DELETE FROM jobs"))
            # No limits: another machine (the batch one) may have left some in this database.
            for table in ("owner_limits", "owner_running", "flow_limits"):
                conn.execute(text(f"DELETE FROM {table}"))
        self.jobs: dict[UUID, Expected] = {}
        self.ever: list[UUID] = []  # every id ever created, purged ones too: they stay pickable
        self.keys: dict[tuple[str, str], tuple[UUID, tuple[str, int]]] = {}
        self.tokens: list[list[tuple[UUID, int]]] = [[] for _ in range(WORKERS)]
        self.seen = Seen()
        self.messages = 0

    # -- helpers --------------------------------------------------------------------------------

    def _pick(self, n: int, focus: Callable[[Expected], bool] = lambda e: True) -> UUID:
        """Which job a step acts on: by n modulo 4, a stored job the move applies to (`focus`;
        half the time), any stored job, or any id ever created (purged ones too), falling back
        to the next pool when one is empty."""
        focused = [j for j in self.ever if j in self.jobs and focus(self.jobs[j])]
        live = [j for j in self.ever if j in self.jobs]
        return choose([focused, focused, live, self.ever], n)

    def _pick_where(self, n: int, ok: Callable[[Expected], bool]) -> UUID:
        ids = [j for j in self.ever if j in self.jobs and ok(self.jobs[j])]
        return ids[n % len(ids)]

    def _any(self, ok: Callable[[Expected], bool]) -> bool:
        return any(ok(e) for e in self.jobs.values())

    def _refused(self, job_id: UUID, call: Callable[[], Any], error: type[Exception]) -> Exception:
        """The call raises `error` and leaves the job's row, events and result as they were."""
        before = snapshot(self.engine, job_id)
        with pytest.raises(error) as raised:
            call()
        assert snapshot(self.engine, job_id) == before
        return raised.value

    def _token(self, worker: int, n: int) -> tuple[UUID, int]:
        """A token this worker (or, if it holds none, the next one) holds: by n modulo 4, the
        current attempt of a stored job, an older attempt of one (a zombie's), or any."""
        held = [t for w in range(WORKERS) for t in self.tokens[(worker + w) % WORKERS]]
        current = [t for t in held if t[0] in self.jobs and self.jobs[t[0]].attempts == t[1]]
        zombie = [t for t in held if t[0] in self.jobs and self.jobs[t[0]].attempts > t[1]]
        return choose([current, zombie, zombie, held], n)

    def _worker_move(self, worker: int, n: int, call: Callable[[UUID, int], Any]) -> Any:
        """Run a fenced move for a token the worker holds. A purged job, a stale attempt or a
        job no longer PROCESSING is refused with the typed error and nothing changes; only the
        holder of the current attempt of a PROCESSING job gets through. Returns None if refused."""
        job_id, held = self._token(worker, n)
        exp = self.jobs.get(job_id)
        if exp is None:
            self._refused(job_id, lambda: call(job_id, held), JobNotFound)
            TALLY["worker move on a purged job refused"] += 1
            return None
        if exp.attempts != held:
            err = self._refused(job_id, lambda: call(job_id, held), StaleAttempt)
            assert isinstance(err, StaleAttempt) and (err.held, err.current) == (held, exp.attempts)
            TALLY["fenced-out worker refused"] += 1
            return None
        if exp.state is not R:
            err = self._refused(job_id, lambda: call(job_id, held), IllegalTransition)
            assert not isinstance(err, StaleAttempt) and err.state == exp.state.value
            TALLY["worker move on a job no longer running refused"] += 1
            return None
        return call(job_id, held)

    def _exit(self, exp: Expected, state: JobState, result: tuple[str, str | None, Any]) -> None:
        exp.state, exp.lease_live = state, False
        exp.result = result if RESULT_STATUS[state] else None

    # -- callers --------------------------------------------------------------------------------

    @initialize()
    def two_jobs(self) -> None:
        """Every example starts with a job per owner, so its first steps have work to do: one
        with a single attempt (its first failure or lapse is final), one with two."""
        for owner, limit in zip(OWNERS, (1, 2), strict=True):
            self.submit(owner, "a", limit, None)

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(owner=st.sampled_from(OWNERS), content=st.sampled_from(["a", "b"]),
          max_attempts=st.sampled_from([None, 1, 1, 2, 3]),
          key=st.sampled_from([None, None, "k1", "k2"]))
    def submit(self, owner: str, content: str, max_attempts: int | None, key: str | None) -> None:
        new = NewJob(preset="echo", content=content, max_attempts=max_attempts,
                     idempotency_key=key)
        limit = max_attempts or self.app_settings.default_max_attempts
        prior = self.keys.get((owner, key)) if key else None
        if prior is not None and prior[0] in self.jobs:
            if prior[1] != (content, limit):
                self._refused(prior[0], lambda: self.store.create(owner, new), IdempotencyConflict)
                TALLY["idempotency conflict refused"] += 1
                return
            job, created = self.store.create(owner, new)
            assert (job.id, created) == (prior[0], False)
            TALLY["idempotent replay"] += 1
            return
        job, created = self.store.create(owner, new)
        assert created and job.state is P and job.attempts == 0
        self.jobs[job.id] = Expected(owner, limit, attempt_limit=limit)
        self.ever.append(job.id)
        if key:
            self.keys[(owner, key)] = (job.id, (content, limit))

    @precondition(lambda self: self.ever)
    @rule(n=PICK, foreign=st.sampled_from([False, False, False, True]))
    def cancel(self, n: int, foreign: bool) -> None:
        job_id = self._pick(n, lambda e: e.state is R)
        exp = self.jobs.get(job_id)
        owner = exp.owner if exp else OWNERS[0]
        owner = OWNERS[1 - OWNERS.index(owner)] if foreign else owner
        if exp is None or exp.owner != owner:
            self._refused(job_id, lambda: self.store.cancel(owner, job_id), JobNotFound)
            return
        if exp.state.terminal:
            self._refused(job_id, lambda: self.store.cancel(owner, job_id), IllegalTransition)
            return
        job = self.store.cancel(owner, job_id)
        if exp.state is P:  # ends at once
            exp.state, exp.due = X, True
            TALLY["cancelled while pending"] += 1
        else:  # PROCESSING: only the flag, which the worker honours
            exp.cancel_requested = True
            TALLY["cancel requested while processing"] += 1
        assert (job.state, job.cancel_requested) == (exp.state, exp.cancel_requested)

    @precondition(lambda self: self.ever)
    @rule(n=PICK, foreign=st.sampled_from([False, False, False, True]))
    def retry(self, n: int, foreign: bool) -> None:
        job_id = self._pick(n, lambda e: e.state is F)
        exp = self.jobs.get(job_id)
        owner = exp.owner if exp else OWNERS[0]
        owner = OWNERS[1 - OWNERS.index(owner)] if foreign else owner
        if exp is None or exp.owner != owner:
            self._refused(job_id, lambda: self.store.retry(owner, job_id), JobNotFound)
            return
        if exp.state is not F:
            self._refused(job_id, lambda: self.store.retry(owner, job_id), IllegalTransition)
            return
        job = self.store.retry(owner, job_id)
        exp.state, exp.due, exp.cancel_requested, exp.result = P, True, False, None
        exp.attempt_limit = exp.attempts + exp.max_attempts  # a fresh budget, same numbers
        exp.lease_graces = 0  # and a fresh grace
        assert (job.state, job.attempts, job.attempt_limit) == (P, exp.attempts, exp.attempt_limit)
        TALLY["owner retry"] += 1

    # -- workers --------------------------------------------------------------------------------

    @precondition(lambda self: self.ever)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK,
          stale_by=st.sampled_from([None, 0, 0, 0, 1, 2]))
    def claim(self, worker: int, n: int, stale_by: int | None) -> None:
        """A push for a job, published for its current attempt count or an older one."""
        job_id = self._pick(n, lambda e: e.state is P)
        exp = self.jobs.get(job_id)
        current = exp.attempts if exp else 0
        expected = None if stale_by is None else current - stale_by
        before = snapshot(self.engine, job_id)
        outcome = self.store.claim(job_id, expected_attempts=expected, lease_s=LEASE_S)
        if exp is None:
            reason = "not-found"
        elif exp.state.terminal:
            reason = "terminal"
        elif exp.state is R:
            reason = "in-progress"
        elif expected is not None and expected != exp.attempts:
            reason = "stale-message"
        else:
            reason = "claimed" if exp.due else "not-due"
        assert outcome.reason == reason, (outcome.reason, exp)
        TALLY["claim: " + reason] += 1
        if reason != "claimed":
            assert outcome.job is None and snapshot(self.engine, job_id) == before
            return
        assert exp is not None and outcome.job is not None
        exp.state, exp.attempts, exp.lease_live, exp.due = R, exp.attempts + 1, True, True
        assert (outcome.job.state, outcome.job.attempts) == (R, exp.attempts)
        self.tokens[worker].append((job_id, exp.attempts))

    def _holding(self) -> bool:
        return any(self.tokens)

    @precondition(_holding)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK)
    def heartbeat(self, worker: int, n: int) -> None:
        def beat(job_id: UUID, attempt: int) -> bool:
            return self.store.extend_lease(job_id, attempt, lease_s=LEASE_S)

        job_id, _ = self._token(worker, n)
        asked = self._worker_move(worker, n, beat)
        if asked is not None:
            exp = self.jobs[job_id]
            assert asked == exp.cancel_requested
            exp.lease_live = True
            TALLY["heartbeat"] += 1

    @precondition(_holding)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK,
          how=st.sampled_from(["complete", "fail", "retry-now", "retry-in-an-hour", "cancel"]))
    def finish(self, worker: int, n: int, how: str) -> None:
        """A worker's exit. A cancel requested meanwhile wins over every outcome; a transient
        failure on the last allowed attempt is final."""
        output = {"worker": worker, "n": n}
        calls: dict[str, Callable[[UUID, int], Any]] = {
            "complete": lambda j, a: self.store.complete(j, a, output),
            "fail": lambda j, a: self.store.fail(j, a, "Boom", "handler failed"),
            "retry-now": lambda j, a: self.store.retry_later(j, a, "Flaky", "try again",
                                                             delay=timedelta(0)),
            "retry-in-an-hour": lambda j, a: self.store.retry_later(j, a, "Flaky", "later",
                                                                    delay=timedelta(hours=1)),
            "cancel": lambda j, a: self.store.confirm_cancel(j, a),
        }
        job_id, _ = self._token(worker, n)
        moved = self._worker_move(worker, n, calls[how])
        if moved is None:
            return
        exp = self.jobs[job_id]
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
        assert (moved.state, moved.attempts) == (exp.state, exp.attempts)
        TALLY[f"exit: {how} -> {exp.state.value}"] += 1

    # -- the long-job hand-off (issue 29) ---------------------------------------------------------

    def _unnamed(self, exp: Expected | None, held: int, name: str | None) -> bool:
        """Whether `held` is the current attempt of a PROCESSING job with no execution named for
        it yet (or, given a name, named with that one: the other side of the same hand-off)."""
        return (exp is not None and exp.state is R and exp.attempts == held
                and (exp.execution is None or exp.execution[0] != held
                     or (name is not None and exp.execution[1] == name)))

    @precondition(_holding)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK, name=st.sampled_from(["exec-a", "exec-b"]))
    def record_execution(self, worker: int, n: int, name: str) -> None:
        """process (after the start) or the execution (before the handler) names the attempt's
        execution: the first name wins, the same name again is accepted, another is refused
        and changes nothing, as is any attempt that is not the job's current PROCESSING one."""
        job_id, held = self._token(worker, n)
        exp = self.jobs.get(job_id)
        before = snapshot(self.engine, job_id)
        taken = self.store.record_execution(job_id, held, name)
        ok = self._unnamed(exp, held, name)
        assert (taken is not None) == ok, (taken, exp, held, name)
        if not ok:
            assert snapshot(self.engine, job_id) == before
            second = exp is not None and exp.execution is not None and exp.execution[0] == held
            TALLY["second execution refused" if second else "execution record refused"] += 1
            return
        assert exp is not None and taken is not None
        assert (taken.job.state, taken.job.attempts) == (R, held)
        exp.execution = (held, name)
        TALLY["execution recorded"] += 1

    @precondition(_holding)
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK)
    def start_fails(self, worker: int, n: int) -> None:
        """An execution could not be started: the attempt is given back (attempt_limit + 1) and
        the job waits (a delivery failure), or ends CANCELLED if a cancel was asked. Refused,
        changing nothing, once an execution took the attempt or the attempt moved on."""
        job_id, held = self._token(worker, n)
        exp = self.jobs.get(job_id)
        before = snapshot(self.engine, job_id)
        failure = self.store.start_failed(job_id, held, "quota exceeded")
        ok = self._unnamed(exp, held, None)
        assert (failure is not None) == ok, (failure, exp, held)
        if not ok:
            assert snapshot(self.engine, job_id) == before
            TALLY["start failure refused"] += 1
            return
        assert exp is not None and failure is not None
        want = X if exp.cancel_requested else P
        assert failure.state is want
        exp.attempt_limit += 1
        self._exit(exp, want, ("", None, None))
        exp.due = False  # it waits DELIVERY_RETRY_BASE_S or more
        TALLY[f"start failed -> {want.value}"] += 1

    # -- time passes ----------------------------------------------------------------------------

    @precondition(lambda self: self._any(lapsable) or self._any(waiting))
    @rule(n=PICK, lease_first=st.booleans())
    def time_passes(self, n: int, lease_first: bool) -> None:
        """A live lease lapses, or a retry's backoff elapses: the column is moved into the past."""
        lease = self._any(lapsable) and (lease_first or not self._any(waiting))
        self._move_into_past(self._pick_where(n, lapsable if lease else waiting), lease)

    def _move_into_past(self, job_id: UUID, lease: bool) -> None:
        column = "lease_expires_at" if lease else "not_before"
        with self.engine.connect() as conn:
            conn.execute(text(f"UPDATE jobs SET {column} = now() - interval '1 second' "
                              "WHERE id = :id"), {"id": job_id})
        if lease:
            self.jobs[job_id].lease_live = False
        else:
            self.jobs[job_id].due = True

    # -- the sweep ------------------------------------------------------------------------------

    @rule(n=PICK, lapse_first=st.booleans())
    def rescue(self, n: int, lapse_first: bool) -> None:
        """Lapsed leases: PENDING again while attempts remain, else FAILED; CANCELLED if asked.
        `lapse_first`: a lease runs out just before this pass (an instance died)."""
        if lapse_first and self._any(lapsable):
            self._move_into_past(self._pick_where(n, lapsable), lease=True)
        want: dict[UUID, JobState] = {}
        graced: set[UUID] = set()
        for job_id, exp in self.jobs.items():
            if exp.state is R and not exp.lease_live:
                # The last attempt's lost lease gives one more attempt, once (LEASE_GRACES).
                grace = (not exp.cancel_requested and exp.attempts >= exp.attempt_limit
                         and exp.lease_graces < LEASE_GRACES)
                if grace:
                    graced.add(job_id)
                want[job_id] = (X if exp.cancel_requested else
                                F if exp.attempts >= exp.attempt_limit and not grace else P)
        got = {r.id: r.state for r in self.store.rescue_expired(100)}
        assert got == want
        for job_id, state in want.items():
            exp = self.jobs[job_id]
            if job_id in graced:
                exp.attempt_limit, exp.lease_graces = exp.attempt_limit + 1, exp.lease_graces + 1
                TALLY["rescue: last attempt graced"] += 1
            self._exit(exp, state, ("failed", "LeaseExpired", None))
            exp.due = True
            TALLY[f"rescue -> {state.value}"] += 1

    def _live_tokens(self) -> list[tuple[UUID, int]]:
        return [t for held in self.tokens for t in held if t[0] in self.jobs
                and self.jobs[t[0]].state is R and self.jobs[t[0]].attempts == t[1]]

    @precondition(lambda self: bool(self._live_tokens()))
    @rule(worker=st.integers(0, WORKERS - 1), n=PICK)
    def takeover(self, worker: int, n: int) -> None:
        """An instance stalls past its lease; the sweep rescues the job and another worker
        claims it. The stalled worker then tries to finish: fenced out, nothing changes. (The
        interleaving the other rules reach only by chance, made a step of its own so that every
        run takes it.)"""
        tokens = self._live_tokens()
        job_id, held = tokens[n % len(tokens)]
        self._move_into_past(job_id, lease=True)
        self.rescue(0, lapse_first=False)
        exp = self.jobs.get(job_id)
        if exp is None or exp.state is not P or not exp.due:
            return  # its last attempt, or a cancel was asked: the rescue ended it
        outcome = self.store.claim(job_id, expected_attempts=exp.attempts, lease_s=LEASE_S)
        assert outcome.reason == "claimed" and outcome.job is not None, outcome
        exp.state, exp.attempts, exp.lease_live = R, exp.attempts + 1, True
        self.tokens[worker].append((job_id, exp.attempts))
        TALLY["claim: claimed"] += 1
        err = self._refused(
            job_id, lambda: self.store.complete(job_id, held, {"zombie": True}), StaleAttempt
        )
        assert isinstance(err, StaleAttempt) and (err.held, err.current) == (held, exp.attempts)
        TALLY["fenced-out worker refused"] += 1

    @precondition(lambda self: self._any(lambda e: e.state is P))
    @rule(n=PICK, stale_by=st.sampled_from([0, 0, 1, 2]), exhausted=st.booleans(),
          published=st.booleans())
    def dead_letter(self, n: int, stale_by: int, exhausted: bool, published: bool) -> None:
        """A message Pub/Sub gave up on, for the job's current attempt count or an older one.
        Only a PENDING job at that attempt whose dispatch is outstanding moves: back to PENDING
        to be dispatched again ('delivery-failed'), or FAILED 'Undeliverable' past the delivery
        budget (`exhausted` gives the budget 0 s). Whatever the store decides must be a move of
        the table, reported by its return value; anything else changes nothing."""
        job_id = self._pick(n, lambda e: e.state is P or lapsed(e))
        exp = self.jobs.get(job_id)
        attempt = (exp.attempts if exp else 0) - stale_by
        self.messages += 1
        if published and exp is not None:  # its message went out (guarded by state and attempt)
            self.store.mark_dispatched([DispatchItem(id=job_id, attempts=exp.attempts)])
        before = snapshot(self.engine, job_id)
        with self.engine.connect() as conn:
            row_now = conn.execute(text(
                "SELECT dispatched_at IS NOT NULL, "
                # The budget runs from when delivery first failed, else from when the job
                # became due (the end of its backoff, else when it entered PENDING).
                "GREATEST(CASE WHEN undelivered_since IS NOT NULL THEN undelivered_since "
                "WHEN not_before IS NOT NULL THEN not_before ELSE updated_at END, deferred_at) "
                "<= now() "
                "FROM jobs WHERE id = :id"), {"id": job_id}).one_or_none()
        outstanding, budget_running = (bool(row_now[0]), bool(row_now[1])) if row_now else (
            False, False)
        policy = self.app_settings.model_copy(
            update={"delivery_budget_s": 0.0 if exhausted else 86_400.0})
        moved = self.store.delivery_failed(job_id, attempt, message_id=f"dl-{self.messages}",
                                           policy=policy)
        if exp is None or stale_by > 0 or exp.state is not P or not outstanding:
            assert moved is None and snapshot(self.engine, job_id) == before
            TALLY["dead letter ignored"] += 1
            return
        assert moved is not None and moved.id == job_id, "a due dead letter must settle its job"
        assert (exp.state, moved.state) in ALLOWED_PAIRS
        # A zero budget is used up once it has started: a job not yet due (a retry's backoff
        # still running) that never failed delivery before has not started it.
        assert moved.state is (F if exhausted and budget_running else P)
        row = read_tables(self.engine).jobs[job_id]
        assert row.attempts == exp.attempts  # a delivery failure consumes no attempt
        exp.state, exp.due, exp.lease_live = moved.state, not row.not_due, False
        if moved.state is P and row.not_due:  # re-dispatched later: pin the delay far out, so
            with self.engine.connect() as conn:  # it cannot lapse between two reads
                conn.execute(text("UPDATE jobs SET not_before = now() + interval '1 hour' "
                                  "WHERE id = :id"), {"id": job_id})
        exp.result = ("failed", "Undeliverable", None) if moved.state is F else None
        TALLY[f"dead letter -> {moved.state.value}"] += 1

    @precondition(lambda self: self._any(lambda e: e.state.terminal))
    @rule(n=PICK, everything=st.booleans())
    def purge(self, n: int, everything: bool) -> None:
        """Retention. With zero days every terminal job goes and no live one; with one day, only
        the terminal job whose finished_at was moved two days back."""
        if everything:
            done = [j for j, e in self.jobs.items() if e.state.terminal]
            assert self.store.purge_terminal(0, batch_size=2, max_batches=10) == len(done)
            self._forget(done)
            return
        job_id = self._pick_where(n, lambda e: e.state.terminal)
        with self.engine.connect() as conn:
            conn.execute(text("UPDATE jobs SET finished_at = now() - interval '2 days' "
                              "WHERE id = :id"), {"id": job_id})
        assert self.store.purge_terminal(1, batch_size=10, max_batches=3) == 1
        self._forget([job_id])

    def _forget(self, ids: list[UUID]) -> None:
        for job_id in ids:
            del self.jobs[job_id]
            TALLY["purged"] += 1
        self.keys = {k: v for k, v in self.keys.items() if v[0] in self.jobs}

    # -- after every step -----------------------------------------------------------------------

    @invariant()
    def tables_keep_the_promise(self) -> None:
        check(read_tables(self.engine), self.jobs, self.seen)
        TALLY["invariant checks"] += 1
