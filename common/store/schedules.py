"""Schedules: an owner's create, read, list, change and delete, and the sweep's fire.

A fire is one statement: it locks the schedule row (SKIP LOCKED, so a second sweep passes it
by), checks that its next fire time is still the one the sweep read, creates the job unless
the previous job is still live and overlap is 'skip' (its 'created' event is derived from the
row: migration 0010), records the fire or the skip, and moves next_fire_at on. The job
insert's ON CONFLICT on (schedule_id, fire_time) is the database's own guarantee of one job per
fire time, whatever the lock missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from common.logs import log
from common.store.errors import DatabaseUnavailable, InvalidInput, ScheduleLimitReached
from common.store.errors import ScheduleNotFound as NotFound
from common.store.fragments import as_uuid, checked_owner, lit, to_json
from common.store.models import DEFAULT_PRIORITY, JobTemplate
from common.store.states import JobState
from common.store.workflow_models import NewWorkflow
from common.store.workflows import WorkflowQueries

if TYPE_CHECKING:  # built on first use: every function imports the store, few touch a schedule
    from common.store.schedule_models import (
        DueSchedule,
        NewSchedule,
        Schedule,
        ScheduleEvent,
        SchedulePage,
        SchedulePatch,
    )

SCOLS = (
    "id, owner_id, cron, timezone, preset, content, metadata, max_attempts, callback_url, "
    "priority, limit_key, workflow, last_workflow_id, enabled, overlap, catch_up, next_fire_at, "
    "last_fire_at, last_job_id, created_at, updated_at"
)
VALUES = (
    ":cron, :timezone, :preset, :content, CAST(:metadata AS jsonb), :max_attempts, "
    "CAST(:callback_url AS text), :priority, CAST(:limit_key AS text), "
    "CAST(:workflow AS jsonb), :enabled, :overlap, :catch_up, "
    "CAST(:next_fire_at AS timestamptz)"
)
FIELDS = "cron, timezone, preset, content, metadata, max_attempts, callback_url, priority, " \
         "limit_key, workflow, enabled, " \
         "overlap, catch_up, next_fire_at"

# The owner's quota is read in the same statement. Two creates at the same instant can both
# see room for one: the quota may then be passed by one, which is all it is for (a bound on
# what one owner keeps, not a security boundary).
SQL_CREATE = f"""
INSERT INTO schedules (owner_id, {FIELDS})
SELECT :owner_id, {VALUES}
WHERE (SELECT count(*) FROM schedules WHERE owner_id = :owner_id) < :max_schedules
RETURNING {SCOLS}"""

SQL_GET = f"SELECT {SCOLS} FROM schedules WHERE id = :id AND owner_id = :owner_id"

SQL_UPDATE = f"""
UPDATE schedules SET ({FIELDS}) = ({VALUES}), updated_at = now()
WHERE id = :id AND owner_id = :owner_id AND updated_at = :seen
RETURNING {SCOLS}"""

SQL_DELETE = "DELETE FROM schedules WHERE id = :id AND owner_id = :owner_id RETURNING id"

SQL_EVENTS = """
SELECT e.id, e.schedule_id, e.fire_time, e.kind, e.job_id, e.details, e.at
FROM schedule_events e JOIN schedules s ON s.id = e.schedule_id
WHERE s.id = :id AND s.owner_id = :owner_id
ORDER BY e.id DESC LIMIT :limit"""


def _list_sql(with_cursor: bool) -> str:
    where = "owner_id = :owner_id"
    if with_cursor:
        where += " AND (created_at, id) < (:c_created, :c_id)"
    return f"""
SELECT {SCOLS} FROM schedules WHERE {where}
ORDER BY created_at DESC, id DESC LIMIT :limit"""


SQL_LIST = {c: _list_sql(c) for c in (False, True)}

# The sweep's due-scan, on the partial index ix_schedules_due. "Now" is the sweep's clock, the
# one it plans the fires with, so the two never disagree on what is due. :passed are the
# schedules this pass is done with (see common/maintenance/schedules.py).
SQL_DUE = """
SELECT id, cron, timezone, catch_up, next_fire_at, owner_id, overlap, workflow,
       last_workflow_id
FROM schedules
WHERE enabled AND next_fire_at <= CAST(:now AS timestamptz)
  AND NOT (id = ANY(CAST(:passed AS uuid[])))
ORDER BY next_fire_at LIMIT :limit"""

LIVE = f"({lit(JobState.PENDING)},{lit(JobState.PROCESSING)})"
SQL_FIRE = f"""
WITH s AS (
    SELECT id, owner_id, preset, content, metadata, max_attempts, callback_url, overlap,
           last_job_id, priority, limit_key, workflow
    FROM schedules
    WHERE id = :id AND enabled AND next_fire_at = CAST(:expected AS timestamptz)
    FOR UPDATE SKIP LOCKED
), busy AS (
    SELECT j.id FROM s JOIN jobs j ON j.id = s.last_job_id
    WHERE s.overlap = 'skip' AND j.state IN {LIVE}
), job AS (
    INSERT INTO jobs (owner_id, preset, content, metadata, max_attempts, attempt_limit, state,
                      schedule_id, fire_time, callback_url, priority, limit_key)
    SELECT owner_id, preset, content, metadata, COALESCE(max_attempts, :default_max),
           COALESCE(max_attempts, :default_max), {lit(JobState.PENDING)}, id,
           CAST(:fire_time AS timestamptz), callback_url, priority, limit_key
    FROM s WHERE NOT EXISTS (SELECT 1 FROM busy) AND s.workflow IS NULL
    ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
    RETURNING id, state, attempts
), sev AS (
    INSERT INTO schedule_events (schedule_id, fire_time, kind, job_id, details)
    SELECT s.id, CAST(:fire_time AS timestamptz),
           CASE WHEN job.id IS NULL AND CAST(:workflow_id AS uuid) IS NULL THEN 'skipped'
                ELSE 'fired' END, job.id,
           CASE WHEN CAST(:workflow_id AS uuid) IS NOT NULL
                THEN jsonb_build_object('missed', CAST(:missed AS integer),
                                        'workflow_id', CAST(:workflow_id AS text))
                WHEN s.workflow IS NOT NULL
                THEN jsonb_build_object('reason', CAST(:skip_reason AS text))
                WHEN job.id IS NOT NULL THEN jsonb_build_object('missed', CAST(:missed AS integer))
                WHEN EXISTS (SELECT 1 FROM busy)
                THEN jsonb_build_object('reason', 'previous-job-live',
                                        'job_id', (SELECT CAST(id AS text) FROM busy))
                ELSE jsonb_build_object('reason', 'already-fired') END
    FROM s LEFT JOIN job ON true
    ON CONFLICT (schedule_id, fire_time) DO NOTHING
), upd AS (
    UPDATE schedules t SET next_fire_at = CAST(:next AS timestamptz),
        last_fire_at = CASE WHEN EXISTS (SELECT 1 FROM job)
                                 OR CAST(:workflow_id AS uuid) IS NOT NULL
                            THEN CAST(:fire_time AS timestamptz) ELSE t.last_fire_at END,
        last_job_id = COALESCE((SELECT id FROM job), t.last_job_id),
        last_workflow_id = COALESCE(CAST(:workflow_id AS uuid), t.last_workflow_id)
    FROM s WHERE t.id = s.id
    RETURNING t.id
)
SELECT COALESCE((SELECT id FROM job), CAST(:workflow_id AS uuid)) AS job_id,
       EXISTS (SELECT 1 FROM upd) AS taken"""
SQL_WORKFLOW_RUNNING = """
SELECT EXISTS (SELECT 1 FROM workflows WHERE id = :id AND state = 'RUNNING') AS running"""

SQL_PURGE_EVENTS = """
WITH victims AS (
    SELECT id FROM schedule_events WHERE at < now() - make_interval(days => :days)
    ORDER BY at LIMIT :batch
)
DELETE FROM schedule_events e WHERE e.id = ANY(ARRAY(SELECT id FROM victims)) RETURNING e.id"""


class ScheduleQueries(WorkflowQueries):
    """An owner's schedules, and the sweep's due-scan and fire."""

    def _schedule_params(
        self, owner: str, template: JobTemplate | None, values: dict[str, Any], now: datetime,
        workflow: NewWorkflow | None = None,
    ) -> dict[str, Any]:
        """Check everything a stored schedule holds; its next fire time if enabled."""
        from common.store import cron  # its grammar is a large regex: compiled on first use

        if template is not None:
            self._check_new_job(template)
        if workflow is not None:
            if workflow.idempotency_key is not None:
                raise InvalidInput("workflow.idempotency_key", "each fire gets its own key (the "
                                   "schedule's id and the fire time): leave it out")
            for step in workflow.order():  # the whole graph, as POST /workflows checks it
                self._check_new_job(step)
        first = cron.check(values["cron"], values["timezone"], now,
                           self._settings.schedule_min_interval_s)
        next_fire = first if values["enabled"] else None
        return {
            "owner_id": owner,
            "cron": values["cron"],
            "timezone": values["timezone"],
            "preset": template.preset if template else None,
            "content": template.content if template else None,
            "metadata": to_json(template.metadata if template else {}, "job.metadata"),
            "max_attempts": template.max_attempts if template else None,
            "callback_url": getattr(template, "callback_url", None),
            "priority": template.priority if template and template.priority is not None
            else DEFAULT_PRIORITY,
            "limit_key": template.limit_key if template else None,
            "workflow": to_json(workflow.model_dump(mode="json", exclude={"idempotency_key"}),
                                "workflow") if workflow is not None else None,
            "enabled": values["enabled"],
            "overlap": values["overlap"],
            "catch_up": values["catch_up"],
            "next_fire_at": next_fire,
        }

    def create_schedule(self, owner_id: str, new: NewSchedule) -> Schedule:
        from common.store.schedule_models import Schedule

        owner = checked_owner(owner_id)
        params = self._schedule_params(owner, new.job,
                                       new.model_dump(exclude={"job", "workflow"}),
                                       datetime.now(UTC), new.workflow)
        rows = self._rows(SQL_CREATE, **params,
                          max_schedules=self._settings.max_schedules_per_owner)
        if not rows:
            raise ScheduleLimitReached(self._settings.max_schedules_per_owner)
        return Schedule.model_validate(rows[0])

    def get_schedule(self, owner_id: str, schedule_id: UUID | str) -> Schedule:
        from common.store.schedule_models import Schedule

        rows = self._rows(SQL_GET, id=as_uuid(schedule_id), owner_id=checked_owner(owner_id))
        if not rows:
            raise NotFound(schedule_id)
        return Schedule.model_validate(rows[0])

    def list_schedules(self, owner_id: str, *, limit: int = 50,
                       cursor: str | None = None) -> SchedulePage:
        from common.store.schedule_models import Schedule, SchedulePage

        rows, next_cursor = self._owner_page(SQL_LIST, owner_id, limit, cursor)
        return SchedulePage(schedules=[Schedule.model_validate(r) for r in rows],
                            next_cursor=next_cursor)

    def update_schedule(self, owner_id: str, schedule_id: UUID | str,
                        patch: SchedulePatch) -> Schedule:
        """Apply the given fields. A new expression or zone, or a resume, sets the next fire
        time from now: a paused window is not caught up."""
        from common.store.schedule_models import Schedule, ScheduleTemplate

        given = patch.given()
        for _ in range(3):  # another change in between: read again and re-apply
            current = self.get_schedule(owner_id, schedule_id)
            values = {k: getattr(current, k) for k in ("cron", "timezone", "enabled",
                                                      "overlap", "catch_up")}
            values.update({k: v for k, v in given.items() if k not in ("job", "workflow")})
            template: ScheduleTemplate | None = None
            workflow: NewWorkflow | None = None
            if "job" in given or "workflow" in given:  # the new one replaces what it was
                template, workflow = given.get("job"), given.get("workflow")
            elif current.workflow is not None:
                workflow = NewWorkflow.model_validate(current.workflow)
            else:
                template = ScheduleTemplate(
                    preset=current.preset or "", content=current.content or "",
                    metadata=current.metadata, max_attempts=current.max_attempts,
                    callback_url=current.callback_url, priority=current.priority,
                    limit_key=current.limit_key)
            params = self._schedule_params(current.owner_id, template, values, datetime.now(UTC),
                                           workflow)
            timing = ("cron", "timezone", "enabled")
            if values["enabled"] and current.enabled and not any(
                k in given and values[k] != getattr(current, k) for k in timing
            ):
                params["next_fire_at"] = current.next_fire_at  # nothing moved: keep the plan
            rows = self._rows(SQL_UPDATE, **params, id=current.id, seen=current.updated_at)
            if rows:
                return Schedule.model_validate(rows[0])
        raise DatabaseUnavailable("schedule kept changing")

    def delete_schedule(self, owner_id: str, schedule_id: UUID | str) -> None:
        """Its events go with it; the jobs it created stay."""
        if not self._rows(SQL_DELETE, id=as_uuid(schedule_id), owner_id=checked_owner(owner_id)):
            raise NotFound(schedule_id)

    def schedule_events(self, owner_id: str, schedule_id: UUID | str,
                        limit: int = 100) -> list[ScheduleEvent]:
        """The newest `limit` fires and skips, newest first."""
        from common.store.schedule_models import ScheduleEvent

        self.get_schedule(owner_id, schedule_id)  # 404 for a missing or foreign schedule
        rows = self._rows(SQL_EVENTS, id=as_uuid(schedule_id),
                          owner_id=checked_owner(owner_id), limit=limit)
        return [ScheduleEvent.model_validate(r) for r in rows]

    # -- the sweep ---------------------------------------------------------------------------

    def due_schedules(self, limit: int, *, now: datetime | None = None,
                      passed: Iterable[UUID] = ()) -> list[DueSchedule]:
        """Up to `limit` schedules due at `now` (default: this instant), oldest due first,
        except those in `passed`."""
        from common.store.schedule_models import DueSchedule

        rows = self._rows(SQL_DUE, limit=limit, now=now or datetime.now(UTC),
                          passed=[str(i) for i in passed])
        return [DueSchedule.model_validate(r) for r in rows]

    def fire(self, due: DueSchedule, fire_time: datetime, next_fire: datetime,
             missed: int) -> tuple[bool, UUID | None]:
        """(whether this call moved the schedule on, the job or workflow it started if any).
        A workflow is created first, keyed by the schedule and the fire time (a pass retried
        after a crash between the two statements finds it), then the fire is recorded; with
        overlap 'skip' it is not created while the previous fire's workflow runs."""
        workflow_id, skip_reason = None, None
        if due.workflow is not None:
            workflow_id, skip_reason = self._fire_workflow(due, fire_time)
        rows = self._rows(
            SQL_FIRE, id=due.id, expected=due.next_fire_at, fire_time=fire_time,
            next=next_fire, missed=missed, workflow_id=workflow_id, skip_reason=skip_reason,
            default_max=self._settings.default_max_attempts,
        )
        return bool(rows[0]["taken"]), rows[0]["job_id"]

    def _fire_workflow(self, due: DueSchedule,
                       fire_time: datetime) -> tuple[UUID | None, str | None]:
        if due.overlap == "skip" and due.last_workflow_id is not None and self._rows(
                SQL_WORKFLOW_RUNNING, id=due.last_workflow_id)[0]["running"]:
            return None, "previous-workflow-running"
        spec = NewWorkflow.model_validate({
            **(due.workflow or {}),
            "idempotency_key": f"schedule:{due.id}:{fire_time.astimezone(UTC).isoformat()}"})
        try:
            workflow, _, _ = self.create_workflow(due.owner_id, spec, dispatching=False)
        except InvalidInput as exc:  # e.g. a preset removed since the schedule was written
            log("ERROR", "scheduled workflow cannot be created", schedule_id=str(due.id),
                reason=exc.message)
            return None, "workflow-refused"
        return workflow.id, None

    def purge_schedule_events(self, older_than_days: int, *, batch_size: int) -> int:
        return len(self._rows(SQL_PURGE_EVENTS, days=older_than_days, batch=batch_size))
