"""Topics and subscriptions as production has them (infra/ makes the same in Terraform):

- the jobs topic, with a push subscription to `process` whose ack deadline matches the worker's,
  a retry policy (backoff between redeliveries) and a dead-letter policy;
- the dead-letter topic and the pull subscription the sweep settles dead letters from;
- the results topic, where terminal states are announced.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Topology:
    project: str
    jobs_topic: str = "jobs"
    push_subscription: str = "jobs-process"
    dead_letter_topic: str = "jobs-dead"
    dead_letter_subscription: str = "jobs-dead-letters"
    results_topic: str = "job-results"
    ack_deadline_s: int = 60
    max_delivery_attempts: int = 5
    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def path(self, kind: str, name: str) -> str:
        return f"projects/{self.project}/{kind}/{name}"

    def create(self, process_url: str | None, *, pull: bool = False) -> None:
        """Make every topic and subscription (those that exist are left as they are). Without
        `process_url` the jobs topic gets no push subscription. With `pull`, the jobs
        subscription is made as the push one, with the same ack deadline, retry and dead-letter
        policies, but without a push endpoint: `make dev` pulls it and pushes several messages
        at once itself (localstack/push_relay.py)."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud import pubsub_v1
        from google.protobuf import duration_pb2

        def duration(seconds: float) -> Any:
            return duration_pb2.Duration(
                seconds=int(seconds), nanos=round(seconds % 1 * 1e9)
            )

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        requests: list[tuple[Any, dict[str, Any]]] = [
            (publisher.create_topic, {"name": self.path("topics", t)})
            for t in (self.jobs_topic, self.dead_letter_topic, self.results_topic)
        ]
        requests.append((subscriber.create_subscription, {
            "name": self.path("subscriptions", self.dead_letter_subscription),
            "topic": self.path("topics", self.dead_letter_topic),
        }))
        if process_url or pull:
            requests.append((subscriber.create_subscription, {
                "name": self.path("subscriptions", self.push_subscription),
                "topic": self.path("topics", self.jobs_topic),
                **({} if pull else {"push_config": {"push_endpoint": process_url}}),
                "ack_deadline_seconds": self.ack_deadline_s,
                "dead_letter_policy": {
                    "dead_letter_topic": self.path("topics", self.dead_letter_topic),
                    "max_delivery_attempts": self.max_delivery_attempts,
                },
                "retry_policy": {
                    "minimum_backoff": duration(self.min_backoff_s),
                    "maximum_backoff": duration(self.max_backoff_s),
                },
            }))
        try:
            for create, request in requests:
                with contextlib.suppress(AlreadyExists):
                    create(request=request)
        finally:
            subscriber.close()

    def delete_push_subscription(self) -> None:
        """Stop pushing (before the process server goes away)."""
        from google.api_core.exceptions import NotFound
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        try:
            subscriber.delete_subscription(
                request={"subscription": self.path("subscriptions", self.push_subscription)}
            )
        except NotFound:
            pass
        finally:
            subscriber.close()

    def env(self) -> dict[str, str]:
        """The functions' settings that name these resources."""
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "JOBS_TOPIC": self.jobs_topic,
            "RESULTS_TOPIC": self.results_topic,
            "DEAD_LETTER_SUBSCRIPTION": self.dead_letter_subscription,
            "ACK_DEADLINE_S": str(self.ack_deadline_s),
        }
