"""Workflows in the OpenAPI document (common/api/openapi.py builds the rest): the five
operations of common/api/workflows.py.

A step is documented as one variant per preset, as a job is: the preset's own content pattern
and options model, plus the step's name, its parents and `on_upstream_failure` (a step has no
callback, idempotency key or run time of its own). What JSON Schema can state is stated: at
most 500 steps, each name and parent of the step pattern, no parent twice. What it cannot is
said in words and answered 422 naming the step: names distinct within the workflow, every
parent a step of it, no cycle. A retry's `step` must name a step of the stored workflow (422
otherwise), which a schema cannot know either.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from common.api.workflows import (
    MAX_RETRY_STEP,
    RETRY_MAX_BODY_BYTES,
    WORKFLOW_MAX_BODY_BYTES,
    WorkflowList,
    WorkflowView,
)
from common.store.cursor import QUERY_CURSOR_PATTERN
from common.store.workflow_models import MAX_PARENTS, MAX_STEP_NAME, MAX_STEPS, STEP_PATTERN

REF = "#/components/schemas/{model}"
NO_NUL = "^[^\\u0000]*$"
WORKFLOW_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (WorkflowView, "serialization"), (WorkflowList, "serialization")]
WORKFLOW_ID = {"name": "workflow_id", "in": "path", "required": True,
               "description": "A workflow's id; any other text names no workflow (404).",
               "schema": {"type": "string", "format": "uuid"}}
EXAMPLE = {
    "name": "episode-42",
    "steps": [
        {"name": "script", "preset": "echo", "content": "script"},
        {"name": "audio", "preset": "echo", "content": "audio", "after": ["script"]},
        {"name": "images", "preset": "echo", "content": "images", "after": ["script"]},
        {"name": "render", "preset": "echo", "content": "render",
         "after": ["audio", "images"]},
        {"name": "report", "preset": "echo", "content": "report", "after": ["render"],
         "on_upstream_failure": "run"},
    ],
}


def _step_name(max_length: int = MAX_STEP_NAME) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": STEP_PATTERN}


def workflow_schemas(schemas: dict[str, Any]) -> dict[str, Any]:
    """`NewWorkflow` and its step variants (from the JobTemplate variants already in
    `schemas`), and a retry's body."""
    out: dict[str, Any] = {}
    variants = []
    for ref in schemas["JobTemplate"]["oneOf"]:
        template = ref["$ref"].rsplit("/", 1)[1]
        step = copy.deepcopy(schemas[template])
        step["properties"].pop("callback_url", None)
        step["title"] = step["title"].replace("JobTemplate", "WorkflowStep")
        step["required"] = ["name", *step["required"]]
        step["properties"].update({
            "name": {**_step_name(), "description": "The step's name, unique in the workflow: "
                     "a-z 0-9 _ -, starting with a letter or digit."},
            "after": {"type": "array", "maxItems": MAX_PARENTS, "uniqueItems": True,
                      "items": _step_name(),
                      "description": "The steps it waits for, each a step of this workflow, "
                                     "with no cycle (422 naming the step otherwise); none: due "
                                     "at once."},
            "on_upstream_failure": {
                "enum": ["cancel", "run"],
                "description": "cancel (default): a parent ending FAILED or CANCELLED ends this "
                               "step CANCELLED; run: it runs anyway once every parent ended."},
        })
        name = "WorkflowStep_" + template.removeprefix("JobTemplate_")
        out[name] = step
        variants.append({"$ref": REF.format(model=name)})
    out["WorkflowStep"] = {"oneOf": variants}
    out["NewWorkflow"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["steps"],
        "description": "A graph of named steps, each a job. Checked whole before anything is "
                       "written: a 422 names the step (steps[3].after) for a name used twice, "
                       "a parent that is no step, or a cycle.",
        "properties": {
            "name": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200,
                                "pattern": NO_NUL}, {"type": "null"}]},
            "idempotency_key": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 255,
                                           "pattern": NO_NUL}, {"type": "null"}]},
            "callback_url": {"$ref": REF.format(model="CallbackUrl"),
                             "description": "Where the workflow's end is POSTed, signed, once."},
            "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                      "items": {"$ref": REF.format(model="WorkflowStep")}},
        },
    }
    out["ScheduleWorkflow"] = copy.deepcopy(out["NewWorkflow"])
    out["ScheduleWorkflow"]["properties"].pop("idempotency_key")
    out["ScheduleWorkflow"]["description"] = (
        "The workflow each fire starts, as POST /workflows takes it but without an "
        "idempotency_key (each fire is keyed by the schedule and its fire time).")
    if "WorkflowStep_echo" in out:  # the example's preset
        out["NewWorkflow"]["examples"] = [EXAMPLE]
    out["WorkflowRetryRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Retry one FAILED step (its name, as GET /workflows/{id} lists it) "
                       "rather than every FAILED step ({} or no body: every one).",
        "properties": {"step": {"type": "string", "minLength": 1,
                                "maxLength": MAX_RETRY_STEP}},
    }
    return out


def workflow_paths(op: Callable[..., dict[str, Any]], unavailable: dict[int, str],
                   max_page_size: int) -> dict[str, Any]:
    links = {name: {"operationId": name, "parameters": {"workflow_id": "$response.body#/id"}}
             for name in ("getWorkflow", "cancelWorkflow", "retryWorkflow")}
    idem = {"name": "Idempotency-Key", "in": "header",
            "description": "Same as the body's idempotency_key; if both are given and differ: "
                           "409.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NO_NUL}}
    by_id = {404: "no such workflow, or another owner's", **unavailable}
    retry = op(
        "retryWorkflow",
        "Retry a workflow's FAILED steps (or the one named) with a fresh budget of attempts; "
        "the steps they had cancelled go back to waiting",
        {202: "WorkflowView"},
        {**by_id, 400: "the body is not JSON",
         409: "no FAILED step with attempts left (or the step named is not FAILED)",
         413: f"the body is larger than {RETRY_MAX_BODY_BYTES} bytes",
         415: "a body was sent and its Content-Type is not application/json",
         422: "the body is not {\"step\": name}, or the workflow has no step of that name"},
        params=[WORKFLOW_ID], body="WorkflowRetryRequest", links=links,
    )
    retry["requestBody"]["required"] = False
    return {
        "/workflows": {
            "post": op(
                "createWorkflow",
                "Create a workflow: every step and edge in one transaction, then its first "
                "steps published in one batch",
                {201: "WorkflowView", 200: "WorkflowView"},
                {400: "the body is not JSON",
                 409: "the idempotency key was used with a different workflow, or the header "
                      "and the body name different keys",
                 413: f"the body is larger than {WORKFLOW_MAX_BODY_BYTES} bytes",
                 415: "Content-Type is not application/json",
                 422: "the workflow is invalid: its shape, a step POST /jobs would refuse, a "
                      "name used twice, a parent that is no step, a cycle (nothing written)",
                 **unavailable},
                params=[idem], body="NewWorkflow", links=links,
            ),
            "get": op(
                "listWorkflows",
                "The caller's workflows, newest first, without their steps",
                {200: "WorkflowList"},
                {400: "the cursor is malformed", 422: "limit is invalid", **unavailable},
                params=[
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": max_page_size}},
                    {"name": "cursor", "in": "query",
                     "description": "`next_cursor` from the previous page; empty or absent: "
                                    "the first.",
                     "schema": {"type": "string", "pattern": QUERY_CURSOR_PATTERN}},
                ],
            ),
        },
        "/workflows/{workflow_id}": {
            "get": op("getWorkflow", "One workflow with every step, parents first, and its "
                      "progress", {200: "WorkflowView"}, by_id, params=[WORKFLOW_ID]),
        },
        "/workflows/{workflow_id}:cancel": {
            "post": op("cancelWorkflow", "Cancel a workflow: its waiting and pending steps end "
                       "CANCELLED, running ones are asked to stop", {200: "WorkflowView"},
                       by_id, params=[WORKFLOW_ID]),
        },
        "/workflows/{workflow_id}:retry": {"post": retry},
    }
