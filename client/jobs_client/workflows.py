"""Workflows in the client (docs/workflows.md): the answers' shapes, a builder, and the calls.

    wf = Workflow("episode-42")
    script = wf.step("script", preset="text-stats", content="...")
    wf.step("audio", preset="text-stats", content="...", after=[script])
    done = api.wait_workflow(api.submit_workflow(wf).id)

A step is checked as the API checks a job when it is added (BadRequest before anything is
sent); the graph's own rules (names distinct, parents known, no cycle) are the server's, which
answers 422 naming the step.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs_client.errors import BadRequest, WaitTimeout
from jobs_client.models import JobState, JobTemplate
from jobs_client.transport import Transport

PROBLEM_BASE = "https://jobs-pipeline.dev/problems/"
STEP_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
WorkflowState = Literal["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class StepOut(_Answer):
    """One step of a workflow: its job's state and what it waits for."""

    name: str
    job_id: str
    state: JobState
    attempts: int
    after: list[str]
    waiting_on: int | None  # WAITING: parents not ended yet
    on_upstream_failure: Literal["cancel", "run"]
    spawned_by: str | None
    error_type: str | None  # "UpstreamFailed" for a step cancelled by a parent's failure
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None


class WorkflowLinks(_Answer):
    self: str  # the workflow's path; cancel and retry are `{self}:cancel`, `{self}:retry`


class WorkflowView(_Answer):
    """A workflow: its state, progress (`steps_done` of `steps_total`) and, except in lists,
    every step, parents first."""

    id: str
    name: str | None
    idempotency_key: str | None
    state: WorkflowState
    steps_done: int
    steps_total: int
    broken_step: str | None  # the step whose failure or cancel broke it
    callback_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepOut] | None
    links: WorkflowLinks

    @property
    def terminal(self) -> bool:
        """Whether it has ended: COMPLETED, FAILED or CANCELLED (a retry may reopen it)."""
        return self.state != "RUNNING"

    def step(self, name: str) -> StepOut:
        """The step of that name (KeyError if none, or in a list's view without steps)."""
        for step in self.steps or []:
            if step.name == name:
                return step
        raise KeyError(name)


class WorkflowList(_Answer):
    workflows: list[WorkflowView]
    next_cursor: str | None


class StepSpec(JobTemplate):
    """A step as POST /workflows takes it: a job's fields (no callback of its own), its name
    and the steps it waits for."""

    name: str = Field(min_length=1, max_length=64, pattern=STEP_PATTERN)
    after: list[str] = Field(default_factory=list, max_length=50)
    on_upstream_failure: Literal["cancel", "run"] = "cancel"


class Workflow:
    """A workflow being built: `step()` adds a step and returns its name, to pass in a later
    step's `after`."""

    def __init__(self, name: str | None = None, *, callback_url: str | None = None,
                 idempotency_key: str | None = None) -> None:
        self.name, self.callback_url, self.idempotency_key = name, callback_url, idempotency_key
        self.steps: list[StepSpec] = []

    def step(self, name: str, *, preset: str, content: str, after: Sequence[str] = (),
             on_upstream_failure: Literal["cancel", "run"] = "cancel",
             metadata: dict[str, Any] | None = None, max_attempts: int | None = None,
             priority: int | None = None, limit_key: str | None = None) -> str:
        """Add a step (checked as the API checks a job: BadRequest naming `steps[i].field`
        before anything is sent); returns its name, for a later step's `after`."""
        try:
            spec = StepSpec(name=name, preset=preset, content=content, after=list(after),
                            on_upstream_failure=on_upstream_failure, metadata=metadata or {},
                            max_attempts=max_attempts, priority=priority, limit_key=limit_key)
        except ValidationError as exc:
            at = f"steps[{len(self.steps)}]."
            raise BadRequest(422, "Invalid request", PROBLEM_BASE + "validation-error",
                             invalid_params=[{"name": at + ".".join(str(p) for p in e["loc"]),
                                              "reason": e["msg"]} for e in exc.errors()],
                             ) from None
        self.steps.append(spec)
        return name

    def body(self) -> dict[str, Any]:
        """The request's body (without the idempotency key, which travels as a header)."""
        out: dict[str, Any] = {"steps": [s.model_dump(mode="json", exclude_none=True)
                                         for s in self.steps]}
        if self.name is not None:
            out["name"] = self.name
        if self.callback_url is not None:
            out["callback_url"] = self.callback_url
        return out


class WorkflowCalls(Transport):
    """The /workflows operations, mixed into JobsClient."""

    def submit_workflow(self, workflow: Workflow | dict[str, Any]) -> WorkflowView:
        """Create the workflow (or, for a key used before with the same graph, get it). A new
        UUID is its key unless it has one, so a retry after a dropped connection returns the
        same workflow rather than a second. A dict is sent as it is (the CLI's JSON files)."""
        if isinstance(workflow, Workflow):
            body, key = workflow.body(), workflow.idempotency_key
        else:
            body = dict(workflow)
            key = body.pop("idempotency_key", None)
        key = key or str(uuid.uuid4())
        answer = self.call("POST", "/workflows", body, headers={"Idempotency-Key": key},
                           idempotent=True)
        return WorkflowView.model_validate(answer)

    def get_workflow(self, workflow_id: str | UUID) -> WorkflowView:
        """The workflow with every step (another owner's is NotFound)."""
        return WorkflowView.model_validate(self.call("GET", f"/workflows/{_seg(workflow_id)}"))

    def workflows(self, *, limit: int = 50, cursor: str | None = None) -> WorkflowList:
        """One page of the caller's workflows, newest first, without their steps."""
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return WorkflowList.model_validate(
            self.call("GET", "/workflows?" + urllib.parse.urlencode(query)))

    def cancel_workflow(self, workflow_id: str | UUID) -> WorkflowView:
        """End every step not yet ended (running ones are asked to stop)."""
        return WorkflowView.model_validate(
            self.call("POST", f"/workflows/{_seg(workflow_id)}:cancel"))

    def retry_workflow(self, workflow_id: str | UUID, step: str | None = None) -> WorkflowView:
        """Retry the FAILED steps (or the one named); Conflict if there is nothing to retry."""
        body = {"step": step} if step is not None else None
        return WorkflowView.model_validate(
            self.call("POST", f"/workflows/{_seg(workflow_id)}:retry", body))

    def wait_workflow(self, workflow_id: str | UUID, timeout_s: float = 600.0, *,
                      poll_s: float = 1.0,
                      on_change: Callable[[WorkflowView], None] | None = None) -> WorkflowView:
        """Poll until the workflow ends and return it; `on_change` sees each new progress.
        Raises WaitTimeout (holding the workflow as last seen) after `timeout_s`."""
        deadline = self._clock() + timeout_s
        last: tuple[str, int] | None = None
        while True:
            wf = self.get_workflow(workflow_id)
            if (wf.state, wf.steps_done) != last:
                last = (wf.state, wf.steps_done)
                if on_change is not None:
                    on_change(wf)
            if wf.terminal:
                return wf
            if self._clock() >= deadline:
                raise WaitTimeout(wf, timeout_s)  # type: ignore[arg-type]
            self._sleep(poll_s)


def _seg(value: str | UUID) -> str:
    return urllib.parse.quote(str(value), safe="")


__all__ = ["StepOut", "StepSpec", "Workflow", "WorkflowCalls", "WorkflowLinks", "WorkflowList",
           "WorkflowView"]
