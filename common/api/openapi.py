"""The OpenAPI 3.1 document, generated from the pydantic models (never a hand-written copy).

It is built per instance, because what the API accepts depends on the instance: the presets it
has registered (each with its own options model), its size limits and its page size. The
document says exactly what the code checks, so that a contract tester finds schema-valid
requests accepted and schema-invalid ones refused: a request body is one variant per preset;
every string the store refuses NUL in says so; the cursor has the format it is decoded with;
every operation lists every status it answers, each with its problem type. Links lead from a
created job to its own operations, for stateful testing and for readers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from common.api.models import (
    EventList,
    Health,
    History,
    JobList,
    JobView,
    Limits,
    LimitView,
    Stats,
    WebhookSecret,
)
from common.api.openapi_flow import FLOW_MODELS, flow_paths, flow_schemas
from common.api.openapi_insight import insight_paths
from common.api.openapi_limits import job_fields, limit_paths, limit_schemas
from common.api.openapi_problems import SUBMIT_429, WAIT_429, problems
from common.api.openapi_schedules import schedule_paths, schedule_schemas
from common.api.openapi_security import security_schemes, with_iap
from common.api.openapi_workflows import WORKFLOW_MODELS, workflow_paths, workflow_schemas
from common.api.problems import LimitProblem, Problem
from common.api.schedules import ScheduleEventList, ScheduleList, ScheduleView
from common.messaging.callbacks import MAX_URL, url_patterns
from common.presets.registry import Registry
from common.settings import Settings
from common.store.cursor import QUERY_CURSOR_PATTERN
from common.store.models import MAX_METADATA_DEPTH, PRESET_PATTERN
from common.store.states import JobState
from common.store.timing import MAX_RUN_AT_CHARS, run_at_pattern

REF = "#/components/schemas/{model}"
NO_NUL = "^[^\\u0000]*$"
JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "description": "A job's id; any other text names no job (404).",
          "schema": {"type": "string", "format": "uuid"}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _content(name: str, media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": _ref(name)}}}


def _op(
    op_id: str,
    summary: str,
    ok: dict[int, str],
    errors: dict[int, str],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    auth: bool = True,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(code): {"description": model, **_content(model)} for code, model in ok.items()
    }
    if links:
        for code in ok:
            responses[str(code)]["links"] = links
    if auth:
        errors = {**errors, 401: "missing, malformed, expired or foreign token (or IAP "
                  "assertion)", 403: "a verified caller that AUTH_GOOGLE_ALLOWED does not name"}
    responses.update(problems(errors))
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **_content(body)}
    op["security"] = [{"bearer": []}] if auth else []
    return op


def _json_values(schemas: dict[str, Any]) -> str:
    """Any JSON value the store holds in metadata: no NUL in strings or keys, no NaN or
    infinity, nested at most MAX_METADATA_DEPTH levels. Written out level by level (JsonValue1
    … JsonValue16) rather than as one recursive schema: the depth limit is then exact, and
    generators that negate a schema (contract testers) need not recurse forever."""
    scalars: list[dict[str, Any]] = [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
    deepest = MAX_METADATA_DEPTH
    schemas[f"JsonValue{deepest}"] = {
        "anyOf": [*scalars, {"type": "array", "maxItems": 0},
                  {"type": "object", "maxProperties": 0}],
    }
    for level in range(deepest - 1, 0, -1):
        inner = _ref(f"JsonValue{level + 1}")
        schemas[f"JsonValue{level}"] = {
            "anyOf": [
                *scalars,
                {"type": "array", "items": inner},
                {"type": "object", "propertyNames": {"pattern": NO_NUL},
                 "additionalProperties": inner},
            ],
        }
    return "JsonValue1"


def _run_later(settings: Settings, today: date) -> dict[str, Any]:
    """`run_at` and `delay_s` (common/store/timing.py): the pattern is today's, so the document
    is rebuilt when the UTC date changes."""
    days = settings.max_run_ahead_days
    return {
        "run_at": {
            "type": "string", "format": "date-time", "maxLength": MAX_RUN_AT_CHARS,
            "pattern": run_at_pattern(today, days),
            "description": f"RFC 3339 with an offset (no leap second). Its date, as written, at "
                           f"most {days} days after today's UTC date; a time in the past means "
                           "now. Not with delay_s.",
        },
        "delay_s": {
            "type": "integer", "minimum": 0, "maximum": days * 86_400,
            "description": "Run no sooner than this many seconds from now. Not with run_at.",
        },
    }


def _new_job_variants(
    registry: Registry, settings: Settings, schemas: dict[str, Any], *,
    template: bool = False, today: date | None = None,
) -> dict[str, Any]:
    """`NewJob` as one variant per registered preset, each with that preset's options model,
    so an unknown preset or invalid options is schema-invalid rather than a surprise 422.
    With `template`, a schedule's `JobTemplate`: the job's own fields only."""
    variants = []
    prefix = "JobTemplate_" if template else "NewJob_"
    json_value = _json_values(schemas)
    for name in registry.names():
        handler = registry.get(name)
        assert handler is not None
        options_name = "Options_" + name.replace("-", "_")
        options = handler.options.model_json_schema(ref_template=REF)
        schemas.update(options.pop("$defs", {}))
        schemas[options_name] = options
        content: dict[str, Any] = {
            "type": "string",
            "pattern": handler.content_pattern or NO_NUL,  # a preset's own admits no NUL either
            "maxLength": settings.max_content_bytes,
            "description": handler.content_description
            or f"At most {settings.max_content_bytes} bytes as UTF-8.",
        }
        if handler.max_content_chars is not None:
            content["maxLength"] = min(settings.max_content_bytes, handler.max_content_chars)
        variant: dict[str, Any] = {
            "type": "object",
            "title": f"{prefix[:-1]} ({name})",
            "additionalProperties": False,
            "required": ["preset", "content"],
            "properties": {
                "preset": {"const": name},
                "content": content,
                "metadata": {
                    "type": "object",
                    "description": (
                        f"Free JSON, at most {settings.max_metadata_bytes} bytes and "
                        f"{MAX_METADATA_DEPTH} levels deep; `options` configures the preset."
                    ),
                    "propertyNames": {"pattern": NO_NUL},
                    "properties": {"options": _ref(options_name)},
                    "additionalProperties": _ref(json_value),
                },
                "max_attempts": {
                    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 100},
                              {"type": "null"}],
                },
                **job_fields(),
            },
        }
        # Stated once, referred to by every variant of both bodies (a schedule's jobs carry it).
        schemas["CallbackUrl"] = {
            "description": (
                "Where the job's end is POSTed, signed (Standard Webhooks). Checked "
                "after DNS resolution: a name resolving to a private, loopback, "
                "link-local or metadata address is refused (422)."
            ),
            "anyOf": [
                *({"type": "string", "maxLength": MAX_URL, "pattern": pattern}
                  for pattern in url_patterns(settings.webhook_allow_loopback)),
                {"type": "null"},
            ],
        }
        variant["properties"]["callback_url"] = _ref("CallbackUrl")
        if not template:
            variant["properties"]["idempotency_key"] = {
                "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255,
                           "pattern": NO_NUL}, {"type": "null"}],
            }
            variant["properties"].update(_run_later(settings, today or datetime.now(UTC).date()))
            variant["not"] = {"required": ["run_at", "delay_s"]}
        schemas[prefix + name.replace("-", "_")] = variant
        variants.append(_ref(prefix + name.replace("-", "_")))
    return {"oneOf": variants, "description": f"Presets: {', '.join(registry.names())}."}


def build_openapi(
    registry: Registry, settings: Settings, today: date | None = None
) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (JobView, "serialization"),
        (JobList, "serialization"),
        (EventList, "serialization"),
        (Problem, "serialization"),
        (LimitProblem, "serialization"),
        (Health, "serialization"),
        (Stats, "serialization"),
        (WebhookSecret, "serialization"),
        (History, "serialization"),
        (Limits, "serialization"),
        (LimitView, "serialization"),
        (ScheduleView, "serialization"),
        (ScheduleList, "serialization"),
        (ScheduleEventList, "serialization"),
        *FLOW_MODELS,
        *WORKFLOW_MODELS,
    ]
    _, generated = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = generated.get("$defs", {})
    schemas["NewJob"] = _new_job_variants(registry, settings, schemas, today=today)
    schemas["JobTemplate"] = _new_job_variants(registry, settings, schemas, template=True)
    schemas.update({**schedule_schemas(settings), **flow_schemas(), **limit_schemas()})
    schemas.update(workflow_schemas(schemas))
    job_links = {
        op: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
        for op in ("getJob", "getJobEvents", "cancelJob", "retryJob")
    }
    unavailable = {503: "the job store cannot be reached; retry after Retry-After"}
    list_params = [
        {
            "name": "state",
            "in": "query",
            "description": "Only jobs in this state; empty or absent: every state.",
            "schema": {"enum": [*(s.value for s in JobState), ""]},
        },
        {
            "name": "preset",
            "in": "query",
            "description": "Only jobs of this preset; empty or absent: every preset.",
            "schema": {"type": "string", "maxLength": 64,
                       "pattern": "^(?:" + PRESET_PATTERN[1:-1] + ")?$"},
        },
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": settings.max_page_size},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "`next_cursor` from the previous page; empty or absent: the first.",
            "schema": {"type": "string", "pattern": QUERY_CURSOR_PATTERN},
        },
    ]
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "Same as the body's idempotency_key; if both are given and differ: 409.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NO_NUL},
    }
    by_id = {404: "no such job, or another owner's", **unavailable}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "jobs-pipeline", "version": "1"},
        "paths": {
            "/jobs": {
                "post": _op(
                    "createJob",
                    "Create a job",
                    {202: "JobView", 200: "JobView"},
                    {
                        400: "the body is not JSON",
                        409: "the idempotency key was used with a different request, or the "
                             "header and the body name different keys",
                        413: "the body is larger than the content and metadata limits allow",
                        415: "Content-Type is not application/json",
                        422: "the body is not a valid job for a registered preset",
                        429: SUBMIT_429,
                        **unavailable,
                    },
                    params=[idem],
                    body="NewJob",
                    links=job_links,
                ),
                "get": _op(
                    "listJobs",
                    "The caller's jobs, newest first",
                    {200: "JobList"},
                    {400: "the cursor is malformed", 422: "state, preset or limit is invalid",
                     **unavailable},
                    params=list_params,
                ),
            },
            **flow_paths(_op, unavailable),
            "/jobs/{job_id}": {
                "get": _op(
                    "getJob",
                    "One job; with `wait`, once it is terminal or `wait` seconds have passed",
                    {200: "JobView"},
                    {**by_id, 422: f"wait is not a number in (0, {settings.wait_max_s:g}]",
                     429: WAIT_429},
                    params=[JOB_ID, {
                        "name": "wait",
                        "in": "query",
                        "description": "Answer as soon as the job is terminal, or with its "
                                       "current state after this many seconds.",
                        "schema": {"type": "number", "exclusiveMinimum": 0,
                                   "maximum": settings.wait_max_s},
                    }],
                ),
            },
            "/jobs/{job_id}/events": {
                "get": _op("getJobEvents", "A job's audit trail", {200: "EventList"}, by_id,
                           params=[JOB_ID]),
            },
            "/jobs/{job_id}/cancel": {
                "post": _op(
                    "cancelJob",
                    "Cancel (or request cancellation of) a job",
                    {200: "JobView", 202: "JobView"},
                    {**by_id, 409: "the job is already finished"},
                    params=[JOB_ID],
                ),
            },
            "/jobs/{job_id}/retry": {
                "post": _op(
                    "retryJob",
                    "Run a FAILED job again",
                    {202: "JobView"},
                    {**by_id, 409: "the job is not FAILED, or has used every attempt allowed"},
                    params=[JOB_ID],
                ),
            },
            **schedule_paths(settings, _op, unavailable),
            **workflow_paths(_op, unavailable, settings.max_page_size),
            "/stats": {
                "get": _op("getStats",
                           "The caller's queue: depth, due and parked, oldest due, throughput",
                           {200: "Stats"}, unavailable),
            },
            **insight_paths(_op, unavailable),
            **limit_paths(_op, unavailable),
            "/webhook-secret/rotate": {
                "post": _op(
                    "rotateWebhookSecret",
                    "A new webhook signing secret (shown once); the previous one keeps signing "
                    "deliveries for a grace period",
                    {200: "WebhookSecret"},
                    unavailable,
                ),
            },
            "/healthz": {
                "get": _op(
                    "health",
                    "Liveness and database reachability",
                    {200: "Health", 503: "Health"},
                    {},
                    auth=False,
                ),
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": security_schemes(settings),
        },
    }
    return with_iap(document, settings)
