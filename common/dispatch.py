"""Publishing job messages to the jobs topic.

A message carries the job id and the attempt count it was published for, never the content.
The publisher is created on first use, once per instance (google-cloud-pubsub costs about half a
second to import), honours PUBSUB_EMULATOR_HOST, and batches for latency, not throughput.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from common.logs import log
from common.messages import encode_message
from common.models import DispatchItem
from common.settings import Settings


class Dispatcher:
    """Publishes job messages; `publish` returns the items Pub/Sub accepted."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._client: Any = None
        self._topic = f"projects/{settings.google_cloud_project}/topics/{settings.jobs_topic}"

    def _publisher(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1  # type: ignore[attr-defined]

                self._client = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(
                        max_messages=100, max_bytes=1_000_000, max_latency=0.002
                    )
                )
            return self._client

    def publish(self, items: Iterable[DispatchItem]) -> list[DispatchItem]:
        batch = list(items)
        if not batch:
            return []
        try:
            publisher = self._publisher()
            futures = []
            for item in batch:
                data, attributes = encode_message(item)
                futures.append((item, publisher.publish(self._topic, data, **attributes)))
        except Exception as exc:  # a client that cannot even be built: sweep retries later
            log("ERROR", "publish failed", error=type(exc).__name__, jobs=len(batch))
            return []
        published = []
        # One deadline for the whole batch: a dead Pub/Sub must not cost N x the timeout.
        deadline = time.monotonic() + self._settings.publish_timeout_s
        for item, future in futures:
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0.0))
                published.append(item)
            except Exception as exc:
                log(
                    "WARNING",
                    "publish failed; sweep will re-dispatch",
                    job_id=str(item.id),
                    error=type(exc).__name__,
                )
        return published
