"""The /workflows routes of the submit API: endpoint names only, so the router knows them at a
cold start while their handlers and models (common/api/workflows.py) load on first use. Cancel
and retry are custom methods (`/workflows/{id}:verb`, Google's AIP-136), as the jobs' bulk
actions are."""

from __future__ import annotations

from werkzeug.routing import BaseConverter


class NoColon(BaseConverter):
    """A path segment without a colon: `/workflows/{id}:cancel` is then never also read as
    `GET /workflows/{id}` with the id `…:cancel` (whose 405 would advertise GET)."""

    regex = "[^/:]+"


CONVERTERS = {"nocolon": NoColon}
ROUTES: list[tuple[str, str, str]] = [
    ("/workflows", "POST", "create_workflow"),
    ("/workflows", "GET", "list_workflows"),
    ("/workflows/<nocolon:workflow_id>", "GET", "get_workflow"),
    ("/workflows/<nocolon:workflow_id>:cancel", "POST", "cancel_workflow"),
    ("/workflows/<nocolon:workflow_id>:retry", "POST", "retry_workflow"),
]
ENDPOINTS = frozenset(name for _, _, name in ROUTES)
