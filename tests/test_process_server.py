"""`process` through a real functions-framework server, fed by the Pub/Sub emulator's push
subscription, with jobs submitted through `submit` and everything stored in real PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

from common.maintenance.sweep import Sweeper, SweepRequest
from common.messaging.job_message import encode_message
from common.messaging.notify import Notifier
from common.store.errors import StaleAttempt
from common.store.models import DispatchItem
from common.store.states import JobState
from tests.jobs_helpers import new_job
from tests.process_fixtures import MAX_DELIVERY_ATTEMPTS, Pipeline

DONE = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
ALICE = "hs256:alice"  # the owner of jobs submitted with an HS256 token for "alice"


def _reasons(pipeline: Pipeline, job_id: str) -> list[str]:
    return [e.reason for e in pipeline.store.events(ALICE, job_id)]


def _publish(pipeline: Pipeline, data: bytes, **attributes: str) -> str:
    publisher = pubsub_v1.PublisherClient()
    return str(publisher.publish(pipeline.api.topic, data, **attributes).result(timeout=10))


def test_happy_path_and_notifications(pipeline: Pipeline) -> None:
    ids = {
        pipeline.submit("echo", "hello"): "echo",
        pipeline.submit("text-stats", "Red fish. Blue fish."): "text-stats",
        pipeline.submit("checksum", "abc"): "checksum",
    }
    for job_id in ids:
        job = pipeline.wait(job_id, *DONE)
        assert job.state is JobState.COMPLETED and job.attempts == 1
        assert _reasons(pipeline, job_id) == ["created", "claimed", "completed"]
    stats = pipeline.store.get(ALICE, next(j for j, p in ids.items() if p == "text-stats"))
    assert stats.result is not None and stats.result.output["words"] == 4
    checksum = pipeline.store.get(ALICE, next(j for j, p in ids.items() if p == "checksum"))
    assert checksum.result is not None and checksum.result.output["sha256"].startswith("ba7816bf")
    notes = pipeline.notifications(wait_s=10, want=3)
    assert sorted((n["job_id"], n["state"], n["owner"]) for n in notes) == sorted(
        (j, "COMPLETED", ALICE) for j in ids
    )


def _cloudevent_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def test_eventarc_cloudevents_structured_and_binary(pipeline: Pipeline) -> None:
    """The production shape (Eventarc), posted directly: the jobs are never published, so only
    these events can run them."""
    structured, _ = pipeline.store.create("alice", new_job(content="structured"))
    binary, _ = pipeline.store.create("alice", new_job(content="binary"))
    source = f"//pubsub.googleapis.com/projects/{pipeline.project}/topics/jobs"

    def data_for(job_id: Any, message_id: str) -> dict[str, Any]:
        raw, attributes = encode_message(DispatchItem(id=job_id, attempts=0))
        return {
            "message": {
                "data": base64.b64encode(raw).decode(),
                "attributes": attributes,
                "messageId": message_id,
                "publishTime": "2026-11-23T12:00:00.000Z",
            },
            "subscription": f"projects/{pipeline.project}/subscriptions/eventarc",
        }

    event = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": source,
        "id": "evt-structured",
        "datacontenttype": "application/json",
        "data": data_for(structured.id, "evt-structured"),
    }
    status = _cloudevent_post(
        pipeline.process.url, json.dumps(event).encode(),
        {"Content-Type": "application/cloudevents+json"},
    )
    assert status == 200
    status = _cloudevent_post(
        pipeline.process.url,
        json.dumps(data_for(binary.id, "evt-binary")).encode(),
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": source,
            "ce-id": "evt-binary",
        },
    )
    assert status == 200
    for job in (structured, binary):
        done = pipeline.job(str(job.id))  # the call returned after the result was written
        assert done.state is JobState.COMPLETED
        assert done.result is not None and done.result.output == {"content": job.content}


def test_a_message_delivered_twice_runs_the_handler_once(pipeline: Pipeline) -> None:
    job_id = pipeline.chaos(sleep_s=0.5)
    data, attributes = encode_message(DispatchItem(id=job_id, attempts=0))
    _publish(pipeline, data, **attributes)  # the duplicate, while the first may be running
    pipeline.wait(job_id, *DONE)
    time.sleep(1.5)  # let the duplicate arrive and be skipped
    assert [o for _, _, o in pipeline.store.chaos_runs([job_id])] == ["succeeded"]
    assert _reasons(pipeline, job_id).count("completed") == 1
    assert "message skipped" in pipeline.process.log_text()


def test_a_late_worker_after_a_takeover_cannot_overwrite(pipeline: Pipeline) -> None:
    job, _ = pipeline.store.create("alice", new_job(content="taken over"))
    zombie = pipeline.store.claim(job.id, lease_s=0.1).job  # a worker that then hangs
    assert zombie is not None
    time.sleep(0.3)
    assert [r[:2] for r in pipeline.store.rescue_expired(10)] == [(job.id, JobState.PENDING)]
    assert pipeline.redispatch() == 1
    done = pipeline.wait(str(job.id), *DONE)
    assert done.state is JobState.COMPLETED and done.attempts == 2
    try:
        pipeline.store.complete(job.id, zombie.attempts, {"zombie": "output"})
        raise AssertionError("the zombie's write was accepted")
    except StaleAttempt as exc:
        assert (exc.held, exc.current) == (1, 2)
    final = pipeline.store.get("alice", job.id)
    assert final.result is not None and final.result.output == {"content": "taken over"}


def test_transient_failures_are_retried_with_backoff_then_complete(pipeline: Pipeline) -> None:
    job_id = pipeline.chaos(fail_times=2)
    done = pipeline.wait(job_id, *DONE, tick=pipeline.redispatch)
    assert done.state is JobState.COMPLETED and done.attempts == 3
    events = pipeline.store.events(ALICE, job_id)
    retries = [e for e in events if e.reason == "retry-scheduled"]
    assert len(retries) == 2 and all(e.details["error_type"] == "TransientError" for e in retries)
    assert all(0.1 <= e.details["delay_s"] <= 1.0 for e in retries)  # RETRY_BASE_S=0.2, cap 1
    claims = [e.at for e in events if e.reason == "claimed"]
    for retry, next_claim in zip(retries, claims[1:], strict=True):
        assert (next_claim - retry.at).total_seconds() >= retry.details["delay_s"]
    assert [o for _, _, o in pipeline.store.chaos_runs([job_id])] == [
        "transient", "transient", "succeeded",
    ]


def test_exhausted_and_permanent_failures(pipeline: Pipeline) -> None:
    exhausted = pipeline.chaos(fail_times=10, max_attempts=2)
    permanent = pipeline.chaos(fail_permanently=True)
    job = pipeline.wait(exhausted, *DONE, tick=pipeline.redispatch)
    assert job.state is JobState.FAILED and job.attempts == 2
    assert _reasons(pipeline, exhausted)[-1] == "attempts-exhausted"
    job = pipeline.wait(permanent, *DONE)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.result is not None and job.result.error_type == "PermanentError"
    assert len(pipeline.store.chaos_runs([permanent])) == 1
    states = {n["job_id"]: n["state"] for n in pipeline.notifications(wait_s=10, want=2)}
    assert states == {exhausted: "FAILED", permanent: "FAILED"}


def test_poison_messages_are_acknowledged_not_redelivered(
    pipeline: Pipeline, engine: Engine
) -> None:
    bystander = pipeline.submit("echo", "unharmed")
    ids = [
        _publish(pipeline, b"not json"),
        _publish(pipeline, b'{"v": 7, "job_id": "x", "attempts": 0}'),
        _publish(pipeline, b'{"v": 1, "job_id": 42, "attempts": "0"}'),
    ]
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as conn:
            seen = set(conn.execute(text("SELECT message_id FROM poison_messages")).scalars())
        if set(ids) <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(ids) <= seen
    time.sleep(2)  # a redelivery (had they been refused) would go on toward the dead letters
    assert pipeline.pull(pipeline.dead_letter_sub) == []
    assert pipeline.wait(bystander, *DONE).state is JobState.COMPLETED
    assert "poison message acknowledged" in pipeline.process.log_text()


def test_database_down_is_redelivered_then_completed(pipeline: Pipeline) -> None:
    pipeline.proxy.down()
    job_id = pipeline.submit("echo", "patience")  # submit's own database path is unaffected
    time.sleep(1.5)  # a few pushes fail with 503 meanwhile (retry policy: 0.2 s .. 1 s)
    assert pipeline.job(job_id).state is JobState.PENDING
    pipeline.proxy.up()
    done = pipeline.wait(job_id, *DONE)
    assert done.state is JobState.COMPLETED and done.attempts == 1
    assert "database unavailable; Pub/Sub will deliver the message again" in (
        pipeline.process.log_text()
    )


def test_cancel_while_running(pipeline: Pipeline) -> None:
    job_id = pipeline.chaos(sleep_s=60)
    pipeline.wait(job_id, JobState.PROCESSING)
    resp = pipeline.api.client.post(f"/jobs/{job_id}/cancel", headers=pipeline.api.auth("alice"))
    assert resp.status_code == 202 and resp.get_json()["state"] == "PROCESSING"
    done = pipeline.wait(job_id, *DONE, timeout=20)
    assert done.state is JobState.CANCELLED and done.result is None
    assert _reasons(pipeline, job_id)[-2:] == ["cancel-requested", "cancelled"]
    notes = pipeline.notifications(wait_s=10)
    assert [(n["job_id"], n["state"]) for n in notes] == [(job_id, "CANCELLED")]


def test_the_subscription_dead_letters_what_never_gets_through(pipeline: Pipeline) -> None:
    """process cannot reach the database, so Pub/Sub gives up on the message. The job never
    ran: that is a delivery failure, not a job failure. It goes back to be dispatched again,
    and completes once the database is back."""
    pipeline.proxy.down()  # process cannot reach the database; the sweep (direct) can
    job_id = pipeline.submit("echo", "patience")
    deadline = time.monotonic() + 60
    where = {"dead_letter_subscription": pipeline.dead_letter_sub.rsplit("/", 1)[1],
             "delivery_retry_base_s": 0.0}
    settings = pipeline.settings.model_copy(update=where)
    sweeper = Sweeper(pipeline.service, Notifier(settings), settings)
    failed = 0
    while not failed:
        assert time.monotonic() < deadline + 30, "nothing reached the dead-letter topic"
        step = sweeper.run(SweepRequest(steps=["dead_letters"]))["steps"]["dead_letters"]
        failed = step["delivery_failed"]
        assert step["undeliverable"] == 0
    refusals = "database unavailable; Pub/Sub will deliver the message again"
    assert pipeline.process.log_text().count(refusals) == MAX_DELIVERY_ATTEMPTS
    back = pipeline.job(job_id)
    assert back.state is JobState.PENDING and back.attempts == 0 and back.result is None
    assert back.dispatched_at is None  # in the re-dispatch queue
    assert _reasons(pipeline, job_id) == ["created", "delivery-failed"]
    event = pipeline.store.events(ALICE, job_id)[-1]
    assert event.details["delivery_failures"] == 1 and event.details["message_id"]
    pipeline.proxy.up()
    # One pass dispatches it again; this time it gets through.
    assert sweeper.run()["steps"]["redispatch"]["published"] == 1
    done = pipeline.wait(job_id, *DONE)
    assert done.state is JobState.COMPLETED and done.attempts == 1
    assert _reasons(pipeline, job_id) == ["created", "delivery-failed", "claimed", "completed"]
    assert [(n["job_id"], n["state"]) for n in pipeline.notifications(wait_s=10)] == [
        (job_id, "COMPLETED")
    ]
