"""Floors for the benchmarks, measured in the same run as what they judge.

The floor pair, the least a user would write by hand for the same job, with the same driver
(pg8000 through SQLAlchemy), pool size and Pub/Sub client as ours, and no guarantees:

- `submit_floor` (HTTP): parse the JSON body, one INSERT, one publish, answer 202;
- `process_floor` (HTTP, pushed by Pub/Sub): decode the message, one UPDATE marking the row
  done. It reads the push body as `process` does (an HTTP function, not functions-framework's
  CloudEvent conversion, which costs about 0.1 ms a push), so both stand on the same stack.

`noop_event` is the raw push rate of the emulator, kept as information: a CloudEvent function
that only counts the messages pushed to it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any

import flask
import functions_framework
from sqlalchemy import create_engine, text

# The floor's own table, created by the benchmark beside the job store's tables.
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_floor (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
    "body text NOT NULL, done boolean NOT NULL DEFAULT false, "
    "claimed boolean NOT NULL DEFAULT false)"
)

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _clients() -> tuple[Any, Any, str]:
    """Engine and publisher built on first use, as ours are: our pool (DB_POOL_SIZE +
    DB_MAX_OVERFLOW connections, 2 + 1 by default, all kept open as common/store/engine.py
    keeps them), autocommit, and the generated publisher client with one Publish call per
    message, which is how ours publishes."""
    with _lock:
        if not _state:
            from google.auth.credentials import AnonymousCredentials
            from google.pubsub_v1 import PublisherClient

            _state["engine"] = create_engine(
                os.environ["DATABASE_URL"],
                pool_size=(int(os.environ.get("DB_POOL_SIZE", "2"))
                           + int(os.environ.get("DB_MAX_OVERFLOW", "1"))),
                max_overflow=0,
                isolation_level="AUTOCOMMIT",
                skip_autocommit_rollback=True,
            )
            host = os.environ.get("PUBSUB_EMULATOR_HOST")
            _state["publisher"] = (
                PublisherClient(client_options={"api_endpoint": host},
                                credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
                if host else PublisherClient()
            )
            project, topic = os.environ["GOOGLE_CLOUD_PROJECT"], os.environ["JOBS_TOPIC"]
            _state["topic"] = f"projects/{project}/topics/{topic}"
        return _state["engine"], _state["publisher"], _state["topic"]


def submit_floor(request: flask.Request) -> flask.Response:
    from google.pubsub_v1.types import PubsubMessage

    engine, publisher, topic = _clients()
    body = request.get_json()
    with engine.connect() as conn:
        job_id = conn.execute(
            text("INSERT INTO bench_floor (body) VALUES (:b) RETURNING id"),
            {"b": json.dumps(body)},
        ).scalar_one()
    publisher.publish(
        topic=topic,
        messages=[PubsubMessage(data=json.dumps({"job_id": str(job_id)}).encode())],
        timeout=5,
    )
    return flask.Response(
        json.dumps({"id": str(job_id)}), status=202, content_type="application/json"
    )


def _pushed(request: flask.Request) -> Any:
    """The job message in a Pub/Sub push body."""
    return json.loads(base64.b64decode(request.get_json()["message"]["data"]))


@functions_framework.http
def process_floor(request: flask.Request) -> flask.Response:
    engine = _clients()[0]
    message = _pushed(request)
    with engine.connect() as conn:
        conn.execute(text("UPDATE bench_floor SET done = true WHERE id = :id"),
                     {"id": message["job_id"]})
    return flask.Response("OK", status=200)


@functions_framework.http
def process_claiming_floor(request: flask.Request) -> flask.Response:
    """Information only: the least a hand-written worker does to run each job once, whatever
    Pub/Sub delivers twice: claim the row (a guarded UPDATE), run, then mark it done (a second
    UPDATE guarded by the claim, which also stores the output, as any worker that keeps
    results must). No lease, attempts, events, retries or time limit. What it costs over
    `process_floor` is the price of claiming before running (and of storing the output), which
    any design with that guarantee pays."""
    engine = _clients()[0]
    message = _pushed(request)
    with engine.connect() as conn:
        body = conn.execute(
            text("UPDATE bench_floor SET claimed = true WHERE id = :id AND NOT claimed "
                 "RETURNING body"), {"id": message["job_id"]}).scalar_one_or_none()
    if body is None:  # a duplicate delivery: someone claimed it
        return flask.Response("OK", status=200)
    output = json.dumps({"echo": json.loads(body)})  # the echo preset's work
    with engine.connect() as conn:
        conn.execute(text("UPDATE bench_floor SET done = true, body = :out "
                          "WHERE id = :id AND claimed AND NOT done"),
                     {"id": message["job_id"], "out": output})
    return flask.Response("OK", status=200)


_counter: list[int] = []


@functions_framework.cloud_event
def noop_event(event: Any) -> None:
    """The raw push rate: accepts a pushed message and does nothing but count it (one byte
    appended to a file the benchmark watches)."""
    if not _counter:
        with _lock:
            if not _counter:
                _counter.append(os.open(os.environ["NOOP_COUNT_FILE"],
                                        os.O_WRONLY | os.O_APPEND | os.O_CREAT))
    os.write(_counter[0], b".")
