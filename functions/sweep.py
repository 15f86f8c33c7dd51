"""`sweep`: scheduled maintenance as a functions-framework HTTP function (Cloud Scheduler calls
it with an OIDC token)."""

from __future__ import annotations

import flask

from common.api.sweep import SweepApi, make_verifier
from common.lazy import Lazy
from common.maintenance.sweep import Sweeper
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.service import JobService
from common.settings import get_settings
from common.store.engine import get_engine
from common.store.job_store import JobStore
from functions.http_adapter import from_flask, to_flask


def _build() -> SweepApi:
    """Built on the first call, once per instance: no connection is opened at import."""
    settings = get_settings()
    service = JobService(JobStore(get_engine(), settings), Dispatcher(settings))
    return SweepApi(
        settings, Sweeper(service, Notifier(settings), settings), make_verifier(settings)
    )


_api = Lazy(_build)
get_api = _api.get


def sweep(request: flask.Request) -> flask.Response:
    return to_flask(get_api().handle(from_flask(request)))
