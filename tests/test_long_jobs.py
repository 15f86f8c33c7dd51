"""Long jobs (issue 29) end to end with the local executor: the Worker claims and hands off, a
real child process (`python -m common.worker.execute JOB ATTEMPT`) runs the handler against the
same PostgreSQL, and the sweep's rescue picks up what a dead execution left. Handlers record
each run in `chaos_runs` (tests/long_presets.py), so the tests count runs and events; they
never assert how long anything took."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text

from common.maintenance.budget import Budget
from common.maintenance.rescuer import rescue
from common.messaging.executions import LocalExecutor, StartFailed
from common.messaging.notify import Notifier
from common.presets.registry import load_registry
from common.settings import Settings
from common.store.job_store import JobStore
from common.store.models import Job
from common.store.states import JobState
from common.worker.runner import Worker
from tests.jobs_helpers import new_job
from tests.support.polling import wait_until
from tests.test_worker import message_for

LEASE_S = 2
HEARTBEAT_S = 0.2


@pytest.fixture()
def tuned(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "lease_seconds": LEASE_S, "heartbeat_s": HEARTBEAT_S, "results_topic": "",
        "retry_base_s": 0.0, "retry_cap_s": 0.0, "delivery_retry_base_s": 0.0,
        "delivery_retry_cap_s": 0.0, "preset_modules": ["tests.long_presets"],
        "long_job_executor": "local",
    })


@pytest.fixture()
def child_log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


class Counting:
    """The local executor, counting starts (and failing them while `fail` is set)."""

    def __init__(self, inner: LocalExecutor) -> None:
        self.inner = inner
        self.starts = 0
        self.fail = False

    def start(self, job_id: UUID, attempt: int) -> str:
        if self.fail:
            raise StartFailed("quota exceeded (simulated)")
        self.starts += 1
        return self.inner.start(job_id, attempt)

    def cancel(self, name: str) -> None:
        self.inner.cancel(name)


@pytest.fixture()
def executor(database_url: str, child_log: Path) -> Iterator[Counting]:
    env = {
        **os.environ, "DATABASE_URL": database_url, "LEASE_SECONDS": str(LEASE_S),
        "HEARTBEAT_S": str(HEARTBEAT_S), "RESULTS_TOPIC": "", "DB_PING_IDLE_S": "0",
        "PRESET_MODULES": json.dumps(["tests.long_presets"]), "PYTHONUNBUFFERED": "1",
    }
    with child_log.open("ab") as out:
        inner = LocalExecutor(env, output=out)
        yield Counting(inner)
        for child in inner.children.values():  # whatever a failed test left running
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture()
def worker(store: JobStore, tuned: Settings, executor: Counting) -> Worker:
    any_preset = JobStore(store._engine, tuned)
    return Worker(any_preset, load_registry(tuned), Notifier(tuned), tuned, executor=executor)


def submit(worker: Worker, preset: str, content: str, **kw: Any) -> Job:
    job, _ = worker.store.create("alice", new_job(preset=preset, content=content, **kw))
    return job


def runs(worker: Worker, job: Job) -> list[int]:
    """The attempts a handler run started for, in order."""
    return [attempt for _, attempt, _ in worker.store.chaos_runs([job.id])]


def reasons(worker: Worker, job: Job) -> list[str]:
    return [e.reason for e in worker.store.events("alice", job.id)]


def ended(worker: Worker, job: Job) -> Job:
    wait_until(lambda: worker.store.get("alice", job.id).state.terminal, "the job's end", 60)
    return worker.store.get("alice", job.id)


def child_of(executor: Counting, name: str) -> subprocess.Popen[bytes]:
    return executor.inner.children[name]


def running(worker: Worker, job: Job) -> None:
    """The handler runs, and a heartbeat has stored its progress."""
    wait_until(lambda: worker.store.get("alice", job.id).progress is not None,
               "a heartbeat with the handler's progress", 60)


def test_a_long_job_runs_in_an_execution_and_completes_at_attempt_1(
    worker: Worker, executor: Counting,
) -> None:
    job = submit(worker, "long-sleep", "0.5")
    outcome = worker.handle(message_for(job))
    assert outcome.action == "handed-off" and outcome.detail.startswith("local-")
    done = ended(worker, job)
    assert done.state is JobState.COMPLETED and done.attempts == 1
    assert done.result is not None and done.result.output == {"attempt": 1, "slept_s": 0.5}
    assert runs(worker, job) == [1] and executor.starts == 1
    assert reasons(worker, job) == ["created", "claimed", "completed"]
    assert child_of(executor, outcome.detail).wait(30) == 0
    with worker.store._engine.connect() as conn:
        recorded = conn.execute(text("SELECT execution, execution_attempt FROM jobs "
                                     "WHERE id = :id"), {"id": job.id}).one()
    assert tuple(recorded) == (outcome.detail, 1)


def test_a_second_push_for_the_same_attempt_starts_nothing(
    worker: Worker, executor: Counting,
) -> None:
    job = submit(worker, "long-sleep", "1")
    delivery = message_for(job)
    assert worker.handle(delivery).action == "handed-off"
    again = worker.handle(delivery)
    assert (again.action, again.detail) == ("skipped", "in-progress")
    assert ended(worker, job).state is JobState.COMPLETED
    assert executor.starts == 1 and runs(worker, job) == [1]


def test_a_second_execution_for_a_taken_attempt_runs_nothing(
    worker: Worker, executor: Counting,
) -> None:
    """Even if an attempt's execution were started twice (a start that timed out but did
    start), only the one that took the attempt runs the handler."""
    job = submit(worker, "long-sleep", "1.5")
    first = worker.handle(message_for(job)).detail
    running(worker, job)
    second = executor.inner.start(job.id, 1)
    assert child_of(executor, second).wait(30) == 0  # it ended, having taken nothing
    assert ended(worker, job).state is JobState.COMPLETED
    assert runs(worker, job) == [1]
    assert child_of(executor, first).wait(30) == 0


def test_a_killed_execution_is_rescued_and_completes_at_attempt_2(
    worker: Worker, executor: Counting,
) -> None:
    job = submit(worker, "long-sleep", "1")
    name = worker.handle(message_for(job)).detail
    running(worker, job)
    child = child_of(executor, name)
    child.kill()
    assert child.wait(30) == -signal.SIGKILL
    # No heartbeat any more: the lease lapses, and the sweep's rescue takes the job back.
    wait_until(lambda: worker.store.rescue_expired(10), "the rescue of the lapsed lease", 60)
    back = worker.store.get("alice", job.id)
    assert back.state is JobState.PENDING and back.attempts == 1
    assert worker.handle(message_for(back)).action == "handed-off"
    done = ended(worker, job)
    assert done.state is JobState.COMPLETED and done.attempts == 2
    assert runs(worker, job) == [1, 2] and executor.starts == 2
    assert reasons(worker, job) == [
        "created", "claimed", "lease-expired-retry", "claimed", "completed"]


def test_cancel_stops_a_handler_that_ignores_it_with_its_execution(
    worker: Worker, executor: Counting,
) -> None:
    job = submit(worker, "long-stubborn", "120")
    name = worker.handle(message_for(job)).detail
    running(worker, job)
    worker.store.cancel("alice", job.id)
    done = ended(worker, job)
    assert done.state is JobState.CANCELLED and done.attempts == 1
    # The execution saw the cancel on a heartbeat, wrote it, and ended on its own (exit 0, not
    # killed), taking the handler that never looked with it.
    assert child_of(executor, name).wait(30) == 0
    assert reasons(worker, job).count("cancelled") == 1 and runs(worker, job) == [1]


def test_a_maintenance_event_does_not_lose_the_job(
    worker: Worker, executor: Counting, child_log: Path,
) -> None:
    job = submit(worker, "long-sleep", "2")
    name = worker.handle(message_for(job)).detail
    running(worker, job)
    child = child_of(executor, name)
    child.send_signal(signal.SIGTSTP)
    wait_until(lambda: "heartbeats paused" in child_log.read_text(), "the pause", 30)
    child.send_signal(signal.SIGCONT)
    done = ended(worker, job)
    assert done.state is JobState.COMPLETED and done.attempts == 1
    assert child.wait(30) == 0
    lines = child_log.read_text()
    assert lines.count("heartbeats paused") == 1 and lines.count("heartbeats resume") == 1
    assert runs(worker, job) == [1]
    assert reasons(worker, job) == ["created", "claimed", "completed"]


def test_a_failed_start_is_a_delivery_failure_not_a_job_failure(
    worker: Worker, executor: Counting,
) -> None:
    job = submit(worker, "long-sleep", "0.2", max_attempts=1)
    executor.fail = True
    outcome = worker.handle(message_for(job))
    assert (outcome.action, outcome.detail) == ("start-failed", "PENDING")
    back = worker.store.get("alice", job.id)
    # The attempt it claimed is given back: its one allowed attempt is still to come.
    assert back.state is JobState.PENDING and back.attempts == 1 and back.attempt_limit == 2
    assert reasons(worker, job) == ["created", "claimed", "start-failed"]
    executor.fail = False
    assert worker.handle(message_for(back)).action == "handed-off"
    done = ended(worker, job)
    assert done.state is JobState.COMPLETED and done.attempts == 2
    assert runs(worker, job) == [2] and executor.starts == 1


def test_starts_failing_past_the_delivery_budget_end_the_job_unstartable(
    worker: Worker, executor: Counting, tuned: Settings,
) -> None:
    worker.settings = tuned.model_copy(update={"delivery_budget_s": 0.001})
    worker.store._settings = worker.settings
    job = submit(worker, "long-sleep", "0.2")
    executor.fail = True
    assert worker.handle(message_for(job)).detail == "PENDING"  # the first starts the clock
    back = worker.store.get("alice", job.id)
    outcome = worker.handle(message_for(back))
    assert (outcome.action, outcome.detail) == ("start-failed", "FAILED")
    done = worker.store.get("alice", job.id)
    assert done.result is not None and done.result.error_type == "Unstartable"
    assert reasons(worker, job) == [
        "created", "claimed", "start-failed", "claimed", "unstartable"]
    assert executor.starts == 0 and runs(worker, job) == []


def test_a_short_job_keeps_the_push_path_and_its_statements(
    worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A preset that is not long runs inside the push as before: the claim and the exit, and
    no statement about executions (the hand-off's are the only ones that name them)."""
    statements: list[str] = []
    store_rows = worker.store._rows

    def counted(sql: str, **params: Any) -> list[dict[str, Any]]:
        statements.append(sql)
        return store_rows(sql, **params)

    assert worker.handle(message_for(submit(worker, "echo", "warm"))).action == "completed"
    job = submit(worker, "echo", "hi")  # the instance wrote its preset limits on its first job
    monkeypatch.setattr(worker.store, "_rows", counted)
    assert worker.handle(message_for(job)).action == "completed"
    assert len(statements) == 2, statements  # the claim, the exit
    assert not any("execution" in s for s in statements)


def test_the_sweep_cancels_a_wedged_execution_it_rescues(
    worker: Worker, executor: Counting,
) -> None:
    """An execution alive but heartbeating no more (stopped here with SIGSTOP) loses its lease;
    the rescue takes the job back and cancels the execution through the executor."""
    job = submit(worker, "long-sleep", "30")
    name = worker.handle(message_for(job)).detail
    running(worker, job)
    child = child_of(executor, name)
    child.send_signal(signal.SIGSTOP)
    summaries: list[dict[str, Any]] = []
    wait_until(lambda: summaries.append(rescue(worker.store, worker.notifier, Budget(10), 10,
                                               executor.cancel)) or summaries[-1]["rescued"],
               "the rescue of the lapsed lease", 60)
    assert summaries[-1]["executions_cancelled"] == 1
    assert child.wait(30) == -signal.SIGKILL
    back = worker.store.get("alice", job.id)
    assert back.state is JobState.PENDING and back.attempts == 1 and runs(worker, job) == [1]
