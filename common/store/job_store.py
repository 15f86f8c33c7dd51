"""The job store: one class over the query sets.

procrastinate-style: each concern keeps its SQL beside its methods (`callers`, `batches`,
`bulk`, `worker_moves`, `maintenance_queries`, `webhooks`, `insight`); this class only joins
them, so callers hold one object.
"""

from __future__ import annotations

from common.store.batch_moves import BatchMoves
from common.store.batches import BatchQueries
from common.store.bulk import BulkQueries
from common.store.callers import CallerOperations
from common.store.executions import ExecutionMoves
from common.store.fair_share import FairShareQueries
from common.store.flow_limits import FlowLimitQueries
from common.store.insight import InsightQueries
from common.store.maintenance_queries import MaintenanceQueries
from common.store.schedules import ScheduleQueries
from common.store.webhooks import WebhookQueries
from common.store.workflow_list import WorkflowListing
from common.store.workflows import WorkflowQueries


class JobStore(
    ScheduleQueries, FairShareQueries, FlowLimitQueries, BatchQueries, BulkQueries,
    WorkflowQueries, WorkflowListing, CallerOperations, BatchMoves, ExecutionMoves,
    MaintenanceQueries,
    WebhookQueries, InsightQueries,
):
    """The job repository. Thread-safe: each call checks one connection out of the pool."""
