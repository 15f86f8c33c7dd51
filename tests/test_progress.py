"""Live progress: a handler's reports reach `GET /jobs/{id}` through the heartbeat, with no
write of their own, and the final write keeps the last one."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from typing import Any

import pytest

from common.messaging.notify import Notifier
from common.presets.base import Handler, JobContext
from common.presets.builtin import CHECKSUM_CHUNK, ChecksumOptions, checksum
from common.presets.registry import Registry
from common.settings import Settings
from common.store.exit_sql import SQL_EXIT
from common.store.job_store import JobStore
from common.store.states import JobState
from common.store.worker_moves import SQL_EXTEND_LEASE
from common.worker.progress import ProgressBox
from common.worker.runner import Worker
from tests.jobs_helpers import new_job
from tests.process_fixtures import Pipeline
from tests.test_worker import message_for


class CountingStore(JobStore):
    """The real store, counting each statement it sends (one statement = one round trip)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.statements: Counter[str] = Counter()

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        self.statements[sql] += 1
        return super()._rows(sql, **params)


class Stepper:
    """A handler that reports progress many times per step, then waits for the test."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.reported = threading.Event()
        self.calls = 0

    def __call__(self, ctx: JobContext, content: str, options: Any) -> dict[str, Any]:
        for i in range(5000):
            ctx.progress(i / 10_000, "first half")
            self.calls += 1
        self.reported.set()
        self.go.wait(30)
        ctx.progress(1.0, "done")  # returns at once: no heartbeat will carry this one
        self.calls += 1
        return {"ok": True}


def test_reports_ride_on_the_heartbeat_and_the_final_write(
    store: JobStore, settings: Settings
) -> None:
    tuned = settings.model_copy(update={"heartbeat_s": 0.05, "results_topic": ""})
    counting = CountingStore(store._engine, tuned)
    stepper = Stepper()
    worker = Worker(counting, Registry([Handler("stepper", stepper)]), Notifier(tuned), tuned)
    job, _ = counting.create("alice", new_job(preset="stepper"))
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(worker.handle(message_for(job))))
    runner.start()
    assert stepper.reported.wait(30)
    seen = None
    for _ in range(600):  # each read is a round trip; the heartbeat lands within a few
        seen = store.get("alice", job.id)
        if seen.progress is not None:
            break
        threading.Event().wait(0.05)
    assert seen is not None and seen.progress == pytest.approx(0.4999)
    assert seen.progress_note == "first half" and seen.progress_attempt == 1
    assert seen.state is JobState.PROCESSING
    stepper.go.set()
    runner.join(30)
    assert done[0].action == "completed"
    final = store.get("alice", job.id)
    assert final.progress == 1.0 and final.progress_note == "done"
    # 5,001 reports; the writes are the heartbeats (one per HEARTBEAT_S whatever the reports)
    # and the one exit. No statement was sent for a report.
    heartbeats = counting.statements[SQL_EXTEND_LEASE]
    exits = sum(counting.statements[sql] for sql in SQL_EXIT.values())
    assert stepper.calls == 5001 and exits == 1
    # Once per instance, not per job: its first claim reads which preset limits to write.
    from common.store.flow_limits import SQL_PRESET_NAMES

    assert counting.statements[SQL_PRESET_NAMES] == 1
    assert sum(counting.statements.values()) == 3 + heartbeats + exits  # create + claim
    assert heartbeats < 600  # bounded by the reads the test made, not by the reports


def test_a_report_never_fails_the_handler() -> None:
    box = ProgressBox()

    class Loud:
        def __str__(self) -> str:
            raise RuntimeError("no")

    box.report(float("nan"), "ignored")
    assert box.take() is None
    box.report("not a number", None)  # type: ignore[arg-type]
    assert box.take() is None
    box.report(7, Loud())  # type: ignore[arg-type]
    assert box.take() == (1.0, None)
    box.report(-3.5, "x" * 10_000)
    taken = box.take()
    assert taken is not None and taken.fraction == 0.0 and box.take() is None
    box.untake(taken)  # a failed write keeps it for the next heartbeat
    assert box.take() == taken


def test_checksum_hashes_in_chunks_and_reports_each() -> None:
    content = "abcdefghij" * (CHECKSUM_CHUNK // 2)  # five chunks
    reports: list[tuple[float, str | None]] = []
    ctx = JobContext(job_id="j", attempt=1,
                     progress=lambda f, n=None: reports.append((f, n)))
    out = checksum(ctx, content, ChecksumOptions(algorithms=["sha256", "md5"]))
    data = content.encode()
    assert out == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                   "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}
    fractions = [f for f, _ in reports]
    assert len(reports) == 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert reports[0][1] == f"{CHECKSUM_CHUNK} of {len(data)} bytes"


def test_progress_shows_on_get_while_the_job_runs(pipeline: Pipeline) -> None:
    """The whole pipeline: chaos sleeps in small steps, reporting each; HEARTBEAT_S is 0.2 s."""
    job_id = pipeline.chaos(sleep_s=3)
    auth = pipeline.api.auth("alice")
    shown: dict[str, Any] = {}
    for _ in range(300):
        shown = pipeline.api.client.get(f"/jobs/{job_id}?wait=0.1", headers=auth).get_json()
        if shown["progress"] is not None and shown["state"] == "PROCESSING":
            break
    assert shown["state"] == "PROCESSING", shown
    progress = shown["progress"]
    assert 0 < progress["fraction"] < 1 and progress["note"].startswith("slept ")
    assert progress["attempt"] == 1 and progress["at"]
    final = pipeline.api.client.get(f"/jobs/{job_id}?wait=30", headers=auth).get_json()
    assert final["state"] == "COMPLETED"
    assert final["progress"]["fraction"] == 1.0  # the exit stored the last report


def test_a_demo_job_shows_progress_and_stops_when_cancelled(pipeline: Pipeline) -> None:
    """The demo preset (on in make dev) through the whole pipeline: its progress shows while it
    runs, and a cancel ends it long before its 30 s: the last report the exit stored is far
    from done."""
    job_id = pipeline.submit("demo", "30")
    auth = pipeline.api.auth("alice")
    shown: dict[str, Any] = {}
    for _ in range(300):
        shown = pipeline.api.client.get(f"/jobs/{job_id}?wait=0.1", headers=auth).get_json()
        if shown["progress"] is not None and shown["progress"]["fraction"] > 0:
            break
    assert shown["state"] == "PROCESSING", shown
    assert shown["progress"]["note"].startswith("slept ")
    cancel = pipeline.api.client.post(f"/jobs/{job_id}/cancel", headers=auth)
    assert cancel.status_code == 202, cancel.get_json()
    final = pipeline.api.client.get(f"/jobs/{job_id}?wait=30", headers=auth).get_json()
    assert final["state"] == "CANCELLED", final
    assert final["progress"]["fraction"] < 0.5, final["progress"]


def test_a_demo_job_fails_on_request_and_refuses_bad_content(pipeline: Pipeline) -> None:
    failed = pipeline.submit("demo", "0.2", metadata={"options": {"fail": True}})
    job = pipeline.wait(failed, JobState.FAILED, JobState.COMPLETED)
    assert job.state is JobState.FAILED and job.attempts == 1
    retried = pipeline.submit("demo", "0", metadata={"options": {"fail_attempts": 1}})
    job = pipeline.wait(retried, JobState.COMPLETED, JobState.FAILED, tick=pipeline.redispatch)
    assert job.state is JobState.COMPLETED and job.attempts == 2
    refused = pipeline.api.post_job("alice", {"preset": "demo", "content": "ten seconds"})
    assert refused.status_code == 422
    problem = refused.get_json()
    assert [p["name"] for p in problem["invalid_params"]] == ["content"], problem
