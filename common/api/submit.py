"""The jobs HTTP API, independent of the web framework: functions/submit.py feeds it requests.

Every answer is JSON; every error is RFC 9457 problem+json. No input produces a 5xx except the
database being unreachable (503 with Retry-After); unexpected exceptions become a bare 500
problem with no stack trace, and are logged without request content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from common.api.admission import (
    PendingHints,
    Quota,
    QuotaCache,
    SubmitBuckets,
    WaitGate,
    too_many,
)
from common.api.auth import NotAllowed, TokenVerifier, Unauthenticated
from common.api.http import Request, Response, parse_json, read_body
from common.api.http import json_response as _json
from common.api.http import problem_response as _problem
from common.api.job_input import JobInput
from common.api.models import (
    EventList,
    ExecutionView,
    Health,
    History,
    JobList,
    JobView,
    Stats,
    WebhookSecret,
    WebhookView,
)
from common.api.problems import InvalidParam, ProblemError, from_store_error
from common.api.schedule_routes import ENDPOINTS as SCHEDULE_ENDPOINTS
from common.api.schedule_routes import ROUTES as SCHEDULE_ROUTES
from common.api.waiting import parse_wait, wait_for_end
from common.api.workflow_routes import CONVERTERS
from common.api.workflow_routes import ENDPOINTS as WORKFLOW_ENDPOINTS
from common.api.workflow_routes import ROUTES as WORKFLOW_ROUTES
from common.lazy import Lazy
from common.logs import bind_traceparent, current_traceparent, log, traceparent_from_headers
from common.presets.registry import Registry
from common.service import JobService
from common.settings import Settings
from common.store.errors import JobStoreError
from common.store.models import Job
from common.store.states import JobState

if TYPE_CHECKING:
    from common.api.flow import FlowEndpoints
    from common.api.limits import LimitEndpoints
    from common.api.schedules import ScheduleEndpoints
    from common.api.workflows import WorkflowEndpoints

ROUTES = Map(
    [
        Rule("/jobs", methods=["POST"], endpoint="create"),
        Rule("/jobs", methods=["GET"], endpoint="list"),
        # Flow control (common/api/flow.py): methods on the whole collection, spelled as
        # Google's AIP-136 custom methods (`/jobs:verb`), so they never share a path with
        # `/jobs/{job_id}` and its methods.
        Rule("/jobs:batch", methods=["POST"], endpoint="create_batch"),
        Rule("/jobs:bulk-cancel", methods=["POST"], endpoint="bulk_cancel"),
        Rule("/jobs:bulk-retry", methods=["POST"], endpoint="bulk_retry"),
        Rule("/jobs/<job_id>", methods=["GET"], endpoint="get"),
        Rule("/jobs/<job_id>/events", methods=["GET"], endpoint="events"),
        Rule("/jobs/<job_id>/cancel", methods=["POST"], endpoint="cancel"),
        Rule("/jobs/<job_id>/retry", methods=["POST"], endpoint="retry"),
        Rule("/stats", methods=["GET"], endpoint="stats"),
        Rule("/stats/history", methods=["GET"], endpoint="history"),
        # Flow limits (common/api/limits.py): the caller's own, and the deployment's presets'.
        Rule("/limits", methods=["GET"], endpoint="limits"),
        Rule("/limits/<key>", methods=["GET"], endpoint="get_limit"),
        Rule("/limits/<key>", methods=["PUT"], endpoint="put_limit"),
        Rule("/limits/<key>", methods=["DELETE"], endpoint="delete_limit"),
        Rule("/webhook-secret/rotate", methods=["POST"], endpoint="rotate_webhook_secret"),
        Rule("/healthz", methods=["GET"], endpoint="health"),
        Rule("/openapi.json", methods=["GET"], endpoint="openapi"),
        Rule("/ui", methods=["GET"], endpoint="ui"),  # the dashboard's own files (common/api/ui.py)
        Rule("/ui/<path:asset>", methods=["GET"], endpoint="ui"),
        *(Rule(path, methods=[method], endpoint=name)
          for path, method, name in (*SCHEDULE_ROUTES, *WORKFLOW_ROUTES)),
    ],
    strict_slashes=False,
    converters=CONVERTERS,
)
FLOW_ENDPOINTS = frozenset({"create_batch", "bulk_cancel", "bulk_retry"})
LIMIT_ENDPOINTS = frozenset({"limits", "get_limit", "put_limit", "delete_limit"})
PUBLIC = {"health", "openapi", "ui"}  # the dashboard's data calls carry the token
# Room for the largest content and metadata once JSON-escaped, plus the other fields.
BODY_OVERHEAD = 16_384


class SubmitApi:
    def __init__(
        self,
        settings: Settings,
        service: JobService,
        verifier: TokenVerifier,
        openapi: Callable[[], bytes],
        registry: Registry,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.service = service
        self.verifier = verifier
        self.openapi = openapi
        self.max_body = 2 * settings.max_content_bytes + settings.max_metadata_bytes + BODY_OVERHEAD
        self._health_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthz")
        self._schedules = Lazy(self._schedule_endpoints).get
        self._flow = Lazy(self._flow_endpoints).get
        self._limit_home = Lazy(self._limit_endpoints).get
        self._workflows = Lazy(self._workflow_endpoints).get
        # Admission at the door (common/api/admission.py), one of each per instance.
        self.waits = WaitGate(settings.wait_slots, settings.owner_max_waits)
        self.submits = SubmitBuckets()
        self.pending = PendingHints()
        self.quotas = QuotaCache(
            service.store.owner_quota,
            Quota(settings.owner_max_submits_per_s, settings.owner_max_pending),
            settings.owner_limits_ttl_s,
        )

    def _schedule_endpoints(self) -> ScheduleEndpoints:
        from common.api.schedules import ScheduleEndpoints  # few requests touch a schedule

        return ScheduleEndpoints(self.service, self.registry, self._body,
                                 allow_loopback=self.settings.webhook_allow_loopback)

    def _flow_endpoints(self) -> FlowEndpoints:
        from common.api.flow import FlowEndpoints  # batch and bulk requests only

        return FlowEndpoints(self.service, self.registry, self.settings, self._body,
                             quotas=self.quotas, submits=self.submits, pending=self.pending)

    def _limit_endpoints(self) -> LimitEndpoints:
        from common.api.limits import LimitEndpoints  # few requests touch a limit

        return LimitEndpoints(self.service, self._body)

    def _workflow_endpoints(self) -> WorkflowEndpoints:
        from common.api.workflows import WorkflowEndpoints  # workflow requests only

        return WorkflowEndpoints(self.service, self.registry, self.settings, self._body)

    def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        # The caller's trace (or a new one) travels with a job it creates: message, row, webhook.
        bind_traceparent(traceparent_from_headers(request.headers),
                         self.settings.google_cloud_project)
        owner: str | None = None
        endpoint = "unmatched"
        try:
            adapter = ROUTES.bind("localhost", path_info=request.path)
            endpoint, args = adapter.match(request.path, method=request.method)
            if endpoint not in PUBLIC:
                try:
                    owner = self.verifier.verify_request(request.headers).owner
                except NotAllowed as exc:
                    raise ProblemError(403, "forbidden", "Not allowed", str(exc)) from None
                except Unauthenticated as exc:
                    raise ProblemError(
                        401,
                        "unauthenticated",
                        "Authentication required",
                        str(exc),
                        headers={"WWW-Authenticate": 'Bearer realm="jobs"'},
                    ) from None
            home: object = self
            if endpoint in SCHEDULE_ENDPOINTS:
                home = self._schedules()
            elif endpoint in FLOW_ENDPOINTS:
                home = self._flow()
            elif endpoint in LIMIT_ENDPOINTS:
                home = self._limit_home()
            elif endpoint in WORKFLOW_ENDPOINTS:
                home = self._workflows()
            handler: Callable[..., Response] = getattr(home, "_" + endpoint)
            response = handler(request, owner, **args)
        except (NotFound, RequestRedirect):  # a redirect: werkzeug's merging of `//` in a path
            response = _problem(ProblemError(404, "not-found", "No such route"), request.path)
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            err = ProblemError(
                405, "method-not-allowed", "Method not allowed", headers={"Allow": allowed}
            )
            response = _problem(err, request.path)
        except ProblemError as exc:
            response = _problem(exc, request.path)
        except JobStoreError as exc:
            response = _problem(from_store_error(exc), request.path)
        except Exception as exc:  # a bug: answer without internals, log without content
            log("ERROR", "unhandled error", endpoint=endpoint, error=type(exc).__name__)
            response = _problem(ProblemError(500, "internal", "Internal error"), request.path)
        log(
            "INFO" if response.status < 500 else "ERROR",
            f"{request.method} {endpoint} {response.status}",
            endpoint=endpoint,
            status=response.status,
            owner=owner,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    # -- request body -------------------------------------------------------------------------

    def _body(self, request: Request, limit: int | None = None) -> Any:
        """The JSON body, at most `limit` bytes (default: one job's largest body)."""
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise ProblemError(
                415, "unsupported-media-type", "Content-Type must be application/json"
            )
        return parse_json(read_body(request, self.max_body if limit is None else limit))

    # -- endpoints ----------------------------------------------------------------------------

    def _create(self, request: Request, owner: str) -> Response:
        quota = self.quotas.get(owner)
        if quota.max_submits_per_s > 0:  # before the body is read: a refusal costs the least
            retry_in = self.submits.take(owner, quota.max_submits_per_s)
            if retry_in > 0:
                raise too_many(
                    "submit-rate-exceeded", "Too many submits",
                    f"an owner may submit at most {quota.max_submits_per_s} jobs a second to an "
                    "instance; retry after Retry-After", "max_submits_per_s",
                    quota.max_submits_per_s, retry_in)
        body = self._body(request)
        if not isinstance(body, dict):
            raise ProblemError(
                422,
                "validation-error",
                "Invalid request",
                invalid=[InvalidParam(name="body", reason="must be a JSON object")],
            )
        header_key = request.headers.get("Idempotency-Key")
        if header_key is not None:
            if body.get("idempotency_key") not in (None, header_key):
                # Each is a valid key; the request contradicts itself, so it conflicts (409)
                # rather than being malformed: nothing about either value is invalid.
                raise ProblemError(
                    409,
                    "idempotency-key-mismatch",
                    "Idempotency keys differ",
                    "The Idempotency-Key header and the body's idempotency_key differ.",
                )
            body = {**body, "idempotency_key": header_key}
        new = JobInput(self.registry, self.settings, owner).read(body)
        # The PENDING quota is counted when it could matter (PendingHints), else not at all.
        counting = quota.max_pending > 0 and self.pending.must_count(owner, quota.max_pending)
        job, created = self.service.submit(
            owner, new, traceparent=current_traceparent(),
            max_pending=quota.max_pending if counting else 0,
            on_pending=lambda seen: self.pending.counted(owner, seen),
        )
        if created and quota.max_pending > 0:
            self.pending.added(owner)
        view = self._view(owner, job)
        log("INFO", "job accepted" if created else "job replayed", job_id=str(job.id), owner=owner)
        return _json(202 if created else 200, view, Location=view.links.self)

    def _list(self, request: Request, owner: str) -> Response:
        raw_limit = request.query.get("limit", "50")
        # ASCII digits only: "²".isdigit() is true, but int("²") raises.
        if not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 6:
            raise ProblemError(
                422,
                "validation-error",
                "Invalid request",
                invalid=[InvalidParam(name="limit", reason="must be an integer")],
            )
        page = self.service.store.list_jobs(
            owner,
            state=request.query.get("state") or None,
            limit=int(raw_limit),
            cursor=request.query.get("cursor") or None,
            preset=request.query.get("preset") or None,
        )
        return _json(
            200, JobList(jobs=[JobView.of(j) for j in page.jobs], next_cursor=page.next_cursor)
        )

    def _get(self, request: Request, owner: str, job_id: str) -> Response:
        raw_wait = request.query.get("wait")
        if raw_wait is None:
            return _json(200, self._view(owner, self.service.store.get(owner, _job_id(job_id))))
        wait_s = parse_wait(raw_wait, self.settings.wait_max_s)
        if wait_s is None:
            raise ProblemError(
                422, "validation-error", "Invalid request",
                invalid=[InvalidParam(name="wait", reason=f"must be a number of seconds, more "
                                      f"than 0 and at most {self.settings.wait_max_s:g}")],
            )
        job_key = _job_id(job_id)
        with self.waits.admit(owner, wait_s):  # or 429: the instance's share, the owner's cap
            job = wait_for_end(self.service.store, owner, job_key, wait_s,
                               max_poll_s=self.settings.wait_poll_max_s)
        return _json(200, self._view(owner, job))

    def _view(self, owner: str, job: Job) -> JobView:
        """The job, with its webhook's state if it has a callback, and when its rate next has a
        slot if a rate parked it (one more read each, only then)."""
        until = None
        if (job.state == JobState.PENDING and job.wait_reason is not None
                and job.wait_reason.startswith("rate:")):
            until = self.service.store.rate_frontier(owner, job.preset, job.limit_key,
                                                     job.wait_reason)
        view = JobView.of(job, until)
        view.execution = ExecutionView.of(job, self.settings)
        if job.callback_url is not None:
            row = self.service.store.webhook_state(owner, job.id)
            if row is not None:
                view.webhook = WebhookView.of(job, row)
        return view

    def _rotate_webhook_secret(self, request: Request, owner: str) -> Response:
        """A new signing secret, shown this once; the previous one keeps signing for the grace
        period. The secret is never logged and is stored sealed (see common/messaging/signing)."""
        from common.messaging.signing import new_secret, seal

        secret = new_secret()
        rotation = self.service.store.rotate_webhook_secret(
            owner, seal(secret, owner, self.settings.webhook_secret_key),
            self.settings.webhook_rotation_grace_s,
        )
        log("INFO", "webhook secret rotated", owner=owner)
        return _json(200, WebhookSecret(secret=secret, rotated_at=rotation.rotated_at,
                                        previous_valid_until=rotation.previous_valid_until),
                     **{"Cache-Control": "no-store"})

    def _events(self, request: Request, owner: str, job_id: str) -> Response:
        return _json(200, EventList(events=self.service.store.events(owner, _job_id(job_id))))

    def _cancel(self, request: Request, owner: str, job_id: str) -> Response:
        job = self.service.store.cancel(owner, _job_id(job_id))
        return _json(200 if job.state.terminal else 202, JobView.of(job))

    def _retry(self, request: Request, owner: str, job_id: str) -> Response:
        return _json(202, JobView.of(self.service.retry(owner, _job_id(job_id))))

    def _stats(self, request: Request, owner: str) -> Response:
        stats = self.service.store.owner_stats(owner)
        return _json(200, Stats(**stats, throughput_per_min=stats["finished_last_5_min"] / 5))

    def _history(self, request: Request, owner: str) -> Response:
        window = request.query.get("window", "hour")
        if window not in ("hour", "day"):
            raise ProblemError(
                422, "validation-error", "Invalid request",
                invalid=[InvalidParam(name="window", reason="must be hour or day")],
            )
        history = self.service.store.finished_history(owner, "hour" if window == "hour" else "day")
        return _json(200, History.model_validate(history))

    def _health(self, request: Request, owner: None) -> Response:
        future = self._health_pool.submit(self.service.store.ping)
        try:
            future.result(timeout=2.0)
        except (FutureTimeout, JobStoreError):
            return _json(
                503, Health(status="unavailable", database="unreachable"), **{"Retry-After": "5"}
            )
        return _json(200, Health(status="ok", database="ok"))

    def _openapi(self, request: Request, owner: None) -> Response:
        return Response(200, self.openapi(), {"Content-Type": "application/json"})

    def _ui(self, request: Request, owner: None, asset: str | None = None) -> Response:
        from common.api.ui import FILES  # loaded by the first /ui request: no cold-start cost

        return FILES.serve(request, asset)


def _job_id(raw: str) -> str:
    """A path id that is not a UUID names no job: 404, like any other missing job."""
    from uuid import UUID

    try:
        return str(UUID(raw))
    except ValueError:
        raise ProblemError(404, "not-found", "Job not found") from None
