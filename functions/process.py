"""`process`: the worker as a functions-framework HTTP function that Pub/Sub pushes to.

Our push subscription (infra/pubsub.tf) posts the raw envelope `{"message": {...},
"subscription": ...}`. Eventarc would post the same message as a CloudEvent, binary (`ce-*`
headers, the same JSON body) or structured (`application/cloudevents+json`, the envelope in
`data`). All three are read here, straight from the JSON body (`common/worker/push_request.py`).
It was a `cloud_event` function: for the raw envelope, functions-framework first failed to parse
it as a CloudEvent (an exception per request) and then converted it through its legacy-event
models, about 0.1 ms of CPU a push (8% of `process`'s, in an A/B on 2026-11-27).

Answers 200 whenever the message is done with, whatever the job's outcome (a body that is no
Pub/Sub message at all is recorded as poison: delivering it again cannot help), 503 only when
the database is unreachable, so that Pub/Sub delivers the message again, and 405 to anything
but a POST (Pub/Sub only posts), recording nothing.
"""

from __future__ import annotations

import flask
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
from common.worker.push_request import MAX_PUSH_BYTES, delivery_from_push
from common.worker.runner import Worker
from functions.body import read_at_most


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


@functions_framework.http
def process(request: flask.Request) -> flask.Response:
    if request.method != "POST":  # a probe or a stray visitor, not a push: nothing to record
        return flask.Response("POST a Pub/Sub push", status=405, headers={"Allow": "POST"},
                              mimetype="text/plain")
    delivery = delivery_from_push(request.headers, read_at_most(request, MAX_PUSH_BYTES + 1))
    try:
        get_worker().handle(delivery)
    except DatabaseUnavailable:
        log("WARNING", "database unavailable; Pub/Sub will deliver the message again",
            message_id=delivery.message_id)
        return flask.Response("database unavailable", status=503, mimetype="text/plain")
    return flask.Response("OK", status=200, mimetype="text/plain")
