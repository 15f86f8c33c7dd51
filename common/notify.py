"""Announcing terminal states on the results topic, so other systems can react to a job's end.

A notification is `{"job_id", "owner", "state"}` (never content or output: subscribers read
those through the API, scoped to the owner). It is best effort by design: it is published
after the state change commits, and failing to publish never changes the job. A subscriber that
must not miss an end reconciles through `GET /jobs?state=...`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from uuid import UUID

from common.pubsub import publish_batch, topic_path
from common.settings import Settings
from common.states import JobState


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = (
            topic_path(settings.google_cloud_project, settings.results_topic)
            if settings.results_topic
            else None
        )

    def terminal(self, ends: Iterable[tuple[UUID, str, JobState]]) -> int:
        """Announce (job_id, owner, state) for each terminal state; returns how many Pub/Sub
        accepted. Non-terminal states are ignored, so callers can pass every move."""
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
        return sum(publish_batch(self._topic, messages, self._settings.publish_timeout_s))
