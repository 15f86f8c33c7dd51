"""Publishing job messages to the jobs topic.

A message carries the job id and the attempt count it was published for, never the content.
A message that fails to publish is not an error for the caller: the job stays undispatched in
the database and the sweep publishes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from common.logs import log
from common.messaging.job_message import encode_message
from common.messaging.pubsub import publish_batch, topic_path
from common.settings import Settings
from common.store.models import DispatchItem


class Dispatcher:
    """Publishes job messages; `publish` returns the items Pub/Sub accepted."""

    def __init__(self, settings: Settings, *, fault_rate: float = 0.0) -> None:
        self._settings = settings
        self._topic = topic_path(settings.google_cloud_project, settings.jobs_topic)
        self._fault_rate = fault_rate

    def publish(self, items: Iterable[DispatchItem]) -> list[DispatchItem]:
        batch = list(items)
        if self._fault_rate and random.random() < self._fault_rate:  # injected (chaos runs)
            log("WARNING", "publish dropped by fault injection", jobs=len(batch))
            return []
        accepted = publish_batch(
            self._topic, [encode_message(i) for i in batch], self._settings.publish_timeout_s
        )
        published = [item for item, ok in zip(batch, accepted, strict=True) if ok]
        if len(published) < len(batch):
            log("WARNING", "some job messages were not published; sweep will re-dispatch",
                failed=len(batch) - len(published))
        return published

    def publish_taken(
        self, taken: list[DispatchItem], release: Callable[[Iterable[DispatchItem]], object]
    ) -> int:
        """Publish jobs already stamped dispatched (taken by a store query), and `release` the
        stamp of each one Pub/Sub refused, so the sweep publishes it again at once rather than
        after REDISPATCH_AFTER_S. Returns how many were published."""
        if not taken:
            return 0
        published = self.publish(taken)
        done = {item.id for item in published}
        release(item for item in taken if item.id not in done)
        return len(published)
