"""The local pipeline for end-to-end tests: `submit` (functions-framework test client), `process`
as a real functions-framework server fed by the emulator's push subscription (with its
dead-letter topic and retry policy, as in production), the results topic, and a proxy in front
of PostgreSQL that a test can cut to take the database away from `process` alone."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine

from common.maintenance.sweep import Sweeper
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.service import JobService
from common.settings import Settings, load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from common.store.models import Job
from common.store.states import JobState
from localstack.function_server import FunctionServer
from localstack.topology import Topology
from tests.submit_fixtures import SubmitHarness
from tests.support.http_gate import HttpGate
from tests.support.paths import ROOT
from tests.support.pubsub_pull import pull_acked
from tests.support.tcp_proxy import TcpProxy

MAX_DELIVERY_ATTEMPTS = 5


@dataclass
class Pipeline:
    api: SubmitHarness
    process: FunctionServer
    proxy: TcpProxy
    store: JobStore
    service: JobService
    settings: Settings
    project: str
    results_sub: str
    dead_letter_sub: str
    push_sub: str

    def submit(self, preset: str = "echo", content: str = "hi", owner: str = "alice",
               **body: Any) -> str:
        resp = self.api.post_job(owner, {"preset": preset, "content": content, **body})
        assert resp.status_code == 202, resp.get_json()
        return str(resp.get_json()["id"])

    def chaos(self, owner: str = "alice", max_attempts: int | None = None, **options: Any) -> str:
        extra = {"max_attempts": max_attempts} if max_attempts else {}
        return self.submit("chaos", "c", owner, metadata={"options": options}, **extra)

    def job(self, job_id: str) -> Job:
        job = self.store.get_for_worker(job_id)
        assert job is not None
        return job

    def wait(self, job_id: str, *states: JobState, timeout: float = 60,
             tick: Callable[[], Any] | None = None) -> Job:
        """Poll until the job is in one of `states`; `tick` runs each round (a sweep step)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} stayed {job.state} (attempts {job.attempts}); process log:\n"
                    + self.process.log_text()[-3000:]
                )
            if tick is not None:
                tick()
            time.sleep(0.1)

    def redispatch(self) -> int:
        """The sweep's re-dispatch step: publish what is due (e.g. after a backoff)."""
        return self.service.dispatch_due(100)

    def pull(self, subscription: str, wait_s: float = 0, want: int = 1) -> list[Any]:
        """Messages on a pull subscription (acknowledged), waiting up to `wait_s` for `want`."""
        return pull_acked(subscription, wait_s=wait_s, want=want)

    def notifications(self, wait_s: float = 0, want: int = 1) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.pull(self.results_sub, wait_s, want)]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    creds = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{port}"))


@pytest.fixture()
def pipeline(
    api: SubmitHarness, engine: Engine, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    from google.cloud import pubsub_v1

    tag = uuid.uuid4().hex[:8]
    results_topic, dead_topic = f"results-{tag}", f"dead-{tag}"
    monkeypatch.setenv("ENABLE_CHAOS_PRESET", "true")
    monkeypatch.setenv("ENABLE_DEMO_PRESET", "true")
    monkeypatch.setenv("RESULTS_TOPIC", results_topic)
    db = urlsplit(api.env["DATABASE_URL"])
    proxy = TcpProxy(db.hostname or "127.0.0.1", db.port or 5432)
    env = {
        **api.env,
        "DATABASE_URL": _through(api.env["DATABASE_URL"], proxy.port),
        "DB_CONNECT_TIMEOUT_S": "2",
        "ENABLE_CHAOS_PRESET": "true",
        "ENABLE_DEMO_PRESET": "true",
        "RESULTS_TOPIC": results_topic,
        "LEASE_SECONDS": "5",
        "HEARTBEAT_S": "0.2",
        "RETRY_BASE_S": "0.2",
        "RETRY_CAP_S": "1",
        "ACK_DEADLINE_S": "60",
        "ACK_MARGIN_S": "5",
    }
    process = FunctionServer("process", ROOT / "main.py", env)
    project = emulator.project
    topology = Topology(
        project=project,
        jobs_topic=api.topic.rsplit("/", 1)[1],
        push_subscription=f"process-{tag}",
        dead_letter_topic=dead_topic,
        dead_letter_subscription=f"{dead_topic}-reader",
        results_topic=results_topic,
        max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        min_backoff_s=0.2,
        max_backoff_s=1.0,
    )
    topology.create(process.url + "/")
    results_sub = topology.path("subscriptions", results_topic + "-reader")
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(
        request={"name": results_sub, "topic": topology.path("topics", results_topic)}
    )
    subscriber.close()
    dead_sub = topology.path("subscriptions", topology.dead_letter_subscription)
    push_sub = topology.path("subscriptions", topology.push_subscription)
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k.isupper()
                                and k.lower() in Settings.model_fields})
    settings = settings.model_copy(update={"database_url": api.env["DATABASE_URL"]})
    store = JobStore(engine, settings)
    try:
        yield Pipeline(
            api, process, proxy, store, JobService(store, Dispatcher(settings)), settings,
            project, results_sub, dead_sub, push_sub,
        )
    finally:
        topology.delete_push_subscription()  # stop pushing first
        process.close()
        proxy.close()


@dataclass
class GatedPipeline:
    """The pipeline with an HttpGate between the push subscription and `process`, and a sweep
    whose database path goes through the same cuttable proxy as `process`'s."""

    pipeline: Pipeline
    gate: HttpGate
    sweeper: Sweeper
    settings: Settings


@pytest.fixture()
def gated(pipeline: Pipeline) -> Iterator[GatedPipeline]:
    gate = HttpGate(pipeline.process.url)
    tag = pipeline.push_sub.rsplit("/", 1)[1]
    project = pipeline.project
    topology = Topology(
        project=project,
        jobs_topic=pipeline.api.topic.rsplit("/", 1)[1],
        push_subscription=f"gated-{tag}",
        # The pipeline's dead-letter subscription is named after its topic: "<topic>-reader".
        dead_letter_topic=pipeline.dead_letter_sub.rsplit("/", 1)[1].removesuffix("-reader"),
        dead_letter_subscription=pipeline.dead_letter_sub.rsplit("/", 1)[1],
        results_topic=pipeline.settings.results_topic,
        max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        min_backoff_s=0.2,
        max_backoff_s=1.0,
    )
    # Pushes go through the gate only: the direct subscription goes away first.
    Topology(project=project, push_subscription=tag).delete_push_subscription()
    topology.create(gate.url + "/")
    settings = pipeline.settings.model_copy(update={
        "database_url": _through(pipeline.settings.database_url or "", pipeline.proxy.port),
        "dead_letter_subscription": topology.dead_letter_subscription,
        "stall_after_s": 0.5,
        "delivery_retry_base_s": 0.0,
        "sweep_time_budget_s": 30.0,
    })
    engine = create_engine_from_settings(settings, pool_size=2, max_overflow=1)
    store = JobStore(engine, settings)
    sweeper = Sweeper(JobService(store, Dispatcher(settings)), Notifier(settings), settings)
    try:
        yield GatedPipeline(pipeline, gate, sweeper, settings)
    finally:
        topology.delete_push_subscription()
        gate.close()
        engine.dispose()

