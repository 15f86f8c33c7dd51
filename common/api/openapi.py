"""The OpenAPI 3.1 document, generated from the pydantic models (never a hand-written copy)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from common.api.models import EventList, Health, JobList, JobView, Stats
from common.api.problems import Problem
from common.store.models import NewJob
from common.store.states import JobState

REF = "#/components/schemas/{model}"
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _content(model: type[BaseModel], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": _ref(model)}}}


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "problem", **_content(Problem, "application/problem+json")}
        for c in codes
    }


def _op(
    op_id: str,
    summary: str,
    ok: dict[int, type[BaseModel]],
    errors: tuple[int, ...],
    *,
    params: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "responses": {
            **{
                str(code): {"description": model.__name__, **_content(model)}
                for code, model in ok.items()
            },
            **_problems(*errors, *((401,) if auth else ())),
        },
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **_content(body)}
    op["security"] = [{"bearer": []}] if auth else []
    return op


def build_openapi() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (NewJob, "validation"),
        (JobView, "serialization"),
        (JobList, "serialization"),
        (EventList, "serialization"),
        (Problem, "serialization"),
        (Health, "serialization"),
        (Stats, "serialization"),
    ]
    _, schema = models_json_schema(models, ref_template=REF)
    write_errors = (400, 404, 409, 413, 415, 422, 503)
    list_params = [
        {"name": "state", "in": "query", "schema": {"enum": [s.value for s in JobState]}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    idem = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobs-pipeline", "version": "1"},
        "paths": {
            "/jobs": {
                "post": _op(
                    "createJob",
                    "Create a job",
                    {202: JobView, 200: JobView},
                    write_errors,
                    params=[idem],
                    body=NewJob,
                ),
                "get": _op(
                    "listJobs",
                    "The caller's jobs, newest first",
                    {200: JobList},
                    (400, 422, 503),
                    params=list_params,
                ),
            },
            "/jobs/{job_id}": {
                "get": _op("getJob", "One job", {200: JobView}, (404, 503), params=[JOB_ID]),
            },
            "/jobs/{job_id}/events": {
                "get": _op(
                    "getJobEvents",
                    "A job's audit trail",
                    {200: EventList},
                    (404, 503),
                    params=[JOB_ID],
                ),
            },
            "/jobs/{job_id}/cancel": {
                "post": _op(
                    "cancelJob",
                    "Cancel (or request cancellation of) a job",
                    {200: JobView, 202: JobView},
                    (404, 409, 503),
                    params=[JOB_ID],
                ),
            },
            "/jobs/{job_id}/retry": {
                "post": _op(
                    "retryJob",
                    "Run a FAILED job again",
                    {202: JobView},
                    (404, 409, 503),
                    params=[JOB_ID],
                ),
            },
            "/stats": {
                "get": _op("getStats", "The caller's queue: depth, oldest pending, throughput",
                           {200: Stats}, (503,)),
            },
            "/healthz": {
                "get": _op(
                    "health",
                    "Liveness and database reachability",
                    {200: Health, 503: Health},
                    (),
                    auth=False,
                ),
            },
        },
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
