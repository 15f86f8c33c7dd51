"""`submit`: the jobs HTTP API as a functions-framework HTTP function."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime

import flask

from common.api.auth import TokenVerifier
from common.api.submit import SubmitApi
from common.lazy import Lazy
from common.messaging.dispatch import Dispatcher
from common.presets.registry import Registry, load_registry
from common.service import JobService
from common.settings import Settings, get_settings
from common.store.engine import get_engine
from common.store.job_store import JobStore
from functions.http_adapter import from_flask, to_flask


def _build() -> SubmitApi:
    """Built on the first request, once per instance: no connection is opened at import."""
    settings = get_settings()
    registry = load_registry(settings)
    store = JobStore(get_engine(), settings, presets=registry.names())
    return SubmitApi(
        settings,
        JobService(store, Dispatcher(settings, fault_rate=settings.publish_fault_rate)),
        TokenVerifier(settings),
        _document_of_the_day(registry, settings),
        registry,
    )


_api = Lazy(_build)
get_api = _api.get


def _openapi_document(registry: Registry, settings: Settings, today: date) -> bytes:
    """This instance's document (its presets, its limits), built on first request."""
    from common.api.openapi import build_openapi  # pydantic's JSON-schema machinery: load on demand

    return json.dumps(build_openapi(registry, settings, today)).encode()


def _document_of_the_day(registry: Registry, settings: Settings) -> Callable[[], bytes]:
    """The document states which `run_at` dates are accepted today (UTC): built once a day."""
    built: dict[date, bytes] = {}

    def get() -> bytes:
        today = datetime.now(UTC).date()
        if today not in built:
            built.clear()
            built[today] = _openapi_document(registry, settings, today)
        return built[today]

    return get


def submit(request: flask.Request) -> flask.Response:
    return to_flask(get_api().handle(from_flask(request)))
