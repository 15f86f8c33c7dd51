"""Dead letters: messages Pub/Sub gave up on (max delivery attempts on the jobs subscription)
are pulled from the dead-letter subscription. A message for a job still PENDING at that attempt
means the job never ran: our worker or database was down, or at its limits. That is a delivery
failure, not a job failure: the job is dispatched again after a growing delay, and ends FAILED
'Undeliverable' only past DELIVERY_BUDGET_S. Terminal jobs, running ones (an expired lease is
the rescuer's), and messages older than the job's attempt are ignored. A job whose handler
really failed never gets here: the worker acknowledged its message. Each message is
acknowledged only after its job was settled, so a database outage leaves it for the next pass."""

from __future__ import annotations

import contextlib
from typing import Any

from common.logs import log
from common.maintenance.budget import Budget
from common.messaging.job_message import PoisonMessage, decode_message
from common.messaging.notify import Notifier
from common.messaging.pubsub import get_subscriber
from common.settings import Settings
from common.store.job_store import JobStore
from common.store.states import JobState

# One pull waits at most this long for messages; an empty subscription costs no more.
PULL_WAIT_S = 2.0


def settle(
    store: JobStore, notifier: Notifier, subscription: str, budget: Budget, batch_size: int,
    policy: Settings | None = None,
) -> dict[str, Any]:
    """`policy`: the settings that give the delivery budget and delays (else the store's)."""
    from google.api_core import exceptions as gexc

    subscriber = get_subscriber()
    delivery_failed = undeliverable = ignored = poison = 0
    more = False
    while True:
        if budget.spent():
            more = True
            break
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": min(batch_size, 1000)},
                timeout=max(min(PULL_WAIT_S, budget.remaining()), 0.1),
            )
        except gexc.DeadlineExceeded:
            break  # nothing waiting
        received = list(response.received_messages)
        if not received:
            break
        done: list[str] = []
        try:
            for received_message in received:
                message = received_message.message
                try:
                    item = decode_message(bytes(message.data))
                except PoisonMessage as exc:
                    store.record_poison(message.message_id, "dead letter: " + exc.reason,
                                        exc.excerpt)
                    poison += 1
                else:
                    moved = store.delivery_failed(item.id, item.attempts,
                                                  message_id=message.message_id, policy=policy)
                    if moved is None:
                        ignored += 1
                    elif moved.state is JobState.FAILED:
                        undeliverable += 1
                        notifier.terminal([(moved.id, moved.owner_id, moved.state)])
                        log("WARNING", "job undeliverable", job_id=str(moved.id),
                            message_id=message.message_id, delivery_failures=moved.failures)
                    else:  # counted in the pass's summary; the job's event says the rest
                        delivery_failed += 1
                done.append(received_message.ack_id)
        finally:  # what was settled is acknowledged even if the database then went away
            if done:
                subscriber.acknowledge(request={"subscription": subscription, "ack_ids": done})
            # What was not settled is offered again at once (no waiting out the ack deadline);
            # best effort: if this fails, the deadline does the same a little later.
            if rest := [r.ack_id for r in received if r.ack_id not in set(done)]:
                with contextlib.suppress(Exception):
                    subscriber.modify_ack_deadline(request={
                        "subscription": subscription, "ack_ids": rest, "ack_deadline_seconds": 0,
                    })
        if len(received) < min(batch_size, 1000):
            break
    return {"delivery_failed": delivery_failed, "undeliverable": undeliverable,
            "ignored": ignored, "poison": poison, "more": more}
