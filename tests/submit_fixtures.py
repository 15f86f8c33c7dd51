"""Fixtures for the submit API: the function under functions-framework's test client, with
real PostgreSQL, the real Pub/Sub emulator and real token verification."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine

from common.api.auth import issue_dev_token
from tests.support.google_tokens import GoogleTokenIssuer
from tests.support.paths import ROOT
from tests.support.pubsub_pull import pull_acked

SECRET = "test-hs256-secret-of-enough-length"
AUDIENCE = "https://submit.example.test"


@dataclass
class SubmitHarness:
    client: Any
    env: dict[str, str]
    topic: str
    subscription: str
    google: GoogleTokenIssuer

    def token(self, owner: str) -> str:
        return issue_dev_token(SECRET, owner)

    def auth(self, owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(owner)}"}

    def post_job(self, owner: str, body: Any, **headers: str) -> Any:
        return self.client.post(
            "/jobs",
            data=json.dumps(body),
            content_type="application/json",
            headers={**self.auth(owner), **headers},
        )

    def pull(self, max_messages: int = 50) -> list[dict[str, Any]]:
        """Messages published to the jobs topic since the last pull (acknowledged)."""
        return [
            {"data": json.loads(m.data), "attributes": dict(m.attributes)}
            for m in pull_acked(self.subscription, max_messages=max_messages)
        ]


def reset_instance_state() -> None:
    """Forget the per-instance singletons, as a new Cloud Run instance would."""
    import common.messaging.pubsub
    import common.store.engine
    import functions.process
    import functions.submit
    import functions.sweep
    from common.settings import get_settings

    get_settings.cache_clear()
    if common.store.engine._engine is not None:
        common.store.engine._engine.dispose()
    common.store.engine._engine = None
    functions.submit._api.reset()
    functions.process._worker.reset()
    functions.sweep._api.reset()
    # a new instance builds its clients from its environment
    common.messaging.pubsub.publisher.reset()
    common.messaging.pubsub.subscriber.reset()


@pytest.fixture()
def submit_env(
    database_url: str, emulator: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SubmitHarness]:
    """Environment of a fresh `submit` instance: its own topic, empty tables, both verifiers."""
    from google.cloud import pubsub_v1
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, poison_messages, chaos_runs, "
                          "webhook_deliveries, webhook_secrets, schedules, schedule_events, "
                          "owner_limits, owner_running, flow_limits"))
    google = GoogleTokenIssuer()
    topic_id = f"jobs-{uuid.uuid4().hex[:8]}"
    env = {
        **emulator.env(),
        "DATABASE_URL": database_url,
        "AUTH_HS256_SECRET": SECRET,
        "AUTH_GOOGLE_AUDIENCE": AUDIENCE,
        "AUTH_GOOGLE_CERTS_URL": google.certs_url,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "JOBS_TOPIC": topic_id,
        "PUBLISH_TIMEOUT_S": "5",
        "MAX_CONTENT_BYTES": "10000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(emulator.project, topic_id)
    subscription = subscriber.subscription_path(emulator.project, topic_id + "-check")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": subscription, "topic": topic})
    subscriber.close()
    reset_instance_state()
    try:
        yield SubmitHarness(None, env, topic, subscription, google)
    finally:
        reset_instance_state()
        google.stop()


@pytest.fixture()
def api(submit_env: SubmitHarness) -> SubmitHarness:
    """`submit` behind functions-framework's own test client."""
    from functions_framework import create_app

    submit_env.client = create_app("submit", str(ROOT / "main.py")).test_client()
    return submit_env


@pytest.fixture()
def submit_server(submit_env: SubmitHarness) -> Iterator[str]:
    """`submit` served by a real functions-framework server process, as Cloud Run runs it."""
    from localstack.function_server import FunctionServer

    srv = FunctionServer("submit", ROOT / "main.py", submit_env.env, probe="/healthz")
    try:
        yield srv.url
    finally:
        srv.close()  # the whole process group, even if the test failed
