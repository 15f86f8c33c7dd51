"""Webhooks: send the outbox's due deliveries (those `process` could not deliver right after
the job ended, whose backoff has passed, or whose job was ended by a cancel, a rescue or a dead
letter).

This step runs after the pass has released its advisory lock (see sweep.py): it calls receivers,
and no network I/O to a receiver may happen while the lock is held, or one receiver that drips
its answer would stop every other pass's maintenance. Rows are taken with a lease, so an
overlapping pass's step takes other rows.

The senders are kept fed: whenever an attempt ends, its lane takes the next due delivery, so a
slow attempt holds only its own lane, never a whole batch. A take holds at most PER_OWNER of one
owner's deliveries in flight and puts every owner's first due delivery ahead of anyone's next,
so another owner's delivery waits at most for one attempt's deadline (when every lane is busy),
however many one owner has due. An attempt starts only if its whole deadline fits in what is
left of the pass's budget (see WebhookDeliverer.attempt); each delivery is tried at most once
per pass.

Deliveries waiting for their owner's signing secret are not due (see common/store/webhooks.py);
each pass first wakes those of owners whose secret was made or rotated lately."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any
from uuid import UUID

from common.maintenance.budget import Budget
from common.messaging.webhooks import SENDERS, WebhookDeliverer
from common.store.webhooks import DueDelivery

# Deliveries waiting for a secret are made due by the statement that creates or rotates it; a
# take that moved one aside just as that statement ran is caught by the next pass: each pass
# wakes the waiting deliveries of owners whose secret changed within this long (a few missed
# passes' worth; longer would only re-check unopenable secrets more often).
WAKE_WITHIN_S = 3600.0


def deliver(deliverer: WebhookDeliverer, budget: Budget, batch_size: int) -> dict[str, Any]:
    width = max(1, min(batch_size, SENDERS))  # attempts in flight at once
    timeout_s = deliverer.settings.webhook_timeout_s
    until = time.monotonic() + budget.remaining()
    outcomes: Counter[str] = Counter()
    woken = deliverer.store.wake_rotated(WAKE_WITHIN_S)
    running: dict[Future[Any], DueDelivery] = {}
    tried: set[UUID] = set()
    taken_total, more, taking = 0, False, True
    while True:
        room = width - len(running)
        if taking and room > 0:
            if until - time.monotonic() < timeout_s:  # no whole attempt fits any more
                taking, more = False, True
            else:
                busy = Counter(item.owner_id for item in running.values())
                taken = deliverer.take(room, busy=busy, exclude=tried)
                taken_total += len(taken)
                for item in taken:
                    tried.add(item.id)
                    running[deliverer.send(item, until)] = item
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            del running[future]
            outcome, _retry = future.result()
            outcomes[outcome] += 1
    result = {"attempted": taken_total - outcomes["released"] - outcomes["waiting"],
              "outcomes": dict(outcomes), "more": more}
    if woken:
        result["woken"] = woken
    return result
