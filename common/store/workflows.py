"""Workflows in the store (issue 28): a graph created in one statement, read with its steps'
states, cancelled or retried whole or from one step, and the run-time side of its steps (their
parents' outcomes, children spawned exactly once, the steps a parent's end made due).

The moves a step's end causes (children unblocked or cancelled, the workflow's count) are made
by the trigger of migration 0021, in the statement that ends the step, whatever ended it.
"""

from __future__ import annotations

import hashlib
import json
from uuid import UUID

from common.store.callers import CallerOperations
from common.store.errors import (
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    WorkflowNotFound,
)
from common.store.fragments import (
    MAX_TOTAL_ATTEMPTS,
    as_uuid,
    checked_owner,
    has_surrogate,
    lit,
    to_json,
    trace_of,
)
from common.store.models import DEFAULT_PRIORITY, DispatchItem, JobTemplate
from common.store.states import JobState
from common.store.workflow_models import (
    MAX_SPAWNS,
    MAX_STEP_NAME,
    NewWorkflow,
    ParentOutcome,
    StepView,
    Workflow,
)

W, P, R = lit(JobState.WAITING), lit(JobState.PENDING), lit(JobState.PROCESSING)
TAKEN = f"id, attempts, {trace_of()}"

SQL_CREATE = f"""
WITH wf AS (
    INSERT INTO workflows (owner_id, name, idempotency_key, request_hash, steps_total,
                           callback_url)
    VALUES (:owner_id, CAST(:name AS text), CAST(:idempotency_key AS text),
            CAST(:request_hash AS text), :steps_total, CAST(:callback_url AS text))
    ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), input AS MATERIALIZED (
    SELECT t.*, uuid_v7() AS new_id
    FROM jsonb_to_recordset(CAST(:steps AS jsonb)) AS t(
        i integer, name text, preset text, content text, metadata jsonb, max_attempts integer,
        priority smallint, limit_key text, after text[], on_upstream_failure text)
), ins AS (
    INSERT INTO jobs (id, owner_id, preset, content, metadata, max_attempts, attempt_limit,
                      state, trace, priority, limit_key, workflow_id, step, waiting_on,
                      on_upstream_failure, dispatched_at)
    SELECT t.new_id, :owner_id, t.preset, t.content, t.metadata, t.max_attempts,
           t.max_attempts, CASE WHEN cardinality(t.after) = 0 THEN {P} ELSE {W} END,
           traceparent_bytes(CAST(:traceparent AS text)), t.priority, t.limit_key, wf.id,
           t.name, NULLIF(cardinality(t.after), 0), NULLIF(t.on_upstream_failure, 'cancel'),
           CASE WHEN cardinality(t.after) = 0 AND CAST(:dispatching AS boolean) THEN now() END
    FROM input t CROSS JOIN wf ORDER BY t.i
    RETURNING {TAKEN}, state
), deps AS (
    INSERT INTO job_deps (parent_id, child_id)
    SELECT p.new_id, c.new_id FROM input c CROSS JOIN LATERAL unnest(c.after) AS a(name)
    JOIN input p ON p.name = a.name
    WHERE EXISTS (SELECT 1 FROM wf)
)
SELECT (SELECT id FROM wf) AS workflow_id, ins.id, ins.attempts, ins.traceparent, ins.state
FROM (SELECT 1) one LEFT JOIN ins ON true"""

SQL_BY_KEY = """
SELECT id, request_hash FROM workflows WHERE owner_id = :owner_id
  AND idempotency_key = :idempotency_key"""

WF_COLS = ("id, owner_id, name, idempotency_key, state, steps_total, steps_done, broken_step, "
           "callback_url, created_at, updated_at, finished_at")
SQL_GET = f"SELECT {WF_COLS} FROM workflows WHERE id = :id AND owner_id = :owner_id"
SQL_STEPS = """
SELECT j.step AS name, j.id AS job_id, j.state, j.attempts, j.waiting_on,
       COALESCE(j.on_upstream_failure, 'cancel') AS on_upstream_failure,
       s.step AS spawned_by,
       CASE WHEN j.cancel_cause IS NOT NULL THEN 'UpstreamFailed'
            ELSE j.result_error_type END AS error_type,
       COALESCE(j.cancel_cause, j.result_error_message) AS error_message,
       j.started_at, j.finished_at,
       ARRAY(SELECT p.step FROM job_deps d JOIN jobs p ON p.id = d.parent_id
             WHERE d.child_id = j.id ORDER BY p.step) AS after
FROM jobs j LEFT JOIN jobs s ON s.id = j.spawned_by
WHERE j.workflow_id = :id ORDER BY j.id"""

# Cancel the whole: WAITING and PENDING steps end CANCELLED, a PROCESSING one is asked to stop.
SQL_CANCEL = f"""
WITH moved AS (
    UPDATE jobs SET
        state = CASE WHEN state IN ({W}, {P}) THEN 'CANCELLED' ELSE state END,
        finished_at = CASE WHEN state IN ({W}, {P}) THEN now() END,
        cancel_requested = state = {R},
        dispatched_at = CASE WHEN state IN ({W}, {P}) THEN NULL ELSE dispatched_at END,
        not_before = CASE WHEN state IN ({W}, {P}) THEN NULL ELSE not_before END,
        updated_at = now()
    WHERE workflow_id = :id AND owner_id = :owner_id AND state IN ({W}, {P}, {R})
      AND NOT (state = {R} AND cancel_requested)
    RETURNING id, state, attempts
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, CASE WHEN state = 'CANCELLED' THEN {P} ELSE {R} END, state,
           CASE WHEN state = 'CANCELLED' THEN 'cancelled' ELSE 'cancel-requested' END, attempts,
           jsonb_build_object('workflow', true)
    FROM moved
)
SELECT count(*) AS n FROM moved"""

# Retry: the FAILED steps (all, or the one named), with a fresh budget of attempts, and what
# they had stopped: their descendants cancelled upstream go back to WAITING, a descendant
# that runs anyway but has not started yet waits again, and one still WAITING counts again
# (a run-anyway step had counted the failure as an end), each counting the parents it now
# waits for. A descendant stays cancelled if another failure it would wait on is not retried
# (`blocked`, a least fixpoint over the graph): restored, it would wait forever.
SQL_RETRY = f"""
WITH RECURSIVE failed AS (
    SELECT id FROM jobs WHERE workflow_id = :id AND owner_id = :owner_id AND state = 'FAILED'
      AND (CAST(:step AS text) IS NULL OR step = :step) AND attempts < :max_total
), down(id) AS (
    SELECT d.child_id FROM job_deps d JOIN failed f ON f.id = d.parent_id
    UNION
    SELECT d.child_id FROM job_deps d JOIN down ON down.id = d.parent_id
), cancelled_down AS (
    SELECT j.id FROM jobs j JOIN down USING (id)
    WHERE j.state = 'CANCELLED' AND j.cancel_cause IS NOT NULL
), blocked(id) AS (
    SELECT c.id FROM cancelled_down c JOIN jobs cj ON cj.id = c.id
    JOIN job_deps d ON d.child_id = c.id JOIN jobs p ON p.id = d.parent_id
    WHERE cj.on_upstream_failure IS DISTINCT FROM 'run' AND p.state IN ('FAILED', 'CANCELLED')
      AND p.id NOT IN (SELECT id FROM failed) AND p.id NOT IN (SELECT id FROM cancelled_down)
    UNION
    SELECT d.child_id FROM blocked b JOIN job_deps d ON d.parent_id = b.id
    JOIN jobs cj ON cj.id = d.child_id
    WHERE cj.on_upstream_failure IS DISTINCT FROM 'run'
      AND d.child_id IN (SELECT id FROM cancelled_down)
), reopening AS (
    SELECT id FROM failed
    UNION SELECT id FROM cancelled_down WHERE id NOT IN (SELECT id FROM blocked)
), restorable AS (
    SELECT j.id, j.state AS was, (SELECT count(*) FROM job_deps d JOIN jobs p ON p.id = d.parent_id
                  WHERE d.child_id = j.id
                    AND (p.id IN (SELECT id FROM reopening)
                         OR p.state IN ({W}, {P}, {R})
                         OR (p.state <> 'COMPLETED'
                             AND j.on_upstream_failure IS DISTINCT FROM 'run'))) AS open
    FROM jobs j JOIN down USING (id)
    WHERE (j.state = 'CANCELLED' AND j.id IN (SELECT id FROM reopening))
       OR (j.state = {P} AND j.on_upstream_failure = 'run') OR j.state = {W}
), retried AS (
    UPDATE jobs j SET state = {P}, attempt_limit = LEAST(j.attempts + j.max_attempts,
        :max_total), lease_graces = 0, finished_at = NULL, not_before = NULL,
        dispatched_at = now(), cancel_requested = false, updated_at = now(),
        result_output = NULL, result_error_type = NULL, result_error_message = NULL,
        result_duration_ms = NULL
    WHERE j.id IN (SELECT id FROM failed) AND j.state = 'FAILED'
    RETURNING j.id, j.attempts, {trace_of("j.")}
), restored AS (
    UPDATE jobs j SET state = {W}, finished_at = NULL, updated_at = now(), cancel_causeX,
        waiting_on = r.open, dispatched_at = NULL, not_before = NULL
    FROM restorable r
    WHERE j.id = r.id AND r.open > 0 AND j.state IN ('CANCELLED', {P}, {W})
    RETURNING j.id, j.attempts, r.was
), ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, 'FAILED', {P}, 'retried', attempts, jsonb_build_object('workflow', true)
    FROM retried
    UNION ALL
    SELECT id, was, {W}, CASE WHEN was = 'CANCELLED' THEN 'restored' ELSE 'waits-again' END,
           attempts, jsonb_build_object('workflow', true)
    FROM restored WHERE was <> {W}
)
SELECT id, attempts, traceparent FROM retried""".replace("cancel_causeX", "cancel_cause = NULL")


# What a step's handler reads of its parents: their states and, for a COMPLETED one, its
# output; keyed by step name. One statement, run only when the handler asks.
SQL_PARENTS = """
SELECT p.step, p.id AS job_id, p.state, p.result_output AS output,
       p.result_error_type AS error_type, p.result_error_message AS error_message
FROM job_deps d JOIN jobs p ON p.id = d.parent_id WHERE d.child_id = :id"""

# The children a parent's end made PENDING, stamped and published by the worker that ended it
# (the sweep's never-dispatched step is the net).
SQL_TAKE_UNBLOCKED = f"""
WITH picked AS (
    SELECT c.id FROM job_deps d JOIN jobs c ON c.id = d.child_id
    WHERE d.parent_id = :id AND c.state = {P} AND c.dispatched_at IS NULL
      AND (c.not_before IS NULL OR c.not_before <= now())
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE jobs j SET dispatched_at = now() WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
  AND j.state = {P} AND j.dispatched_at IS NULL
RETURNING j.id, j.attempts, {trace_of("j.")}"""

# A child spawned by a running job, once per (parent, key): fenced by the parent's attempt, so
# a worker whose lease was lost spawns nothing. In the same statement it joins the parent's
# workflow, and each step waiting for the parent waits for the child too (the chord). It locks
# the waiting steps' rows before the workflow's (`counted` reads `waits`, so runs after it), the
# order of a step's end (migration 0021's trigger): in the other order a spawn and a sibling's
# end deadlocked.
SQL_SPAWN = f"""
WITH parent AS (
    SELECT id, owner_id, workflow_id, step, trace FROM jobs
    WHERE id = :parent_id AND state = {R} AND attempts = :attempt
), room AS (
    SELECT count(*) AS n FROM jobs WHERE spawned_by = :parent_id
), child AS (
    INSERT INTO jobs (owner_id, preset, content, metadata, max_attempts, attempt_limit, state,
                      trace, priority, limit_key, workflow_id, step, spawned_by, spawn_key,
                      dispatched_at)
    SELECT p.owner_id, :preset, :content, CAST(:metadata AS jsonb), :max_attempts,
           :max_attempts, {P}, p.trace, :priority, CAST(:limit_key AS text), p.workflow_id,
           CASE WHEN p.workflow_id IS NOT NULL THEN left(p.step || '/' || :key, 200) END,
           p.id, :key, now()
    FROM parent p WHERE (SELECT n FROM room) < :max_spawns
    ON CONFLICT (spawned_by, spawn_key) WHERE spawned_by IS NOT NULL DO NOTHING
    RETURNING {TAKEN}, workflow_id
), edges AS (
    INSERT INTO job_deps (parent_id, child_id, created_with)
    SELECT c.id, d.child_id, false FROM child c JOIN job_deps d ON d.parent_id = :parent_id
    ON CONFLICT DO NOTHING
    RETURNING child_id
), waits AS (
    UPDATE jobs w SET waiting_on = COALESCE(w.waiting_on, 0) + 1
    WHERE w.id IN (SELECT child_id FROM edges) AND w.state = {W}
    RETURNING w.id
), counted AS (
    UPDATE workflows SET steps_total = steps_total + 1, updated_at = now()
    WHERE id = (SELECT workflow_id FROM child) AND (SELECT count(*) FROM waits) >= 0
)
SELECT c.id, c.attempts, c.traceparent, true AS created FROM child c
UNION ALL
SELECT s.id, s.attempts, NULL, false FROM jobs s
WHERE s.spawned_by = :parent_id AND s.spawn_key = :key AND NOT EXISTS (SELECT 1 FROM child)
UNION ALL
SELECT NULL, NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM parent)"""


def in_graph_order(steps: list[StepView]) -> list[StepView]:
    """Parents before children: by depth (the longest path from a first step; a spawned
    child is one deeper than its spawner), then by name."""
    by_name = {s.name: s for s in steps}
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            step = by_name[name]
            up = [*step.after, *([step.spawned_by] if step.spawned_by else [])]
            depth[name] = 1 + max((of(p, seen | {name}) for p in up
                                   if p in by_name and p not in seen), default=-1)
        return depth[name]

    return sorted(steps, key=lambda s: (of(s.name), s.name))


def workflow_hash(new: NewWorkflow) -> str:
    canonical = json.dumps(new.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class SpawnRefused(IllegalTransition):
    """The parent no longer runs this attempt (its lease was lost), or spawned its limit."""


class WorkflowQueries(CallerOperations):
    """An owner's workflows, and the run-time side of their steps."""

    def create_workflow(
        self, owner_id: str, new: NewWorkflow, *, traceparent: str | None = None,
        dispatching: bool = True,
    ) -> tuple[Workflow, bool, list[DispatchItem]]:
        """Create the whole graph in one statement; returns (workflow, created, the steps to
        publish now, already stamped dispatched: the caller publishes them, and releases the
        stamps of a failed publish). A replay of the same keyed request returns the workflow.
        Not `dispatching` (the sweep's schedules): the first steps are left undispatched, for
        the same pass's re-dispatch step to publish."""
        owner = checked_owner(owner_id)
        order = new.order()
        for field in ("name", "idempotency_key", "callback_url"):
            value = getattr(new, field)
            if value is not None and has_surrogate(value):
                raise InvalidInput(field, "contains a lone surrogate (not valid Unicode text)")
        for i, step in enumerate(new.steps):
            try:
                self._check_new_job(step)
            except InvalidInput as exc:  # named as the request has it: steps[3].preset
                raise InvalidInput(f"steps[{i}].{exc.field}", exc.message) from None
        digest = workflow_hash(new) if new.idempotency_key else None
        steps = [{
            "i": i, "name": s.name, "preset": s.preset, "content": s.content,
            "metadata": s.metadata, "priority": DEFAULT_PRIORITY if s.priority is None
            else s.priority, "max_attempts": s.max_attempts
            or self._settings.default_max_attempts, "limit_key": s.limit_key,
            "after": s.after, "on_upstream_failure": s.on_upstream_failure,
        } for i, s in enumerate(order)]
        for _ in range(2):  # the keyed row may be deleted between the two statements
            rows = self._rows(SQL_CREATE, owner_id=owner, name=new.name,
                              callback_url=new.callback_url,
                              idempotency_key=new.idempotency_key, request_hash=digest,
                              steps_total=len(steps), traceparent=traceparent,
                              dispatching=dispatching,
                              steps=to_json(steps, "steps"))
            if rows and rows[0]["workflow_id"] is not None:
                roots = [DispatchItem(id=r["id"], attempts=r["attempts"],
                                      traceparent=r["traceparent"])
                         for r in rows if r["state"] == JobState.PENDING and dispatching]
                return self.get_workflow(owner, rows[0]["workflow_id"]), True, roots
            found = self._rows(SQL_BY_KEY, owner_id=owner, idempotency_key=new.idempotency_key)
            if found:
                if found[0]["request_hash"] != digest:
                    raise IdempotencyConflict(found[0]["id"])
                return self.get_workflow(owner, found[0]["id"]), False, []
        raise WorkflowNotFound(new.idempotency_key)

    def get_workflow(self, owner_id: str, workflow_id: UUID | str) -> Workflow:
        uid = as_uuid(workflow_id)
        rows = self._rows(SQL_GET, id=uid, owner_id=checked_owner(owner_id))
        if not rows:
            raise WorkflowNotFound(uid)
        steps = [StepView.model_validate(r) for r in self._rows(SQL_STEPS, id=uid)]
        return Workflow.model_validate({**rows[0], "steps": in_graph_order(steps)})

    def cancel_workflow(self, owner_id: str, workflow_id: UUID | str) -> Workflow:
        """End every step not yet ended: WAITING and PENDING ones CANCELLED at once, running
        ones asked to stop (their workers honour it)."""
        current = self.get_workflow(owner_id, workflow_id)
        self._rows(SQL_CANCEL, id=current.id, owner_id=current.owner_id)
        return self.get_workflow(owner_id, current.id)

    def retry_workflow(self, owner_id: str, workflow_id: UUID | str,
                       step: str | None = None) -> tuple[Workflow, list[DispatchItem]]:
        """Retry the FAILED steps (or the one named) and restore what they had cancelled;
        returns the workflow and the retried steps, stamped dispatched, to publish."""
        current = self.get_workflow(owner_id, workflow_id)
        if step is not None:
            named = [s for s in current.steps if s.name == step]
            if not named:
                raise InvalidInput("step", f"no step named {step[:MAX_STEP_NAME]!r}")
            if named[0].state is not JobState.FAILED:
                raise IllegalTransition(named[0].job_id, "retry", named[0].state.value)
        rows = self._rows(SQL_RETRY, id=current.id, owner_id=current.owner_id, step=step,
                          max_total=MAX_TOTAL_ATTEMPTS)
        taken = [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                 for r in rows]
        return self.get_workflow(owner_id, current.id), taken

    # -- the run-time side ----------------------------------------------------------------------

    def parents_of(self, job_id: UUID) -> dict[str, ParentOutcome]:
        return {r.pop("step") or str(r["job_id"]): ParentOutcome.model_validate(r)
                for r in self._rows(SQL_PARENTS, id=job_id)}

    def take_unblocked(self, job_id: UUID) -> list[DispatchItem]:
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in self._rows(SQL_TAKE_UNBLOCKED, id=job_id)]

    def spawn(self, parent_id: UUID, attempt: int, key: str,
              template: JobTemplate) -> tuple[UUID, DispatchItem | None]:
        """A child of a running job, once per key: (its id, the item to publish if it is
        new). SpawnRefused if the parent no longer holds `attempt`, or spawned its limit."""
        if not key or len(key) > MAX_STEP_NAME or "\x00" in key or "/" in key:
            raise InvalidInput("key", f"must be 1 to {MAX_STEP_NAME} characters, without / "
                                      "or NUL")
        self._check_new_job(template)
        rows = self._rows(
            SQL_SPAWN, parent_id=parent_id, attempt=attempt, key=key, preset=template.preset,
            content=template.content, metadata=to_json(template.metadata, "metadata"),
            max_attempts=template.max_attempts or self._settings.default_max_attempts,
            priority=DEFAULT_PRIORITY if template.priority is None else template.priority,
            limit_key=template.limit_key, max_spawns=MAX_SPAWNS)
        row = rows[0] if rows else None
        if row is None or row["id"] is None:
            raise SpawnRefused(parent_id, "spawn", "not running this attempt, or at "
                               f"its limit of {MAX_SPAWNS} children")
        item = (DispatchItem(id=row["id"], attempts=row["attempts"],
                             traceparent=row["traceparent"]) if row["created"] else None)
        return row["id"], item
