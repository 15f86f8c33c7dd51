"""The /schedules routes of the submit API: endpoint names only, so the router knows them at a
cold start while their handlers and models (common/api/schedules.py) load on first use."""

from __future__ import annotations

ROUTES: list[tuple[str, str, str]] = [
    ("/schedules", "POST", "create_schedule"),
    ("/schedules", "GET", "list_schedules"),
    ("/schedules/<schedule_id>", "GET", "get_schedule"),
    ("/schedules/<schedule_id>", "PATCH", "patch_schedule"),
    ("/schedules/<schedule_id>", "DELETE", "delete_schedule"),
    ("/schedules/<schedule_id>/events", "GET", "schedule_events"),
]
ENDPOINTS = frozenset(name for _, _, name in ROUTES)
