"""The instance's Pub/Sub clients (a publisher, a subscriber), and publishing under one deadline.

google-cloud-pubsub costs about half a second to import, so it is loaded on first publish, not
at start-up; the client is then shared by everything in the instance that publishes (job
messages, result notifications). It honours PUBSUB_EMULATOR_HOST.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from common.lazy import Lazy
from common.logs import log


def _new_publisher() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    # Batching tuned for latency: a request publishes one or a few messages.
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=100, max_bytes=1_000_000, max_latency=0.002
        )
    )


def _new_subscriber() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient()


publisher: Lazy[Any] = Lazy(_new_publisher)
subscriber: Lazy[Any] = Lazy(_new_subscriber)  # the sweep pulls dead letters with it
get_publisher = publisher.get
get_subscriber = subscriber.get


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def publish_batch(
    topic: str, messages: Sequence[tuple[bytes, dict[str, str]]], timeout_s: float
) -> list[bool]:
    """Publish each (data, attributes); returns, per message, whether Pub/Sub accepted it.
    One deadline covers the whole batch: a dead Pub/Sub must not cost N x the timeout. Never
    raises: the callers' contracts (sweep re-dispatches, notifications are best effort) decide
    what a failure means."""
    if not messages:
        return []
    try:
        publisher = get_publisher()
        futures = [publisher.publish(topic, data, **attrs) for data, attrs in messages]
    except Exception as exc:  # a client that cannot even be built
        log("ERROR", "publish failed", topic=topic, error=type(exc).__name__, count=len(messages))
        return [False] * len(messages)
    deadline = time.monotonic() + timeout_s
    accepted = []
    for future in futures:
        try:
            future.result(timeout=max(deadline - time.monotonic(), 0.0))
            accepted.append(True)
        except Exception as exc:
            log("WARNING", "publish failed", topic=topic, error=type(exc).__name__)
            accepted.append(False)
    return accepted


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"
