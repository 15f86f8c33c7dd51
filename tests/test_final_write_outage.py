"""A database blip during the last attempt's final write (issue #25, bug 4).

The worker reaches PostgreSQL through a TCP proxy that the handler itself cuts as it returns,
so the write of its result meets a really dead connection and a refused reconnect. A handler
that succeeded must never turn into a FAILED job for that: its result is written once the
database is back (within the message's window, or by the redelivery to the instance that kept
it), or, the instance gone, the sweep's rescue runs the job again even though it was its last
attempt. Every job here has max_attempts 1. Events are counted, never time.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, text

from common.messaging.job_message import encode_message
from common.messaging.notify import Notifier
from common.presets.base import Handler, JobContext
from common.presets.registry import Registry
from common.settings import Settings
from common.store.engine import create_engine_from_settings
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.store.models import DispatchItem, Job
from common.store.states import JobState
from common.worker.runner import Delivery, Worker
from tests.jobs_helpers import new_job
from tests.process_fixtures import _through
from tests.support.polling import wait_until
from tests.support.tcp_proxy import TcpProxy

ANSWER = {"answer": 42}


@dataclass
class Rig:
    proxy: TcpProxy
    settings: Settings
    engine: Engine
    runs: list[str] = field(default_factory=list)

    def worker(self) -> Worker:
        """A worker instance (a fresh one has kept nothing) whose handler cuts the database
        as it returns its result."""
        def cut_then_succeed(ctx: JobContext, content: str, options: Any) -> dict[str, int]:
            self.runs.append(ctx.job_id)
            self.proxy.down()
            return ANSWER

        registry = Registry([Handler("cut-then-succeed", cut_then_succeed)])
        return Worker(JobStore(self.engine, self.settings), registry, Notifier(self.settings),
                      self.settings)


@pytest.fixture()
def rig(store: JobStore, settings: Settings) -> Iterator[Rig]:
    parts = urlsplit(settings.database_url or "")
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    tuned = settings.model_copy(update={
        "database_url": _through(settings.database_url or "", proxy.port),
        "db_connect_timeout_s": 2, "results_topic": "", "heartbeat_s": 0.2,
        "ack_deadline_s": 60, "ack_margin_s": 2.0,
    })
    engine = create_engine_from_settings(tuned, pool_size=2, max_overflow=0)
    try:
        yield Rig(proxy, tuned, engine)
    finally:
        engine.dispose()
        proxy.close()


def _submit(store: JobStore) -> tuple[Job, Delivery]:
    any_preset = JobStore(store._engine, store._settings)  # the test's own preset
    job, _ = any_preset.create("alice", new_job(preset="cut-then-succeed", max_attempts=1))
    data, attributes = encode_message(DispatchItem(id=job.id, attempts=job.attempts))
    return job, Delivery(base64.b64encode(data).decode(), "m-1", attributes)


def _handle_in_background(worker: Worker, delivery: Delivery) -> tuple[threading.Thread,
                                                                        dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["outcome"] = worker.handle(delivery)
        except DatabaseUnavailable as exc:
            out["raised"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _sweep_after_the_lease(store: JobStore, engine: Engine, job: Job) -> None:
    """The lease has run out (rewritten, not waited for) and the sweep's rescue runs."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                          "WHERE id = :id AND state = 'PROCESSING'"), {"id": job.id})
    store.rescue_expired(100)


def test_a_blip_in_the_last_attempt_s_final_write_still_completes_the_job(
    store: JobStore, engine: Engine, rig: Rig
) -> None:
    """The database is cut as the handler returns and comes back while the message is still
    being answered: the worker's retries write the result. (Before the fix the write was
    given up after about 3.7 s and the message acknowledged; the sweep then ended the job
    FAILED 'LeaseExpired' and the result was lost.)"""
    job, delivery = _submit(store)
    thread, out = _handle_in_background(rig.worker(), delivery)
    # Back once the worker has been refused twelve times, or has answered: whichever comes
    # first. (The old code gave up after five tries, ten refused connections.)
    wait_until(lambda: rig.proxy.refused >= 12 or not thread.is_alive(),
               "twelve refused connections or an answer", timeout=60)
    rig.proxy.up()
    thread.join(timeout=120)
    _sweep_after_the_lease(store, engine, job)
    final = store.get("alice", job.id)
    assert (final.state, final.attempts) == (JobState.COMPLETED, 1), (final, out)
    assert final.result is not None and final.result.output == ANSWER
    assert out["outcome"].action == "completed" and rig.runs == [str(job.id)]


def test_past_the_message_s_window_the_outcome_is_kept_and_the_redelivery_writes_it(
    store: JobStore, engine: Engine, rig: Rig
) -> None:
    """Still down when the message's answer is due: the worker does not acknowledge (it raises
    DatabaseUnavailable, which `process` answers 503, so Pub/Sub delivers again) and keeps the
    outcome; the redelivery to this instance writes it without running the handler again."""
    rig.settings = rig.settings.model_copy(update={"ack_deadline_s": 10})  # a 9 s window
    worker = rig.worker()
    job, delivery = _submit(store)
    thread, out = _handle_in_background(worker, delivery)
    thread.join(timeout=120)
    assert "raised" in out, out  # not acknowledged
    assert len(worker.kept) == 1
    rig.proxy.up()
    again = worker.handle(delivery)  # Pub/Sub's redelivery of the same message
    assert again.action == "completed", again
    final = store.get("alice", job.id)
    assert final.state is JobState.COMPLETED and final.result is not None
    assert final.result.output == ANSWER and rig.runs == [str(job.id)]
    assert len(worker.kept) == 0


def test_the_instance_gone_the_last_attempt_runs_again(
    store: JobStore, engine: Engine, rig: Rig
) -> None:
    """The instance that kept the outcome is gone and the redelivery reaches another one: it
    finds the job PROCESSING and passes. When the lease runs out the sweep gives the job one
    more attempt, although that was its last, and the job runs again and completes."""
    rig.settings = rig.settings.model_copy(update={"ack_deadline_s": 10})
    job, delivery = _submit(store)
    thread, out = _handle_in_background(rig.worker(), delivery)
    thread.join(timeout=120)
    assert "raised" in out, out
    rig.proxy.up()
    other = rig.worker()
    assert other.handle(delivery).action == "skipped"
    _sweep_after_the_lease(store, engine, job)
    rescued = store.get("alice", job.id)
    assert (rescued.state, rescued.attempts, rescued.attempt_limit) == (JobState.PENDING, 1, 2)
    data, attributes = encode_message(DispatchItem(id=job.id, attempts=rescued.attempts))
    fresh = Delivery(base64.b64encode(data).decode(), "m-2", attributes)
    # This run cuts the database too, and it comes back within the window this time.
    refused = rig.proxy.refused
    thread, out = _handle_in_background(other, fresh)
    wait_until(lambda: rig.proxy.refused > refused or not thread.is_alive(),
               "a refused connection or an answer", timeout=60)
    rig.proxy.up()
    thread.join(timeout=120)
    final = store.get("alice", job.id)
    assert (final.state, final.attempts) == (JobState.COMPLETED, 2), (final, out)
    assert final.result is not None and final.result.output == ANSWER
    assert rig.runs == [str(job.id)] * 2
