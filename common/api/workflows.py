"""The workflows endpoints of the submit API (issue 28, docs/workflows.md): `POST /workflows`,
`GET /workflows`, `GET /workflows/{id}`, `POST /workflows/{id}:cancel` and
`POST /workflows/{id}:retry`.

A workflow is its owner's alone, like a job: another owner's answers 404. A graph is checked
whole before anything is written, each problem naming the step as the request writes it
(`steps[3].after`): its shape and the graph here and in the store (common/store/
workflow_models.py), each step's content and options by its preset as POST /jobs checks them,
the workflow's callback URL by the same rules as a job's. The first steps are published in one
batch after the commit, as batch submit's jobs are (common/service.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.api.http import Request, Response, parse_json, read_body
from common.api.http import json_response as _json
from common.api.problems import InvalidParam, ProblemError
from common.logs import current_traceparent, log
from common.presets.base import InvalidContent, PermanentError
from common.presets.registry import Registry
from common.service import JobService
from common.settings import Settings
from common.store.states import JobState
from common.store.workflow_models import (
    NewWorkflow,
    StepView,
    Workflow,
    WorkflowState,
    field_name,
)

# 500 steps of ordinary jobs, as a batch of 1,000 has room for (common/api/flow.py).
WORKFLOW_MAX_BODY_BYTES = 16 * 1024 * 1024
RETRY_MAX_BODY_BYTES = 4096
MAX_RETRY_STEP = 200  # a spawned step's name is `<parent>/<key>`


def _invalid(name: str, reason: str, status: int = 422) -> ProblemError:
    return ProblemError(status, "validation-error", "Invalid request",
                        invalid=[InvalidParam(name=name, reason=reason)])


def _problem_of(exc: ValidationError) -> ProblemError:
    """422 naming each invalid field (the first 20) as the request writes it: steps[3].name."""
    invalid = [InvalidParam(name=field_name(e["loc"]),
                            reason=e["msg"].removeprefix("Value error, "))
               for e in exc.errors()[:20]]
    return ProblemError(422, "validation-error", "Invalid request", invalid=invalid)


class StepOut(BaseModel):
    """One step of a workflow: its job's state, and what it waits for."""

    model_config = ConfigDict(defer_build=True)

    name: str = Field(description="Its name in the workflow; a spawned child's is "
                      "`<parent>/<key>`.")
    job_id: str = Field(description="The step's job (GET /jobs/{job_id}).")
    state: JobState
    attempts: int
    after: list[str] = Field(description="The steps it waits for.")
    waiting_on: int | None = Field(description="WAITING: how many of them have not ended yet.")
    on_upstream_failure: Literal["cancel", "run"]
    spawned_by: str | None = Field(description="The step whose handler spawned it, if any.")
    error_type: str | None = Field(description="`UpstreamFailed` for a step cancelled because "
                                   "a parent failed; else its handler's error, if it failed.")
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, step: StepView) -> StepOut:
        return cls(**step.model_dump(exclude={"job_id"}), job_id=str(step.job_id))


class WorkflowLinks(BaseModel):
    """Where the workflow is. Its custom methods (`{self}:cancel`, `{self}:retry`) are not
    listed: read as links, they would be taken for ids of `GET /workflows/{id}`."""

    model_config = ConfigDict(defer_build=True)

    self: str


class WorkflowView(BaseModel):
    """A workflow as its owner sees it: its state, progress, and (except in lists) its
    steps, parents first."""

    model_config = ConfigDict(defer_build=True)

    id: str
    name: str | None
    idempotency_key: str | None
    state: WorkflowState = Field(description="RUNNING until every step has ended; then "
                                 "COMPLETED (every step COMPLETED), FAILED or CANCELLED.")
    steps_done: int = Field(description="Steps that have ended, in any end state.")
    steps_total: int = Field(description="Steps in all, spawned ones included.")
    broken_step: str | None = Field(description="The step whose failure or cancel broke the "
                                    "workflow (not one cancelled upstream).")
    callback_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepOut] | None = Field(description="Every step, parents first; null in "
                                        "lists (GET /workflows/{id} has them).")
    links: WorkflowLinks

    @classmethod
    def of(cls, wf: Workflow, *, with_steps: bool = True) -> WorkflowView:
        base = f"/workflows/{wf.id}"
        fields = wf.model_dump(include=set(cls.model_fields) - {"id", "steps", "links"})
        return cls(**fields, id=str(wf.id),
                   steps=[StepOut.of(s) for s in wf.steps] if with_steps else None,
                   links=WorkflowLinks(self=base))


class WorkflowList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    workflows: list[WorkflowView]
    next_cursor: str | None


class RetryRequest(BaseModel):
    """`{}` retries every FAILED step, `{"step": name}` the one named."""

    model_config = ConfigDict(extra="forbid")

    step: str | None = Field(default=None, min_length=1, max_length=MAX_RETRY_STEP)

    @field_validator("step", mode="before")
    @classmethod
    def _given_means_a_name(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value


def checked_workflow(registry: Registry, new: NewWorkflow, *, owner: str, allow_loopback: bool,
                     field: str = "") -> NewWorkflow:
    """The graph (names, parents, no cycle), each step's content and options by its preset as
    POST /jobs checks them (the preset's default attempts filled in), and the callback URL as
    a job's is checked; each problem names the field under `field` (a schedule's `workflow`).
    An unknown preset is left to the store, which names the step and the known presets."""
    from common.store.errors import InvalidInput

    at = f"{field}." if field else ""
    try:
        new.order()
    except InvalidInput as exc:
        raise _invalid(at + exc.field, exc.message) from None
    steps = list(new.steps)
    for i, step in enumerate(steps):
        handler = registry.get(step.preset)
        if handler is None:
            continue
        try:
            handler.parse(step.content, step.metadata)
        except PermanentError as exc:
            where = "content" if isinstance(exc, InvalidContent) else "metadata.options"
            raise _invalid(f"{at}steps[{i}].{where}", str(exc)) from None
        if step.max_attempts is None and handler.default_max_attempts is not None:
            steps[i] = step.model_copy(update={"max_attempts": handler.default_max_attempts})
    if new.callback_url is not None:
        from common.messaging import callbacks  # only for workflows that have one

        try:
            callbacks.check_at_submit(new.callback_url, owner=owner,
                                      allow_loopback=allow_loopback)
        except callbacks.ForbiddenTarget as exc:
            raise _invalid(at + "callback_url", str(exc)) from None
    return new.model_copy(update={"steps": steps})


def workflow_id(raw: str) -> str:
    """A path id that is not a UUID names no workflow: 404, like any other missing one."""
    from uuid import UUID

    try:
        return str(UUID(raw))
    except ValueError:
        raise ProblemError(404, "not-found", "Workflow not found") from None


class WorkflowEndpoints:
    """The /workflows operations. SubmitApi builds one on the first such request and hands it
    the way it reads a request body (one set of problems for the whole API)."""

    def __init__(self, service: JobService, registry: Registry, settings: Settings,
                 body: Callable[[Request, int], Any]) -> None:
        self.service = service
        self.registry = registry
        self.settings = settings
        self._body = body

    def _create_workflow(self, request: Request, owner: str) -> Response:
        body = self._body(request, WORKFLOW_MAX_BODY_BYTES)
        if not isinstance(body, dict):
            raise _invalid("body", "must be a JSON object")
        header_key = request.headers.get("Idempotency-Key")
        if header_key is not None:
            if body.get("idempotency_key") not in (None, header_key):
                raise ProblemError(409, "idempotency-key-mismatch", "Idempotency keys differ",
                                   "The Idempotency-Key header and the body's idempotency_key "
                                   "differ.")
            body = {**body, "idempotency_key": header_key}
        new = self.read(body, owner)
        wf, created = self.service.submit_workflow(owner, new, traceparent=current_traceparent())
        log("INFO", "workflow accepted" if created else "workflow replayed",
            workflow_id=str(wf.id), owner=owner, steps=wf.steps_total)
        view = WorkflowView.of(wf)
        return _json(201 if created else 200, view, Location=view.links.self)

    def read(self, body: dict[str, Any], owner: str) -> NewWorkflow:
        """The whole graph checked, or the first problem naming its field (nothing written)."""
        try:
            new = NewWorkflow.model_validate(body)
        except ValidationError as exc:
            raise _problem_of(exc) from None
        return checked_workflow(self.registry, new, owner=owner,
                                allow_loopback=self.settings.webhook_allow_loopback)

    def _list_workflows(self, request: Request, owner: str) -> Response:
        raw_limit = request.query.get("limit", "50")
        if not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 6:
            raise _invalid("limit", "must be an integer")
        page = self.service.store.list_workflows(owner, limit=int(raw_limit),
                                                 cursor=request.query.get("cursor") or None)
        return _json(200, WorkflowList(
            workflows=[WorkflowView.of(w, with_steps=False) for w in page.workflows],
            next_cursor=page.next_cursor))

    def _get_workflow(self, request: Request, owner: str, workflow_id: str) -> Response:
        wf = self.service.store.get_workflow(owner, _wid(workflow_id))
        return _json(200, WorkflowView.of(wf))

    def _cancel_workflow(self, request: Request, owner: str, workflow_id: str) -> Response:
        wf = self.service.store.cancel_workflow(owner, _wid(workflow_id))
        log("INFO", "workflow cancelled", workflow_id=str(wf.id), owner=owner)
        return _json(200, WorkflowView.of(wf))

    def _retry_workflow(self, request: Request, owner: str, workflow_id: str) -> Response:
        wid = _wid(workflow_id)
        step = self._retry_step(request)
        wf, retried = self.service.retry_workflow(owner, wid, step)
        if not retried:
            raise ProblemError(409, "nothing-to-retry", "Nothing to retry",
                               "no FAILED step with attempts left" + (
                                   f" named {step!r}" if step else ""), state=wf.state)
        log("INFO", "workflow retried", workflow_id=str(wf.id), owner=owner, steps=retried)
        return _json(202, WorkflowView.of(wf))

    def _retry_step(self, request: Request) -> str | None:
        """The optional body `{"step": "name"}`; no body, or `{}`, retries every FAILED step."""
        raw = read_body(request, RETRY_MAX_BODY_BYTES)
        if not raw.strip():
            return None
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise ProblemError(415, "unsupported-media-type",
                               "Content-Type must be application/json")
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise _invalid("body", "must be a JSON object")
        try:
            return RetryRequest.model_validate(body).step
        except ValidationError as exc:
            raise _problem_of(exc) from None


_wid = workflow_id
