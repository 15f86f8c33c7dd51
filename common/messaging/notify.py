"""Announcing terminal states on the results topic, so other systems can react to a job's end.

A notification is `{"job_id", "owner", "state"}` (never content or output: subscribers read
those through the API, scoped to the owner). It is best effort by design: it is published
after the state change commits, off the request's path (a background thread publishes what
requests queue, in batches), and failing to publish never changes the job. A subscriber that
must not miss an end reconciles through `GET /jobs?state=...`. On Cloud Run, a notification
queued just before an instance is shut down can be lost, and with CPU allocated only during
requests one can wait for the instance's next request.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable
from uuid import UUID

from common.messaging.pubsub import publish_batch, topic_path
from common.settings import Settings
from common.store.states import JobState

Message = tuple[bytes, dict[str, str]]
# How long the publishing thread waits to fill a batch once it holds a notification.
LINGER_S = 0.02


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = (
            topic_path(settings.google_cloud_project, settings.results_topic)
            if settings.results_topic
            else None
        )
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self.published = 0

    def terminal(self, ends: Iterable[tuple[UUID, str, JobState]]) -> int:
        """Queue (job_id, owner, state) for each terminal state; returns how many were queued.
        Non-terminal states are ignored, so callers can pass every move."""
        if self._topic is None:
            return 0
        messages = [
            (
                json.dumps(
                    {"job_id": str(job_id), "owner": owner, "state": state.value},
                    separators=(",", ":"),
                ).encode(),
                {"job_id": str(job_id), "state": state.value},
            )
            for job_id, owner, state in ends
            if JobState(state).terminal
        ]
        if messages:
            with self._idle:
                self._pending += len(messages)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._drain, daemon=True, name="notifier"
                    )
                    self._thread.start()
            for message in messages:
                self._queue.put(message)
        return len(messages)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued was published (or given up on)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def _drain(self) -> None:
        """Publish what is queued, in batches: after the first message, wait up to LINGER_S for
        more, so that at a steady rate one Publish call carries several notifications (each
        call costs far more CPU than a message in it)."""
        assert self._topic is not None
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + LINGER_S
            while len(batch) < 100:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0
                                 else self._queue.get_nowait())
                except queue.Empty:
                    break
            ok = publish_batch(self._topic, batch, self._settings.publish_timeout_s)
            with self._idle:
                self.published += sum(ok)
                self._pending -= len(batch)
                self._idle.notify_all()
