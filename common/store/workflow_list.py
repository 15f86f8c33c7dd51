"""An owner's workflows, newest first, a page at a time (GET /workflows): each without its
steps (GET /workflows/{id} has them), keyset-paged on (created_at, id) like the jobs' list,
on the index ix_workflows_owner_created."""

from __future__ import annotations

from pydantic import BaseModel

from common.store.callers import CallerOperations
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
        rows, next_cursor = self._owner_page(SQL_LIST, owner_id, limit, cursor)
        return WorkflowPage(workflows=[Workflow.model_validate(r) for r in rows],
                            next_cursor=next_cursor)
