"""An owner's workflows, newest first, a page at a time (GET /workflows): each without its
steps (GET /workflows/{id} has them), keyset-paged on (created_at, id) like the jobs' list,
on the index ix_workflows_owner_created."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from common.store.callers import CallerOperations
from common.store.cursor import decode_cursor, encode_cursor
from common.store.errors import InvalidInput
from common.store.fragments import checked_owner
from common.store.workflow_models import Workflow
from common.store.workflows import WF_COLS


def _list_sql(with_cursor: bool) -> str:
    where = "owner_id = :owner_id"
    if with_cursor:
        where += " AND (created_at, id) < (:c_created, :c_id)"
    return f"""
SELECT {WF_COLS} FROM workflows WHERE {where}
ORDER BY created_at DESC, id DESC LIMIT :limit"""


SQL_LIST = {c: _list_sql(c) for c in (False, True)}


class WorkflowPage(BaseModel):
    workflows: list[Workflow]
    next_cursor: str | None


class WorkflowListing(CallerOperations):
    def list_workflows(self, owner_id: str, *, limit: int = 50,
                       cursor: str | None = None) -> WorkflowPage:
        if not 1 <= limit <= self._settings.max_page_size:
            raise InvalidInput("limit", f"must be between 1 and {self._settings.max_page_size}")
        params: dict[str, Any] = {"owner_id": checked_owner(owner_id), "limit": limit + 1}
        if cursor:
            params["c_created"], params["c_id"] = decode_cursor(cursor)
        rows = self._rows(SQL_LIST[bool(cursor)], **params)
        items = [Workflow.model_validate(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
        return WorkflowPage(workflows=items, next_cursor=next_cursor)
