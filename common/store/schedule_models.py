"""Pydantic models of schedules: what a caller asks for, and what the store keeps.

Each is built on first use (`defer_build`), not at import: every function imports the store,
and only the API and the sweep ever touch a schedule.

The cron expression and the zone are checked by common/store/cron.py (cronsim and the zone
database), not here: this layer only bounds their size and shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from common.store.models import MAX_CALLBACK_URL, JobTemplate
from common.store.workflow_models import NewWorkflow

Overlap = Literal["skip", "allow"]
CatchUp = Literal["once", "all"]


class _NoNulls(BaseModel):
    """Shared by create and patch: a field that is given must have a value (explicit null is
    refused, as the document says)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value


class ScheduleTemplate(JobTemplate):
    """The job each fire creates: a job's own fields, and where its end is POSTed (checked by
    the API like POST /jobs' callback_url, common/messaging/callbacks.py)."""

    callback_url: str | None = Field(default=None, min_length=1, max_length=MAX_CALLBACK_URL)

    @field_validator("callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class NewSchedule(_NoNulls):
    """What each fire starts: a job (`job`) or a workflow (`workflow`, issue 28), one of them."""

    cron: str = Field(min_length=1, max_length=120)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    job: ScheduleTemplate | None = None
    workflow: NewWorkflow | None = None
    enabled: StrictBool = True
    overlap: Overlap = "skip"
    catch_up: CatchUp = "once"

    @model_validator(mode="after")
    def _job_or_workflow(self) -> NewSchedule:
        if (self.job is None) == (self.workflow is None):
            raise ValueError("give job or workflow, one of them")
        return self


class SchedulePatch(_NoNulls):
    """Only the fields given change; `job` replaces the whole template."""

    cron: str = Field(default="", min_length=1, max_length=120)
    timezone: str = Field(default="", min_length=1, max_length=64)
    job: ScheduleTemplate | None = None
    workflow: NewWorkflow | None = None
    enabled: StrictBool = True
    overlap: Overlap = "skip"
    catch_up: CatchUp = "once"

    @model_validator(mode="after")
    def _job_or_workflow(self) -> SchedulePatch:
        if self.job is not None and self.workflow is not None:
            raise ValueError("give job or workflow, not both")
        return self

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class Schedule(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: UUID
    owner_id: str
    cron: str
    timezone: str
    preset: str | None  # None for a schedule that starts a workflow
    content: str | None
    metadata: dict[str, Any]
    max_attempts: int | None
    callback_url: str | None = None
    priority: int = 5
    limit_key: str | None = None
    workflow: dict[str, Any] | None = None  # the graph each fire starts (NewWorkflow's form)
    last_workflow_id: UUID | None = None
    enabled: bool
    overlap: Overlap
    catch_up: CatchUp
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: UUID | None
    created_at: datetime
    updated_at: datetime


class ScheduleEvent(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: int
    schedule_id: UUID
    fire_time: datetime
    kind: Literal["fired", "skipped"]
    job_id: UUID | None
    details: dict[str, Any]
    at: datetime


class SchedulePage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    schedules: list[Schedule]
    next_cursor: str | None


class DueSchedule(BaseModel):
    """What the sweep needs to fire one schedule."""

    model_config = ConfigDict(defer_build=True)

    id: UUID
    cron: str
    timezone: str
    catch_up: CatchUp
    next_fire_at: datetime
    owner_id: str = ""
    overlap: Overlap = "skip"
    workflow: dict[str, Any] | None = None
    last_workflow_id: UUID | None = None
