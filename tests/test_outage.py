"""Our own side down for a while: the worker, the database, or the worker at its maximum
instances. On the real stack (the emulator with production's push subscription and dead-letter
policy, PostgreSQL, a functions-framework `process` server): jobs submitted during the outage
all end COMPLETED within two sweep passes after it, and none FAILED. Passes are counted, not
timed; outages last until the gate or `process` has refused a given number of pushes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from google.cloud import pubsub_v1

from common.maintenance.sweep import Sweeper
from common.messaging.job_message import encode_message
from common.messaging.notify import Notifier
from common.store.models import DispatchItem
from common.store.states import JobState
from tests.process_fixtures import GatedPipeline

JOBS = 4
DONE = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
REFUSED_DB = "database unavailable; Pub/Sub will deliver the message again"


def _until(what: Callable[[], bool], why: str, timeout: float = 60) -> None:
    """Wait for an event (never asserting how long it took; the timeout only ends a hang)."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _states(g: GatedPipeline, ids: list[str]) -> list[JobState]:
    return [g.pipeline.job(i).state for i in ids]


def _recover(g: GatedPipeline, ids: list[str], quiet_s: float = 10) -> tuple[int, list[Any]]:
    """Sweep passes after the outage, as the scheduler would run them, until every job is
    done; returns how many passes that took (at most 3 are run) and their summaries."""
    summaries: list[Any] = []
    for passes in range(1, 4):
        summaries.append(g.sweeper.run())
        assert summaries[-1]["ok"], summaries[-1]
        deadline = time.monotonic() + quiet_s  # the pass's publishes get their chance to run
        while time.monotonic() < deadline and not all(s in DONE for s in _states(g, ids)):
            time.sleep(0.05)
        if all(s in DONE for s in _states(g, ids)):
            return passes, summaries
    return 99, summaries


def _assert_all_completed_once(g: GatedPipeline, ids: list[str]) -> None:
    for job_id in ids:
        job = g.pipeline.job(job_id)
        assert job.state is JobState.COMPLETED and job.attempts == 1, job
        reasons = [e.reason for e in g.pipeline.store.events("hs256:alice", job_id)]
        assert reasons.count("completed") == 1 and "undeliverable" not in reasons


def _outage(
    g: GatedPipeline, refusals: Callable[[], int], during: Callable[[], None],
    **job: Any,
) -> list[str]:
    """Submit JOBS jobs while our side is down; let Pub/Sub fail each push at least twice, and
    run a pass as the scheduler would meanwhile (it must change nothing for the worse)."""
    ids = [g.pipeline.submit("echo", f"during the outage {i}", **job) for i in range(JOBS)]
    _until(lambda: refusals() >= 2 * JOBS, "the pushes were never refused")
    during()
    # And Pub/Sub keeps retrying after the pass. At least one more refusal, not a number per
    # job: with 5 delivery attempts a message, the emulator may dead-letter some before a fourth
    # push (the recovery below settles those too), and it backs off a failing endpoint.
    before = refusals()
    _until(lambda: refusals() > before, "the pushes stopped being retried", timeout=180)
    assert all(s is JobState.PENDING for s in _states(g, ids))
    return ids


@pytest.mark.parametrize("status", [500, 429], ids=["worker-down-500", "max-instances-429"])
def test_worker_outage_then_every_job_completes_within_two_passes(
    gated: GatedPipeline, status: int
) -> None:
    g = gated
    if status == 500:
        g.pipeline.process.stop()  # the worker is really gone; the front answers 500
    else:
        g.gate.refuse(429)  # every instance busy: Cloud Run turns pushes away

    def during() -> None:
        summary = g.sweeper.run()
        # Sent into a worker that shows no sign of life: stranded, published again (they will
        # be refused too, until the worker is back).
        assert summary["ok"] and summary["steps"]["redispatch"]["stranded"] == JOBS, summary

    ids = _outage(g, lambda: g.gate.refused, during)
    if status == 500:
        g.pipeline.process.start()
    g.gate.open()
    passes, summaries = _recover(g, ids)
    assert passes <= 2, summaries
    _assert_all_completed_once(g, ids)


@pytest.mark.parametrize("limited", [False, True], ids=["free", "under-key-limits"])
def test_database_outage_then_every_job_completes_within_two_passes(
    gated: GatedPipeline, limited: bool,
) -> None:
    """`under-key-limits`: the jobs wait on their key's running limit (1) and rate (5 a
    second) as well: a wait is never a failure, and never costs an attempt."""
    g = gated
    job: dict[str, Any] = {}
    if limited:
        g.pipeline.store.set_key_limit("hs256:alice", "model", max_running=1, max_starts=5,
                                       interval_s=1.0)
        job = {"limit_key": "model", "priority": 7}
    g.pipeline.proxy.down()  # process and the sweep lose the database; submit keeps its own

    def during() -> None:
        summary = g.sweeper.run()  # nothing can run, and no dead letter is pulled or acked
        assert summary["ok"] is False
        assert {v["error"] for v in summary["steps"].values()} == {"database unavailable"}

    ids = _outage(g, lambda: g.pipeline.process.log_text().count(REFUSED_DB), during, **job)
    g.pipeline.proxy.up()
    passes, summaries = _recover(g, ids)
    assert passes <= 2, summaries
    _assert_all_completed_once(g, ids)
    if limited:
        g.pipeline.store.delete_key_limit("hs256:alice", "model")


def _dead_letter(g: GatedPipeline, job_id: str) -> None:
    """Publish the job's message to the dead-letter topic, as Pub/Sub does after the
    subscription's max delivery attempts (the emulator may not, in a test's time)."""
    data, attributes = encode_message(DispatchItem(id=UUID(job_id), attempts=0))
    topic = "projects/{}/topics/{}".format(
        g.pipeline.project, g.settings.dead_letter_subscription.removesuffix("-reader")
    )
    pubsub_v1.PublisherClient().publish(topic, data, **attributes).result(timeout=10)


def test_a_dead_lettered_job_is_dispatched_again_and_completes(gated: GatedPipeline) -> None:
    g = gated
    g.gate.refuse(503)
    job_id = g.pipeline.submit("echo", "dead-lettered, never ran")
    _until(lambda: g.gate.refused >= 1, "the push was never refused")
    _dead_letter(g, job_id)
    g.gate.open()
    passes, summaries = _recover(g, [job_id])
    assert passes == 1, summaries
    assert summaries[0]["steps"]["dead_letters"]["delivery_failed"] == 1
    assert summaries[0]["steps"]["dead_letters"]["undeliverable"] == 0
    job = g.pipeline.job(job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 1
    reasons = [e.reason for e in g.pipeline.store.events("hs256:alice", job_id)]
    assert reasons[:2] == ["created", "delivery-failed"] and reasons[-1] == "completed"


def test_past_the_delivery_budget_a_job_ends_undeliverable(gated: GatedPipeline) -> None:
    g = gated
    g.gate.refuse(503)
    job_id = g.pipeline.submit("echo", "never gets through")
    _until(lambda: g.gate.refused >= 1, "the push was never refused")
    _dead_letter(g, job_id)
    tight = g.settings.model_copy(update={"delivery_budget_s": 0.001})  # due longer than that
    sweeper = Sweeper(g.sweeper.service, Notifier(tight), tight)
    summary = sweeper.run()
    assert summary["steps"]["dead_letters"]["undeliverable"] == 1, summary
    job = g.pipeline.job(job_id)
    assert job.state is JobState.FAILED and job.attempts == 0
    assert job.result is not None and job.result.error_type == "Undeliverable"
    assert [e.reason for e in g.pipeline.store.events("hs256:alice", job_id)] == [
        "created", "undeliverable"
    ]
    assert [(n["job_id"], n["state"]) for n in g.pipeline.notifications(wait_s=10)] == [
        (job_id, "FAILED")
    ]
