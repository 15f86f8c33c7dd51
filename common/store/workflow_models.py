"""Workflows as callers submit and see them (issue 28): named steps, each a job, each with the
steps it waits for. A submitted graph is validated whole before anything is written."""

from __future__ import annotations

import graphlib
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.store.errors import InvalidInput
from common.store.models import MAX_CALLBACK_URL, JobTemplate
from common.store.states import JobState

MAX_STEPS = 500
MAX_PARENTS = 50
MAX_SPAWNS = 1000  # children one job may spawn (ctx.spawn)
STEP_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_STEP_NAME = 64
WorkflowState = Literal["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class StepSpec(JobTemplate):
    """One step: a job's own fields, its name in the workflow, and the steps it waits for.
    `on_upstream_failure`: 'cancel' (the default) ends it CANCELLED when a parent ends FAILED
    or CANCELLED; 'run' runs it anyway once every parent has ended (a cleanup, a report)."""

    name: str = Field(min_length=1, max_length=MAX_STEP_NAME, pattern=STEP_PATTERN)
    after: list[str] = Field(default_factory=list, max_length=MAX_PARENTS)
    on_upstream_failure: Literal["cancel", "run"] = "cancel"


class NewWorkflow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    # Where the workflow's end is POSTed, signed, once (beside each step's own callback).
    callback_url: str | None = Field(default=None, min_length=1, max_length=MAX_CALLBACK_URL)
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("name", "idempotency_key", "callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    def order(self) -> list[StepSpec]:
        """The steps parents first; InvalidInput naming the step for a duplicate name, an
        unknown parent, a step waiting for itself twice, or a cycle."""
        by_name: dict[str, StepSpec] = {}
        for i, step in enumerate(self.steps):
            if step.name in by_name:
                raise InvalidInput(f"steps[{i}].name", f"step {step.name!r} is named twice")
            by_name[step.name] = step
        for i, step in enumerate(self.steps):
            if len(set(step.after)) != len(step.after):
                raise InvalidInput(f"steps[{i}].after", "names a step twice")
            for parent in step.after:
                if parent not in by_name:
                    raise InvalidInput(f"steps[{i}].after",
                                       f"step {step.name!r} waits for {parent!r}, no such step")
        sorter = graphlib.TopologicalSorter({s.name: s.after for s in self.steps})
        try:
            return [by_name[name] for name in sorter.static_order()]
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            first = next(i for i, s in enumerate(self.steps) if s.name == exc.args[1][0])
            raise InvalidInput(f"steps[{first}].after", f"a cycle: {cycle}") from None


def field_name(loc: tuple[int | str, ...]) -> str:
    """pydantic's location of an error as the request writes it: `steps[3].after`."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f"{'.' if name else ''}{part}"
    return name or "body"


def parse_new_workflow(data: Any) -> NewWorkflow:
    """Validate untrusted input whole, graph included; the first problem raises InvalidInput."""
    try:
        workflow = NewWorkflow.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_name(first["loc"])
        raise InvalidInput(field, first["msg"]) from None
    workflow.order()
    return workflow


class StepView(BaseModel):
    """A step as its workflow shows it: its job's state, and what it waits for."""

    name: str
    job_id: UUID
    state: JobState
    attempts: int
    after: list[str]
    waiting_on: int | None
    on_upstream_failure: Literal["cancel", "run"]
    spawned_by: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Workflow(BaseModel):
    id: UUID
    owner_id: str
    name: str | None
    idempotency_key: str | None
    state: WorkflowState
    steps_total: int
    steps_done: int
    broken_step: str | None
    callback_url: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepView] = Field(default_factory=list)


class ParentOutcome(BaseModel):
    """What a step's handler reads of one parent (ctx.parents["render-script"])."""

    model_config = ConfigDict(frozen=True)

    job_id: UUID
    state: JobState
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
