"""Drive jobs into each state through the real store (no SQL shortcuts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from common.store.job_store import JobStore
from common.store.models import Job, NewJob
from common.store.states import JobState


def new_job(**kw: Any) -> NewJob:
    return NewJob(**{"preset": "echo", "content": "hello", **kw})


def job_in_state(store: JobStore, state: JobState, owner: str = "alice", **kw: Any) -> Job:
    if state is JobState.WAITING:  # a workflow's second step, waiting for its first
        from common.store.workflow_models import NewWorkflow, StepSpec

        wf, _, _ = store.create_workflow(owner, NewWorkflow(steps=[
            StepSpec(name="first", preset="echo", content="x"),
            StepSpec(name="then", after=["first"], **{"preset": "echo", "content": "y", **kw}),
        ]))
        return store.get(owner, next(s.job_id for s in wf.steps if s.name == "then"))
    job, _ = store.create(owner, new_job(**kw))
    if state is JobState.PENDING:
        return job
    if state is JobState.CANCELLED:
        return store.cancel(owner, job.id)
    claimed = store.claim(job.id).job
    assert claimed is not None
    if state is JobState.PROCESSING:
        return claimed
    if state is JobState.COMPLETED:
        return store.complete(job.id, claimed.attempts, {"ok": True})
    assert state is JobState.FAILED
    return store.fail(job.id, claimed.attempts, "Broken", "it broke")


def snapshot(engine: Engine, job: Job) -> tuple[Any, ...]:
    """Everything stored about one job, to show an operation changed nothing."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT to_jsonb(j) FROM jobs j WHERE id = :id"), {"id": job.id}
        ).scalar()
        events = conn.execute(
            text("SELECT count(*) FROM job_trail WHERE job_id = :id"), {"id": job.id}
        ).scalar()
        result = conn.execute(
            text("SELECT to_jsonb(r) FROM job_results r WHERE job_id = :id"), {"id": job.id}
        ).scalar()
    return row, events, result
