"""Floors for the benchmarks, measured in the same run as what they judge.

`floor` (submit latency): an HTTP function that does one INSERT and one publish, with the same
driver, pool and publisher settings as `submit`, and nothing else. `noop_event` (end to end):
a CloudEvent function that only counts the messages the emulator pushes to it."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import flask
import functions_framework
from sqlalchemy import create_engine, text

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _clients() -> tuple[Any, Any, str]:
    with _lock:
        if not _state:
            from google.cloud import pubsub_v1

            _state["engine"] = create_engine(
                os.environ["DATABASE_URL"],
                pool_size=2,
                max_overflow=1,
                pool_pre_ping=True,
                isolation_level="AUTOCOMMIT",
                skip_autocommit_rollback=True,
            )
            _state["publisher"] = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(
                    max_messages=100, max_bytes=1_000_000, max_latency=0.002
                )
            )
            project, topic = os.environ["GOOGLE_CLOUD_PROJECT"], os.environ["JOBS_TOPIC"]
            _state["topic"] = f"projects/{project}/topics/{topic}"
        return _state["engine"], _state["publisher"], _state["topic"]


def floor(request: flask.Request) -> flask.Response:
    engine, publisher, topic = _clients()
    body = request.get_json()
    with engine.connect() as conn:
        job_id = conn.execute(
            text("INSERT INTO bench_floor (body) VALUES (:b) RETURNING id"),
            {"b": json.dumps(body)},
        ).scalar_one()
    publisher.publish(topic, json.dumps({"job_id": str(job_id)}).encode()).result(timeout=5)
    return flask.Response(
        json.dumps({"id": str(job_id)}), status=202, content_type="application/json"
    )


_counter: list[int] = []


@functions_framework.cloud_event
def noop_event(event: Any) -> None:
    """The floor for the end-to-end benchmark: accepts a pushed message and does nothing but
    count it (one byte appended to a file the benchmark watches)."""
    if not _counter:
        with _lock:
            if not _counter:
                _counter.append(os.open(os.environ["NOOP_COUNT_FILE"],
                                        os.O_WRONLY | os.O_APPEND | os.O_CREAT))
    os.write(_counter[0], b".")
