"""The schedules endpoints (`/schedules`), mixed into SubmitApi: same auth, same problems.

A schedule is its owner's alone, exactly like a job: another owner's answers 404. Its job
template is checked like `POST /jobs` (the preset exists, its options parse, the sizes fit)
when it is stored, not when it fires, so a fire never meets a template it cannot run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.api.http import Request, Response
from common.api.http import json_response as _json
from common.api.problems import InvalidParam, ProblemError, validation_problem
from common.presets.base import InvalidContent, PermanentError
from common.presets.registry import Registry
from common.service import JobService
from common.store.schedule_models import (
    CatchUp,
    NewSchedule,
    Overlap,
    Schedule,
    ScheduleEvent,
    SchedulePatch,
    ScheduleTemplate,
)
from common.store.workflow_models import NewWorkflow


class TemplateView(BaseModel):
    """The job a fire creates, as its owner sees it (the content is not echoed back)."""

    model_config = ConfigDict(defer_build=True)

    preset: str
    metadata: dict[str, Any]
    max_attempts: int | None
    callback_url: str | None = None
    priority: int = Field(description="The priority of each job it fires (0 to 9).")
    limit_key: str | None = Field(default=None, description="The caller's limit key each job "
                                  "it fires falls under, if any.")


class StepTemplateView(BaseModel):
    """One step of the workflow a fire starts (its content is not echoed back)."""

    model_config = ConfigDict(defer_build=True)

    name: str
    preset: str
    after: list[str]
    on_upstream_failure: str


class WorkflowTemplateView(BaseModel):
    """The workflow each fire starts (docs/workflows.md), its steps parents first as given."""

    model_config = ConfigDict(defer_build=True)

    name: str | None
    callback_url: str | None
    steps: list[StepTemplateView]

    @classmethod
    def of(cls, graph: dict[str, Any]) -> WorkflowTemplateView:
        steps = [StepTemplateView(name=s["name"], preset=s["preset"], after=s.get("after", []),
                                  on_upstream_failure=s.get("on_upstream_failure", "cancel"))
                 for s in graph.get("steps", [])]
        return cls(name=graph.get("name"), callback_url=graph.get("callback_url"), steps=steps)


class ScheduleLinks(BaseModel):
    model_config = ConfigDict(defer_build=True)

    self: str
    events: str
    last_job: str | None
    last_workflow: str | None = None


class ScheduleView(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    cron: str
    timezone: str
    job: TemplateView | None = Field(description="The job each fire creates; null for a "
                                     "schedule that starts a workflow.")
    workflow: WorkflowTemplateView | None = Field(default=None, description="The workflow "
                                                  "each fire starts; null for a job's.")
    enabled: bool
    overlap: Overlap
    catch_up: CatchUp
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str | None
    last_workflow_id: str | None = None
    created_at: datetime
    updated_at: datetime
    links: ScheduleLinks

    @classmethod
    def of(cls, s: Schedule) -> ScheduleView:
        base = f"/schedules/{s.id}"
        last = str(s.last_job_id) if s.last_job_id else None
        last_wf = str(s.last_workflow_id) if s.last_workflow_id else None
        job = None if s.preset is None else TemplateView(
            preset=s.preset, metadata=s.metadata, max_attempts=s.max_attempts,
            callback_url=s.callback_url, priority=s.priority, limit_key=s.limit_key)
        return cls(
            id=str(s.id), cron=s.cron, timezone=s.timezone, job=job,
            workflow=WorkflowTemplateView.of(s.workflow) if s.workflow is not None else None,
            last_workflow_id=last_wf,
            enabled=s.enabled, overlap=s.overlap, catch_up=s.catch_up,
            next_fire_at=s.next_fire_at, last_fire_at=s.last_fire_at, last_job_id=last,
            created_at=s.created_at, updated_at=s.updated_at,
            links=ScheduleLinks(self=base, events=base + "/events",
                                last_job=f"/jobs/{last}" if last else None,
                                last_workflow=f"/workflows/{last_wf}" if last_wf else None),
        )


class ScheduleList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    schedules: list[ScheduleView]
    next_cursor: str | None


class ScheduleEventList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    events: list[ScheduleEvent]


def _invalid(name: str, reason: str) -> ProblemError:
    return ProblemError(422, "validation-error", "Invalid request",
                        invalid=[InvalidParam(name=name, reason=reason)])


def checked_template(registry: Registry, template: ScheduleTemplate, field: str, *,
                     allow_loopback: bool) -> ScheduleTemplate:
    """The preset's options must parse, as for POST /jobs; the preset's default attempts are
    filled in; a callback URL is checked as POST /jobs checks one (its form, and where its
    name resolves now). An unknown preset is left to the store, which names the known ones."""
    if template.callback_url is not None:
        from common.messaging import callbacks  # only for templates that have one

        try:
            callbacks.check_at_submit(template.callback_url, allow_loopback=allow_loopback)
        except callbacks.ForbiddenTarget as exc:
            raise _invalid(f"{field}.callback_url", str(exc)) from None
    handler = registry.get(template.preset)
    if handler is None:
        return template
    try:
        handler.parse(template.content, template.metadata)
    except PermanentError as exc:
        where = "content" if isinstance(exc, InvalidContent) else "metadata.options"
        raise _invalid(f"{field}.{where}", str(exc)) from None
    if template.max_attempts is None and handler.default_max_attempts is not None:
        template = template.model_copy(update={"max_attempts": handler.default_max_attempts})
    return template


def schedule_id(raw: str) -> str:
    """A path id that is not a UUID names no schedule: 404, like any other missing one."""
    from uuid import UUID

    try:
        return str(UUID(raw))
    except ValueError:
        raise ProblemError(404, "not-found", "Schedule not found") from None


class ScheduleEndpoints:
    """The /schedules operations of the submit API. SubmitApi builds one on the first such
    request (this module and its models are not imported at a cold start) and hands it the
    way it reads a request body, so both share one size limit and one set of problems."""

    def __init__(
        self, service: JobService, registry: Registry, body: Callable[[Request], Any], *,
        allow_loopback: bool = False,
    ) -> None:
        self.service = service
        self.registry = registry
        self._body = body
        self._allow_loopback = allow_loopback  # WEBHOOK_ALLOW_LOOPBACK, for callback URLs

    def _object_body(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        if not isinstance(body, dict):
            raise _invalid("body", "must be a JSON object")
        return body

    def _create_schedule(self, request: Request, owner: str) -> Response:
        try:
            new = NewSchedule.model_validate(self._object_body(request))
        except ValidationError as exc:
            raise validation_problem(exc) from None
        new = new.model_copy(update=self._checked(new.job, new.workflow, owner))
        view = ScheduleView.of(self.service.store.create_schedule(owner, new))
        return _json(201, view, Location=view.links.self)

    def _checked(self, job: ScheduleTemplate | None, workflow: NewWorkflow | None,
                 owner: str) -> dict[str, Any]:
        """The job template or the workflow given, checked as POST /jobs or POST /workflows
        checks it (the fields to update; none given: nothing)."""
        if job is not None:
            return {"job": checked_template(self.registry, job, "job",
                                            allow_loopback=self._allow_loopback)}
        if workflow is not None:
            from common.api.workflows import checked_workflow

            return {"workflow": checked_workflow(self.registry, workflow, owner=owner,
                                                 allow_loopback=self._allow_loopback,
                                                 field="workflow")}
        return {}

    def _list_schedules(self, request: Request, owner: str) -> Response:
        raw_limit = request.query.get("limit", "50")
        if not raw_limit.isdigit() or len(raw_limit) > 6:
            raise _invalid("limit", "must be an integer")
        page = self.service.store.list_schedules(
            owner, limit=int(raw_limit), cursor=request.query.get("cursor") or None
        )
        return _json(200, ScheduleList(schedules=[ScheduleView.of(s) for s in page.schedules],
                                       next_cursor=page.next_cursor))

    def _get_schedule(self, request: Request, owner: str, schedule_id: str) -> Response:
        sid = _sid(schedule_id)
        return _json(200, ScheduleView.of(self.service.store.get_schedule(owner, sid)))

    def _patch_schedule(self, request: Request, owner: str, schedule_id: str) -> Response:
        sid = _sid(schedule_id)
        try:
            patch = SchedulePatch.model_validate(self._object_body(request))
        except ValidationError as exc:
            raise validation_problem(exc) from None
        patch = patch.model_copy(update=self._checked(patch.job, patch.workflow, owner))
        updated = self.service.store.update_schedule(owner, sid, patch)
        return _json(200, ScheduleView.of(updated))

    def _delete_schedule(self, request: Request, owner: str, schedule_id: str) -> Response:
        self.service.store.delete_schedule(owner, _sid(schedule_id))
        return Response(204, b"", {})

    def _schedule_events(self, request: Request, owner: str, schedule_id: str) -> Response:
        events = self.service.store.schedule_events(owner, _sid(schedule_id))
        return _json(200, ScheduleEventList(events=events))


_sid = schedule_id
