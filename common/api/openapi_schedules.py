"""The schedules' part of the OpenAPI document (common/api/openapi.py builds the rest).

The request bodies are written out rather than generated, to state exactly what the store
checks: the cron pattern is the store's own (common/store/cron_grammar.py), the zone is one of
the zone database's names on this instance, and a field that is given may not be null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.settings import Settings
from common.store.cron import MAX_CRON_CHARS, zone_names
from common.store.cron_grammar import cron_pattern

REF = "#/components/schemas/{model}"
SCHEDULE_ID = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "description": "A schedule's id; any other text names no schedule (404).",
    "schema": {"type": "string", "format": "uuid"},
}


def _fields(settings: Settings) -> dict[str, Any]:
    return {
        "cron": {"$ref": REF.format(model="CronExpression")},
        "timezone": {"$ref": REF.format(model="TimeZone")},
        "job": {"$ref": REF.format(model="JobTemplate")},
        "workflow": {"$ref": REF.format(model="ScheduleWorkflow")},
        "enabled": {"type": "boolean", "description": "false pauses the schedule."},
        "overlap": {
            "enum": ["skip", "allow"],
            "description": "skip (default): no new job while the last one is PENDING or "
                           "PROCESSING, the fire is recorded as skipped; allow: fire anyway.",
        },
        "catch_up": {
            "enum": ["once", "all"],
            "description": "After the sweep could not run: once (default) fires one job for "
                           "the whole missed window; all fires every missed tick.",
        },
    }


def _shared(settings: Settings) -> dict[str, Any]:
    """Written once, referred to by both bodies: the pattern and the zone list are long."""
    return {
        "CronExpression": {
            "type": "string", "maxLength": MAX_CRON_CHARS, "pattern": cron_pattern(),
            "description": "Five fields (minute hour day-of-month month day-of-week) separated "
                           "by spaces or tabs, Debian cron's syntax as cronsim reads it: "
                           "numbers with or without one leading zero, ranges upwards, steps "
                           "1-99, month and day names in any case, L/LW in day-of-month, 5L "
                           "and MON#2 in day-of-week. Fires at most once per "
                           f"{settings.schedule_min_interval_s} s (SCHEDULE_MIN_INTERVAL_S). "
                           "A refused expression's 422 names the cron field that is wrong.",
        },
        "TimeZone": {"enum": zone_names(), "description": "An IANA time zone (default UTC)."},
    }


def schedule_schemas(settings: Settings) -> dict[str, Any]:
    fields = _fields(settings)
    return {
        **_shared(settings),
        "NewSchedule": {
            "type": "object", "additionalProperties": False, "required": ["cron"],
            "properties": fields,
            "description": "Each fire creates a job (`job`) or starts a workflow (`workflow`): "
                           "one of them.",
            "oneOf": [{"required": ["job"]}, {"required": ["workflow"]}],
        },
        "SchedulePatch": {
            "type": "object", "additionalProperties": False, "properties": fields,
            "description": "Only the fields given change; `job` or `workflow` (not both) "
                           "replaces what each fire starts. A new cron or zone, or a resume, "
                           "plans the next fire from now.",
            "not": {"required": ["job", "workflow"]},
        },
    }


Op = Callable[..., dict[str, Any]]


def schedule_paths(settings: Settings, op: Op, unavailable: dict[int, str]) -> dict[str, Any]:
    links = {
        name: {"operationId": name, "parameters": {"schedule_id": "$response.body#/id"}}
        for name in ("getSchedule", "updateSchedule", "deleteSchedule", "getScheduleEvents")
    }
    by_id = {404: "no such schedule, or another owner's", **unavailable}
    body_errors = {
        400: "the body is not JSON",
        413: "the body is larger than the content and metadata limits allow",
        415: "Content-Type is not application/json",
        422: "the body is not a valid schedule (cron, zone, job template or workflow: a "
             "workflow's 422 names the step, as POST /workflows does)",
    }
    delete = op("deleteSchedule", "Delete a schedule (the jobs it made stay)", {204: "none"},
                by_id, params=[SCHEDULE_ID])
    delete["responses"]["204"] = {"description": "deleted"}
    list_params = [
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": settings.max_page_size}},
        {"name": "cursor", "in": "query",
         "description": "`next_cursor` from the previous page; empty or absent: the first.",
         "schema": {"type": "string", "pattern": r"^(?:[0-9]{1,16}\.[0-9a-f]{32})?$"}},
    ]
    return {
        "/schedules": {
            "post": op(
                "createSchedule", "Create a schedule", {201: "ScheduleView"},
                {**body_errors, 409: "the owner has as many schedules as allowed",
                 **unavailable},
                body="NewSchedule", links=links,
            ),
            "get": op("listSchedules", "The caller's schedules, newest first",
                      {200: "ScheduleList"},
                      {400: "the cursor is malformed", 422: "limit is invalid", **unavailable},
                      params=list_params),
        },
        "/schedules/{schedule_id}": {
            "get": op("getSchedule", "One schedule: its last and next fire, its last job",
                      {200: "ScheduleView"}, by_id, params=[SCHEDULE_ID]),
            "patch": op("updateSchedule", "Change, pause (enabled: false) or resume a schedule",
                        {200: "ScheduleView"}, {**body_errors, **by_id},
                        params=[SCHEDULE_ID], body="SchedulePatch"),
            "delete": delete,
        },
        "/schedules/{schedule_id}/events": {
            "get": op("getScheduleEvents", "The newest 100 fires and skips, newest first",
                      {200: "ScheduleEventList"}, by_id, params=[SCHEDULE_ID]),
        },
    }
