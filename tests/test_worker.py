"""The worker against real PostgreSQL, one message at a time: every path a delivery can take.
(The same behaviour through a real functions-framework server and the emulator is in
test_process_server.py.)"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.logs import current_traceparent
from common.messaging.job_message import encode_message
from common.messaging.notify import Notifier
from common.presets.base import Handler, JobContext
from common.presets.registry import Registry, load_registry
from common.settings import Settings
from common.store.engine import create_engine_from_settings
from common.store.errors import DatabaseUnavailable, StaleAttempt
from common.store.job_store import JobStore
from common.store.models import DispatchItem, Job
from common.store.states import JobState
from common.worker.runner import Delivery, Worker
from localstack.postgres import free_port
from tests.jobs_helpers import new_job
from tests.support.polling import wait_until
from tests.support.pubsub_pull import pull_acked


def _slow(ctx: JobContext, content: str, options: Any) -> dict[str, str]:
    time.sleep(2)
    return {"late": "yes"}


def _not_json(ctx: JobContext, content: str, options: Any) -> Any:
    return {"when": datetime.now(UTC)}


def _boom(ctx: JobContext, content: str, options: Any) -> Any:
    raise KeyError("surprise")


def _trace_seen(ctx: JobContext, content: str, options: Any) -> Any:
    return {"traceparent": current_traceparent()}


@pytest.fixture()
def tuned(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "enable_chaos_preset": True,
            "results_topic": "",
            "heartbeat_s": 0.1,
            "retry_base_s": 0.0,
            "retry_cap_s": 0.0,
        }
    )


@pytest.fixture()
def worker(store: JobStore, tuned: Settings) -> Worker:
    any_preset = JobStore(store._engine, tuned)  # the worker never checks presets at create
    registry = Registry(
        [
            *load_registry(tuned, chaos_log=any_preset.record_chaos_run)._handlers.values(),
            Handler("slow", _slow, time_limit_s=0.3),
            Handler("not-json", _not_json),
            Handler("boom", _boom),
            Handler("trace-seen", _trace_seen),
        ]
    )
    return Worker(any_preset, registry, Notifier(tuned), tuned)


def submit(worker: Worker, preset: str = "echo", **kw: Any) -> tuple[Job, Delivery]:
    job, _ = worker.store.create("alice", new_job(preset=preset, **kw))
    return job, message_for(job)


def message_for(job: Job | DispatchItem, message_id: str = "m-1") -> Delivery:
    item = job if isinstance(job, DispatchItem) else DispatchItem(
        id=job.id, attempts=job.attempts, traceparent=job.traceparent)
    data, attributes = encode_message(item)
    return Delivery(base64.b64encode(data).decode(), message_id, attributes)


def chaos(worker: Worker, **options: Any) -> tuple[Job, Delivery]:
    max_attempts = options.pop("max_attempts", None)
    return submit(
        worker, "chaos", content="c", metadata={"options": options}, max_attempts=max_attempts
    )


def reasons(worker: Worker, job: Job) -> list[str]:
    return [e.reason for e in worker.store.events("alice", job.id)]


def test_happy_path_writes_the_result_once(worker: Worker) -> None:
    job, delivery = submit(worker, "text-stats", content="One fish. Two fish!")
    outcome = worker.handle(delivery)
    assert outcome.action == "completed"
    done = worker.store.get("alice", job.id)
    assert done.state is JobState.COMPLETED and done.attempts == 1
    assert done.result is not None and done.result.output["words"] == 4
    assert reasons(worker, job) == ["created", "claimed", "completed"]


def test_the_handler_runs_under_its_job_s_trace_and_no_other(worker: Worker) -> None:
    """Handler threads are reused; each run still sees its own job's trace, never a previous
    job's (a handler that logs joins the right trace)."""
    seen = []
    for trace_id in ("a" * 32, "b" * 32, None):
        traceparent = f"00-{trace_id}-{'c' * 16}-01" if trace_id else None
        job, _ = worker.store.create("alice", new_job(preset="trace-seen"),
                                     traceparent=traceparent)
        outcome = worker.handle(message_for(job))
        assert outcome.action == "completed"
        result = worker.store.get("alice", job.id).result
        assert result is not None
        seen.append(result.output["traceparent"])
    assert seen == [f"00-{'a' * 32}-{'c' * 16}-01", f"00-{'b' * 32}-{'c' * 16}-01", None]


def test_the_same_message_twice_runs_the_handler_once(worker: Worker) -> None:
    job, delivery = chaos(worker)
    assert worker.handle(delivery).action == "completed"
    again = worker.handle(delivery)
    assert (again.action, again.detail) == ("skipped", "terminal")
    assert [o for _, _, o in worker.store.chaos_runs([job.id])] == ["succeeded"]


def test_concurrent_duplicates_claim_once(worker: Worker) -> None:
    job, delivery = chaos(worker, sleep_s=0.5)
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(worker.handle(delivery).action))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["completed", "skipped", "skipped", "skipped"]
    assert len(worker.store.chaos_runs([job.id])) == 1


def test_transient_failures_back_off_then_complete(worker: Worker) -> None:
    job, delivery = chaos(worker, fail_times=2)
    assert worker.handle(delivery).action == "retry-scheduled"
    # The message for attempt 0 is now stale; the sweep publishes one for attempt 1.
    assert worker.handle(delivery).detail == "stale-message"
    assert worker.handle(message_for(DispatchItem(id=job.id, attempts=1))).action == (
        "retry-scheduled"
    )
    assert worker.handle(message_for(DispatchItem(id=job.id, attempts=2))).action == "completed"
    assert reasons(worker, job) == [
        "created", "claimed", "retry-scheduled", "claimed", "retry-scheduled", "claimed",
        "completed",
    ]
    errors = [e.details for e in worker.store.events("alice", job.id) if e.reason.startswith("r")]
    assert all(d["error_type"] == "TransientError" for d in errors) and len(errors) == 2
    assert [o for _, _, o in worker.store.chaos_runs([job.id])] == [
        "transient", "transient", "succeeded",
    ]


def test_backoff_sets_the_not_before_time(worker: Worker, tuned: Settings) -> None:
    worker.settings = tuned.model_copy(update={"retry_base_s": 100.0, "retry_cap_s": 1000.0})
    job, delivery = chaos(worker, fail_times=1)
    worker.handle(delivery)
    pending = worker.store.get("alice", job.id)
    assert pending.state is JobState.PENDING and pending.not_before is not None
    delay = (pending.not_before - pending.updated_at).total_seconds()
    assert 50 <= delay <= 100  # attempt 1: uniform(base/2, base)
    not_due = worker.handle(message_for(DispatchItem(id=job.id, attempts=1)))
    assert not_due.detail == "not-due"


def test_attempts_exhausted_end_failed(worker: Worker) -> None:
    job, delivery = chaos(worker, fail_times=10, max_attempts=2)
    worker.handle(delivery)
    outcome = worker.handle(message_for(DispatchItem(id=job.id, attempts=1)))
    assert outcome.action == "failed"
    failed = worker.store.get("alice", job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 2
    assert reasons(worker, job)[-1] == "attempts-exhausted"
    assert failed.result is not None and failed.result.error_type == "TransientError"


def test_permanent_failure_ends_after_one_attempt(worker: Worker) -> None:
    job, delivery = chaos(worker, fail_permanently=True)
    assert worker.handle(delivery).action == "failed"
    failed = worker.store.get("alice", job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 1
    assert failed.result is not None and failed.result.error_type == "PermanentError"
    assert len(worker.store.chaos_runs([job.id])) == 1


def test_invalid_options_fail_without_running(worker: Worker) -> None:
    job, delivery = submit(worker, "chaos", metadata={"options": {"sleep_s": "forever"}})
    assert worker.handle(delivery).action == "failed"
    failed = worker.store.get("alice", job.id)
    assert failed.result is not None and failed.result.error_type == "InvalidJob"
    assert "sleep_s" in (failed.result.error_message or "")
    assert worker.store.chaos_runs([job.id]) == []


def test_unknown_preset_at_the_worker_fails_permanently(worker: Worker) -> None:
    job, delivery = submit(worker, "retired-preset")
    assert worker.handle(delivery).action == "failed"
    result = worker.store.get("alice", job.id).result
    assert result is not None and result.error_type == "UnknownPreset"


def test_output_that_is_not_json_fails_permanently(worker: Worker) -> None:
    job, delivery = submit(worker, "not-json")
    assert worker.handle(delivery).action == "failed"
    result = worker.store.get("alice", job.id).result
    assert result is not None and result.error_type == "InvalidOutput"


def test_an_unexpected_exception_is_transient(worker: Worker) -> None:
    job, delivery = submit(worker, "boom", max_attempts=1)
    assert worker.handle(delivery).action == "failed"
    result = worker.store.get("alice", job.id).result
    assert result is not None and result.error_type == "KeyError"
    assert reasons(worker, job)[-1] == "attempts-exhausted"


def test_time_limit_turns_into_a_retry(worker: Worker) -> None:
    job, delivery = submit(worker, "slow")
    outcome = worker.handle(delivery)
    assert outcome.action == "retry-scheduled"
    event = worker.store.events("alice", job.id)[-1]
    assert event.details["error_type"] == "TimeLimitExceeded"


def test_time_limit_never_exceeds_the_ack_deadline(worker: Worker) -> None:
    chaos_handler = worker.registry.get("chaos")
    assert chaos_handler is not None and chaos_handler.time_limit_s == 600
    limit = worker.time_limit(chaos_handler)
    assert limit == worker.settings.ack_deadline_s - worker.settings.ack_margin_s < 600


def test_cancel_while_running_ends_cancelled(worker: Worker) -> None:
    job, delivery = chaos(worker, sleep_s=30)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(worker.handle(delivery)))
    t.start()
    wait_until(lambda: worker.store.get("alice", job.id).state is JobState.PROCESSING,
               "the job to be PROCESSING")
    assert worker.store.cancel("alice", job.id).cancel_requested
    t.join(timeout=20)
    assert result[0].action == "cancelled"
    assert worker.store.get("alice", job.id).state is JobState.CANCELLED
    wait_until(lambda: len(worker.store.chaos_runs([job.id])) == 1, "the chaos run's record")
    assert worker.store.chaos_runs([job.id])[0][2] == "abandoned"


def test_a_worker_that_lost_its_lease_writes_nothing(worker: Worker, engine: Engine) -> None:
    job, delivery = chaos(worker, sleep_s=30)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(worker.handle(delivery)))
    t.start()
    wait_until(lambda: worker.store.get("alice", job.id).state is JobState.PROCESSING,
               "the job to be PROCESSING")
    with engine.connect() as conn:  # the instance looked dead: its lease ran out
        conn.execute(
            text("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": job.id},
        )
        conn.commit()
    assert [r[:2] for r in worker.store.rescue_expired(10)] == [(job.id, JobState.PENDING)]
    t.join(timeout=20)
    assert result[0].action == "lease-lost"
    again = worker.store.get("alice", job.id)
    assert again.state is JobState.PENDING and again.result is None


def test_a_late_worker_cannot_overwrite_the_takeover(worker: Worker, engine: Engine) -> None:
    job, _ = chaos(worker)
    zombie = worker.store.claim(job.id, lease_s=0.05).job
    assert zombie is not None
    time.sleep(0.1)
    worker.store.rescue_expired(10)
    assert worker.handle(message_for(DispatchItem(id=job.id, attempts=1))).action == "completed"
    with pytest.raises(StaleAttempt):
        worker.store.complete(job.id, zombie.attempts, {"zombie": True})
    done = worker.store.get("alice", job.id)
    assert done.result is not None and done.result.output["attempt"] == 2


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b'{"v": 9, "job_id": "x", "attempts": 0}').decode(),
        base64.b64encode(b'{"v": 1, "attempts": 0}').decode(),
        base64.b64encode(b'{"v": 1, "job_id": "nope", "attempts": 0}').decode(),
        None,
        12,
    ],
)
def test_poison_is_acknowledged_and_recorded_once(
    worker: Worker, engine: Engine, data: Any
) -> None:
    bystander, _ = submit(worker)
    delivery = Delivery(data, "poison-1")
    assert worker.handle(delivery).action == "poison"
    assert worker.handle(delivery).action == "poison"  # a redelivery is acknowledged too
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, reason FROM poison_messages")).all()
    assert len(rows) == 1 and rows[0][0] == "poison-1" and rows[0][1]
    assert worker.store.get("alice", bystander.id).state is JobState.PENDING


def test_poison_excerpt_is_bounded(worker: Worker, engine: Engine) -> None:
    worker.handle(Delivery(base64.b64encode(b"x" * 100_000).decode(), "huge"))
    with engine.connect() as conn:
        excerpt = conn.execute(text("SELECT excerpt FROM poison_messages")).scalar_one()
    assert len(excerpt) == 200


def test_message_for_a_missing_job_is_skipped(worker: Worker) -> None:
    job, delivery = submit(worker)
    worker.store.cancel("alice", job.id)
    assert worker.handle(delivery).detail == "terminal"
    gone = DispatchItem(id="00000000-0000-4000-8000-000000000000", attempts=0)
    assert worker.handle(message_for(gone)).detail == "not-found"


@pytest.fixture()
def dead_worker(worker: Worker, tuned: Settings) -> Iterator[Worker]:
    cut = tuned.model_copy(
        update={
            "database_url": f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/x",
            "db_connect_timeout_s": 1,
        }
    )
    engine = create_engine_from_settings(cut, pool_size=1, max_overflow=0)
    yield Worker(JobStore(engine, cut), worker.registry, worker.notifier, cut)
    engine.dispose()


def test_database_down_raises_so_pubsub_redelivers(
    worker: Worker, dead_worker: Worker
) -> None:
    _, delivery = submit(worker)
    with pytest.raises(DatabaseUnavailable):
        dead_worker.handle(delivery)
    with pytest.raises(DatabaseUnavailable):  # poison cannot be recorded either: redeliver
        dead_worker.handle(Delivery("???", "p"))
    assert worker.handle(delivery).action == "completed"  # the redelivery, once it is back


def test_notifications_only_for_terminal_states(
    worker: Worker, tuned: Settings, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import pubsub_v1

    import common.messaging.pubsub

    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    common.messaging.pubsub.publisher.reset()
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/res-w"})
    sub = subscriber.create_subscription(
        request={"name": f"projects/{emulator.project}/subscriptions/res-w", "topic": topic.name}
    )
    where = {"results_topic": "res-w", "google_cloud_project": emulator.project}
    worker.notifier = Notifier(tuned.model_copy(update=where))
    done, d1 = chaos(worker)
    retried, d2 = chaos(worker, fail_times=1)
    failed, d3 = chaos(worker, fail_permanently=True)
    for d in (d1, d2, d3):
        worker.handle(d)
    assert worker.notifier.flush()
    assert worker.notifier.published == 2
    messages = [json.loads(m.data) for m in pull_acked(sub.name, wait_s=10, want=2)]
    assert sorted(m["state"] for m in messages) == ["COMPLETED", "FAILED"]
    bodies = {m["job_id"]: m for m in messages}
    assert bodies[str(done.id)] == {"job_id": str(done.id), "owner": "alice", "state": "COMPLETED"}
    assert str(retried.id) not in bodies
    assert bodies[str(failed.id)]["state"] == "FAILED"
    subscriber.close()
    common.messaging.pubsub.publisher.reset()


def test_poison_with_nul_and_lone_surrogates_is_still_recorded(
    worker: Worker, engine: Engine
) -> None:
    """A poison message that cannot be recorded would answer 500 and come back forever."""
    delivery = Delivery("\ud800 not base64 \x00", "poison-\ud800\x00")
    assert worker.handle(delivery).action == "poison"
    assert worker.handle(delivery).action == "poison"
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, excerpt FROM poison_messages")).all()
    assert rows == [("poison-\ufffd", "\ufffd not base64 \ufffd")]


def test_a_job_past_ten_thousand_attempts_still_runs(worker: Worker, engine: Engine) -> None:
    """Counts only grow (retries raise the limit): one the old decoder called poison runs."""
    job, _ = submit(worker)
    with engine.connect() as conn:  # a job retried for years, before the bound existed
        conn.execute(text("UPDATE jobs SET attempts = 10500, attempt_limit = 10505 "
                          "WHERE id = :id"), {"id": job.id})
        conn.commit()
    assert worker.handle(message_for(DispatchItem(id=job.id, attempts=10500))).action == (
        "completed"
    )
    assert worker.store.get("alice", job.id).attempts == 10501
