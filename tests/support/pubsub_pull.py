"""Reading what was published, in tests: pull from a subscription and acknowledge it."""

from __future__ import annotations

import time
from typing import Any


def pull_acked(
    subscription: str, *, max_messages: int = 100, wait_s: float = 0.0, want: int = 0
) -> list[Any]:
    """Messages on `subscription`, acknowledged. One pull, or with `want`, pulls until that many
    arrived or `wait_s` passed."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    got: list[Any] = []
    deadline = time.monotonic() + wait_s
    try:
        while True:
            resp = subscriber.pull(
                request={"subscription": subscription, "max_messages": max_messages,
                         "return_immediately": True},
                timeout=10,
            )
            if resp.received_messages:
                subscriber.acknowledge(request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in resp.received_messages],
                })
                got += [m.message for m in resp.received_messages]
            if len(got) >= want or time.monotonic() > deadline:
                return got
            time.sleep(0.2)
    finally:
        subscriber.close()
