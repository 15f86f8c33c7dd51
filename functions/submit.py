"""`submit`: the jobs HTTP API as a functions-framework HTTP function."""

from __future__ import annotations

import functools
import json

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
        Lazy(functools.partial(_openapi_document, registry, settings)).get,
        registry,
    )


_api = Lazy(_build)
get_api = _api.get


def _openapi_document(registry: Registry, settings: Settings) -> bytes:
    """This instance's document (its presets, its limits), built on first request."""
    from common.api.openapi import build_openapi  # pydantic's JSON-schema machinery: load on demand

    return json.dumps(build_openapi(registry, settings)).encode()


def submit(request: flask.Request) -> flask.Response:
    return to_flask(get_api().handle(from_flask(request)))
