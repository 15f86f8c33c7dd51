"""Webhooks: send the outbox's due deliveries (those `process` could not deliver right after
the job ended, whose backoff has passed, or whose job was ended by a cancel, a rescue or a dead
letter).

This step runs after the pass has released its advisory lock (see sweep.py): it calls receivers,
and no network I/O to a receiver may happen while the lock is held, or one receiver that drips
its answer would stop every other pass's maintenance. Rows are taken with a lease, so an
overlapping pass's step takes other rows. Each attempt has one wall-clock deadline, cut to what
is left of the pass's budget, so the step ends within it."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from common.maintenance.budget import Budget
from common.messaging.webhooks import MIN_ATTEMPT_S, SENDERS, WebhookDeliverer

# A batch is sent by SENDERS threads at once: two rounds of the slowest receiver at most.
MAX_BATCH = 2 * SENDERS


def deliver(deliverer: WebhookDeliverer, budget: Budget, batch_size: int) -> dict[str, Any]:
    size = min(batch_size, MAX_BATCH)
    outcomes: Counter[str] = Counter()
    until = time.monotonic() + budget.remaining()

    def batch() -> int:
        if until - time.monotonic() < MIN_ATTEMPT_S:  # too little left to start an attempt
            return 0
        report = deliverer.deliver_due(size, until=until)
        outcomes.update(report.outcomes)
        return report.taken

    total, more = budget.in_batches(size, batch)
    return {"attempted": total - outcomes["released"], "outcomes": dict(outcomes), "more": more}
