"""`make dev`'s delivery into `process`: several pushes at once, as production's push does.

The Pub/Sub emulator's push subscription keeps about two requests in flight to its endpoint
(measured: 8 messages into an endpoint that takes 2 s each, never more than 2 at once), so a
quick job waits behind two slow ones and fair share, progress and `?wait` look nothing like
production, where Pub/Sub pushes as many requests as the service's instances and their
concurrency take. So `make dev` makes the jobs subscription a pull subscription, with the same
ack deadline, retry policy and dead-letter policy as the push one, and this relay pulls from it
with the official client (streaming pull, at most `concurrency` messages outstanding) and
POSTs each message to `process` in the push envelope production sends, from `concurrency`
threads at once:

- a 102, 200, 201, 202 or 204 answer acknowledges the message (Pub/Sub's success codes for
  push); any other answer, a refused connection or no answer within the ack deadline nacks it;
- the emulator then redelivers it after the subscription's retry policy's backoff, counts the
  delivery attempts (`deliveryAttempt` in the envelope, as with a push subscription that has a
  dead-letter policy) and, after `max_delivery_attempts`, forwards it to the dead-letter topic
  with the same attributes a push subscription's dead letter carries (measured: 5 nacks, then
  the dead-letter topic);
- a message's lease is held for at most the ack deadline (`max_lease_duration`), and the
  request waits at most as long, so a request that outlives the deadline is redelivered, as a
  push is.

What it does not reproduce: push's own flow control (Pub/Sub slows pushes to an endpoint that
answers with errors) and OIDC tokens on the request (`process` checks none locally). The tests
that exercise the push subscription itself (retry policy, dead letters, outages) keep using
the emulator's push (tests/process_fixtures.py, tests/test_outage.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any

# Pub/Sub's push treats exactly these as an acknowledgement.
ACK_STATUSES = frozenset({102, 200, 201, 202, 204})


def push_envelope(message: Any, subscription: str) -> dict[str, Any]:
    """The body Pub/Sub's push sends for `message` (a pulled `Message`): both spellings of the
    id and the publish time, as the real push writes them, and `deliveryAttempt` when the
    subscription counts attempts (it has a dead-letter policy)."""
    published = message.publish_time.isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": subscription,
    }
    if message.ordering_key:
        body["message"]["orderingKey"] = message.ordering_key
    if message.delivery_attempt is not None:
        body["deliveryAttempt"] = message.delivery_attempt
    return body


class PushRelay:
    """Pulls `subscription` and pushes each message to `endpoint`, `concurrency` at a time."""

    def __init__(
        self,
        subscription: str,
        endpoint: str,
        *,
        concurrency: int,
        ack_deadline_s: float,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.subscription, self.endpoint = subscription, endpoint
        self.concurrency, self.ack_deadline_s = concurrency, ack_deadline_s
        self.on_line = on_line or (lambda line: None)
        self._subscriber: Any = None
        self._future: Any = None
        self._lock = threading.Lock()
        self.acked = self.nacked = 0

    def start(self) -> PushRelay:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        self._subscriber = pubsub_v1.SubscriberClient()
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="push-relay")
        self._future = self._subscriber.subscribe(
            self.subscription,
            self._deliver,
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=self.concurrency,
                max_lease_duration=int(self.ack_deadline_s),
            ),
            scheduler=ThreadScheduler(executor),
        )
        return self

    def _deliver(self, message: Any) -> None:
        status = self._post(push_envelope(message, self.subscription))
        if status in ACK_STATUSES:
            message.ack()
            with self._lock:
                self.acked += 1
            return
        message.nack()  # redelivered after the retry policy's backoff, or dead-lettered
        with self._lock:
            self.nacked += 1
        self.on_line(f"message {message.message_id} (delivery {message.delivery_attempt}): "
                     f"process answered {status or 'nothing'}; nacked")

    def _post(self, envelope: dict[str, Any]) -> int | None:
        request = urllib.request.Request(  # noqa: S310 (http(s) only, checked in __init__)
            self.endpoint, data=json.dumps(envelope).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            # Our own http://127.0.0.1 endpoint; one deadline, the subscription's ack deadline.
            with urllib.request.urlopen(request, timeout=self.ack_deadline_s) as resp:  # noqa: S310
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:  # refused, reset, or no answer within the ack deadline
            return None

    def stop(self) -> None:
        """Stop pulling. A message not acknowledged by then is delivered again later (after its
        ack deadline at the latest), so none is lost."""
        if self._future is not None:
            self._future.cancel()
            with contextlib.suppress(CancelledError, TimeoutError):
                self._future.result(timeout=10)  # waits for the client's shutdown
            self._future = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
