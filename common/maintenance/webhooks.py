"""Webhooks: send the outbox's due deliveries (those `process` could not deliver right after
the job ended, whose backoff has passed, or whose job was ended by a cancel, a rescue or a dead
letter). Batches are small, because each send may wait for a slow receiver up to
WEBHOOK_TIMEOUT_S, and the pass's budget is checked between them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from common.maintenance.budget import Budget
from common.messaging.webhooks import SENDERS, WebhookDeliverer

# A batch is sent by SENDERS threads at once: two rounds of the slowest receiver at most.
MAX_BATCH = 2 * SENDERS


def deliver(deliverer: WebhookDeliverer, budget: Budget, batch_size: int) -> dict[str, Any]:
    size = min(batch_size, MAX_BATCH)
    outcomes: Counter[str] = Counter()

    def batch() -> int:
        report = deliverer.deliver_due(size)
        outcomes.update(report.outcomes)
        return report.taken

    total, more = budget.in_batches(size, batch)
    return {"attempted": total, "outcomes": dict(outcomes), "more": more}
