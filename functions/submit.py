"""`submit`: the jobs HTTP API as a functions-framework HTTP function."""

from __future__ import annotations

import functools
import json
import threading

import flask

from common.auth import TokenVerifier
from common.db import get_engine
from common.dispatch import Dispatcher
from common.handlers.registry import load_registry
from common.repository import JobStore
from common.service import JobService
from common.settings import get_settings
from common.submit_api import Request, SubmitApi

_api: SubmitApi | None = None
_lock = threading.Lock()


def get_api() -> SubmitApi:
    """Built on the first request, once per instance: no connection is opened at import."""
    global _api
    with _lock:
        if _api is None:
            settings = get_settings()
            registry = load_registry(settings)
            store = JobStore(get_engine(), settings, presets=registry.names())
            _api = SubmitApi(
                settings,
                JobService(store, Dispatcher(settings)),
                TokenVerifier(settings),
                _openapi_document,
                registry,
            )
        return _api


@functools.cache
def _openapi_document() -> bytes:
    from common.openapi import build_openapi  # pydantic's JSON-schema machinery: load on demand

    return json.dumps(build_openapi()).encode()


def _reader(request: flask.Request):  # type: ignore[no-untyped-def]
    def read(limit: int) -> bytes:
        chunks, size = [], 0
        while size < limit:
            chunk = request.stream.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    return read


def submit(request: flask.Request) -> flask.Response:
    response = get_api().handle(
        Request(
            method=request.method,
            path=request.path,
            headers=request.headers,
            query=request.args,
            read_body=_reader(request),
            content_length=request.content_length,
        )
    )
    return flask.Response(response.body, status=response.status, headers=response.headers)
