"""`process`: the worker as a functions-framework CloudEvent function.

In production Eventarc (or a push subscription) delivers a
`google.cloud.pubsub.topic.v1.messagePublished` CloudEvent; locally the Pub/Sub emulator pushes
a raw envelope, which functions-framework turns into the same event. Either way the message is
in `data["message"]`. Returning acknowledges it; raising (only when the database is
unreachable) answers 500 so Pub/Sub delivers it again.
"""

from __future__ import annotations

from typing import Any

import functions_framework

from common.lazy import Lazy
from common.logs import log
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.presets.registry import load_registry
from common.settings import get_settings
from common.store.engine import get_engine
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.worker.runner import Delivery, Worker


def _build() -> Worker:
    """Built on the first message, once per instance: no connection is opened at import."""
    from common.messaging.webhooks import WebhookDeliverer  # HTTP client: not at cold import

    settings = get_settings()
    store = JobStore(get_engine(), settings)
    registry = load_registry(settings, chaos_log=store.record_chaos_run)
    return Worker(store, registry, Notifier(settings), settings,
                  webhooks=WebhookDeliverer(store, settings), dispatcher=Dispatcher(settings))


_worker = Lazy(_build)
get_worker = _worker.get


def delivery_from_event(data: Any, event_id: str | None) -> Delivery:
    """The Pub/Sub message inside a messagePublished event. A malformed event becomes a
    delivery without data, which the worker records as poison."""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        return Delivery(data=None, message_id=event_id or "")
    message_id = message.get("messageId") or message.get("message_id") or event_id or ""
    attributes = message.get("attributes")
    return Delivery(
        data=message.get("data"),
        message_id=str(message_id),
        attributes=attributes if isinstance(attributes, dict) else {},
    )


@functions_framework.cloud_event
def process(event: Any) -> None:
    delivery = delivery_from_event(event.data, event.get("id"))
    try:
        get_worker().handle(delivery)
    except DatabaseUnavailable:
        log("WARNING", "database unavailable; Pub/Sub will deliver the message again",
            message_id=delivery.message_id)
        raise
