"""Workflows in the store (issue 28): graphs validated whole and created in one statement,
steps made due by their last parent's end in the same statement, failures cancelling what
depends on them, retries restoring it, and children spawned exactly once. Real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from common.store.errors import IdempotencyConflict, InvalidInput, WorkflowNotFound
from common.store.job_store import JobStore
from common.store.models import JobTemplate
from common.store.states import JobState
from common.store.workflow_models import MAX_STEPS, NewWorkflow, Workflow, parse_new_workflow
from common.store.workflows import SpawnRefused


def _step(name: str, *after: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "preset": "echo", "content": name, "after": list(after), **kw}


def _create(store: JobStore, *steps: dict[str, Any], owner: str = "alice",
            **kw: Any) -> Workflow:
    workflow, created, roots = store.create_workflow(
        owner, parse_new_workflow({"steps": list(steps), **kw}))
    assert created
    assert {r.id for r in roots} == {s.job_id for s in workflow.steps if not s.after}
    return workflow


def _states(store: JobStore, wf: Workflow) -> dict[str, JobState]:
    return {s.name: s.state for s in store.get_workflow(wf.owner_id, wf.id).steps}


def _id(wf: Workflow, name: str) -> UUID:
    return next(s.job_id for s in wf.steps if s.name == name)


def _run(store: JobStore, job_id: UUID, ok: bool = True, output: Any = None) -> None:
    claim = store.claim(job_id)
    assert claim.job is not None, claim
    if ok:
        store.complete(job_id, claim.job.attempts, output if output is not None else {"ok": 1})
    else:
        store.fail(job_id, claim.job.attempts, "Broken", "it broke")


def test_a_diamond_runs_each_step_after_all_its_parents(store: JobStore) -> None:
    wf = _create(store, _step("script"), _step("audio", "script"), _step("images", "script"),
                 _step("render", "audio", "images"))
    assert _states(store, wf) == {"script": JobState.PENDING, "audio": JobState.WAITING,
                                  "images": JobState.WAITING, "render": JobState.WAITING}
    assert store.claim(_id(wf, "audio")).reason == "not-due"  # WAITING is never claimed
    _run(store, _id(wf, "script"), output={"text": "hello"})
    taken = store.take_unblocked(_id(wf, "script"))
    assert {t.id for t in taken} == {_id(wf, "audio"), _id(wf, "images")}
    assert store.take_unblocked(_id(wf, "script")) == []  # stamped: published once
    _run(store, _id(wf, "audio"))
    assert _states(store, wf)["render"] is JobState.WAITING  # one parent still running
    _run(store, _id(wf, "images"))
    assert _states(store, wf)["render"] is JobState.PENDING
    parents = store.parents_of(_id(wf, "render"))
    assert set(parents) == {"audio", "images"}
    assert store.parents_of(_id(wf, "audio"))["script"].output == {"text": "hello"}
    _run(store, _id(wf, "render"))
    done = store.get_workflow("alice", wf.id)
    assert (done.state, done.steps_done, done.steps_total, done.broken_step) == (
        "COMPLETED", 4, 4, None)
    assert done.finished_at is not None


def test_a_failed_step_cancels_what_depends_on_it_and_says_so(store: JobStore,
                                                              engine: Engine) -> None:
    wf = _create(store, _step("a"), _step("b", "a"), _step("c", "b"),
                 _step("report", "a", on_upstream_failure="run"))
    _run(store, _id(wf, "a"), ok=False)
    states = _states(store, wf)
    assert states == {"a": JobState.FAILED, "b": JobState.CANCELLED,
                      "c": JobState.CANCELLED, "report": JobState.PENDING}
    running = store.get_workflow("alice", wf.id)
    assert running.state == "RUNNING" and running.broken_step == "a"
    b = next(s for s in running.steps if s.name == "b")
    assert b.error_type == "UpstreamFailed" and "a ended FAILED" in (b.error_message or "")
    assert store.parents_of(_id(wf, "report"))["a"].state is JobState.FAILED
    _run(store, _id(wf, "report"))
    ended = store.get_workflow("alice", wf.id)
    assert (ended.state, ended.broken_step, ended.steps_done) == ("FAILED", "a", 4)
    with engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(text(
            "SELECT reason FROM job_trail WHERE job_id = :id ORDER BY id"), {"id": _id(wf, "c")})]
    assert reasons == ["created", "upstream-failed"]


def test_a_retry_of_the_failed_step_restores_what_it_cancelled(store: JobStore) -> None:
    wf = _create(store, _step("a"), _step("b", "a"), _step("c", "b"))
    _run(store, _id(wf, "a"), ok=False)
    assert store.get_workflow("alice", wf.id).state == "FAILED"
    again, taken = store.retry_workflow("alice", wf.id)
    assert [t.id for t in taken] == [_id(wf, "a")]
    assert again.state == "RUNNING" and again.steps_done == 0
    assert _states(store, wf) == {"a": JobState.PENDING, "b": JobState.WAITING,
                                  "c": JobState.WAITING}
    for name in ("a", "b", "c"):
        _run(store, _id(wf, name))
    assert store.get_workflow("alice", wf.id).state == "COMPLETED"


def test_cancelling_a_workflow_ends_every_step(store: JobStore) -> None:
    wf = _create(store, _step("a"), _step("b", "a"), _step("c"))
    claim = store.claim(_id(wf, "c"))
    assert claim.job is not None
    store.cancel_workflow("alice", wf.id)
    states = _states(store, wf)
    assert states["a"] is JobState.CANCELLED and states["b"] is JobState.CANCELLED
    assert store.get("alice", _id(wf, "c")).cancel_requested  # running: asked to stop
    store.confirm_cancel(_id(wf, "c"), claim.job.attempts)
    ended = store.get_workflow("alice", wf.id)
    assert (ended.state, ended.steps_done) == ("CANCELLED", 3)


def test_spawned_children_are_made_once_and_the_continuation_waits_for_them(
    store: JobStore,
) -> None:
    wf = _create(store, _step("split"), _step("stitch", "split"))
    split = store.claim(_id(wf, "split")).job
    assert split is not None
    kids = [store.spawn(split.id, split.attempts, f"chunk-{n}",
                        JobTemplate(preset="echo", content=f"c{n}")) for n in range(3)]
    assert all(item is not None for _, item in kids)
    again, item = store.spawn(split.id, split.attempts, "chunk-1",
                              JobTemplate(preset="echo", content="c1"))
    assert again == kids[1][0] and item is None  # the handler ran twice: one child
    with pytest.raises(SpawnRefused):
        store.spawn(split.id, split.attempts + 1, "chunk-9", JobTemplate(preset="echo",
                                                                         content="x"))
    store.complete(split.id, split.attempts, {"chunks": 3})
    assert _states(store, wf)["stitch"] is JobState.WAITING  # the children still run
    for child_id, _ in kids:
        _run(store, child_id, output={"done": str(child_id)})
    assert _states(store, wf)["stitch"] is JobState.PENDING
    parents = store.parents_of(_id(wf, "stitch"))
    assert set(parents) == {"split", "split/chunk-0", "split/chunk-1", "split/chunk-2"}
    _run(store, _id(wf, "stitch"))
    ended = store.get_workflow("alice", wf.id)
    assert (ended.state, ended.steps_total, ended.steps_done) == ("COMPLETED", 5, 5)


def _lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one())


def _until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"never: {what}")


def test_a_spawn_and_a_sibling_s_end_take_their_locks_in_one_order(store: JobStore,
                                                                   engine: Engine) -> None:
    """A child's end locks the continuation's row, then the workflow's; a spawn must too.
    When it took the workflow's row first, a spawn racing a sibling's end deadlocked (40P01:
    found by bench.workflows, whose spawner failed mid-fan-out). Forced here: the continuation's
    row is held, the end queues for it first, then the spawn; released, the end gets it."""
    wf = _create(store, _step("split"), _step("stitch", "split"))
    split = store.claim(_id(wf, "split")).job
    assert split is not None
    first, _ = store.spawn(split.id, split.attempts, "c-0", JobTemplate(preset="echo",
                                                                        content="0"))
    claimed = store.claim(first).job
    assert claimed is not None
    errors: list[BaseException] = []

    def run(call: Any) -> threading.Thread:
        def body() -> None:
            try:
                call()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
        thread = threading.Thread(target=body)
        thread.start()
        return thread

    with engine.connect().execution_options(isolation_level="READ COMMITTED") as holder:
        with holder.begin():
            holder.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"),
                           {"id": _id(wf, "stitch")})
            ending = run(lambda: store.complete(first, claimed.attempts, {"n": 0}))
            _until(lambda: _lock_waiters(engine) == 1, "the end waits for the row")
            spawning = run(lambda: store.spawn(split.id, split.attempts, "c-1",
                                               JobTemplate(preset="echo", content="1")))
            _until(lambda: _lock_waiters(engine) == 2, "the spawn waits too")
        ending.join(timeout=30)
        spawning.join(timeout=30)
    assert errors == []
    stitch = next(s for s in store.get_workflow("alice", wf.id).steps if s.name == "stitch")
    assert (stitch.state, stitch.waiting_on) == (JobState.WAITING, 2)  # split and c-1
    ended = store.get_workflow("alice", wf.id)
    assert (ended.steps_total, ended.steps_done) == (4, 1)


def test_a_failed_child_cancels_the_continuation(store: JobStore) -> None:
    wf = _create(store, _step("split"), _step("stitch", "split"))
    split = store.claim(_id(wf, "split")).job
    assert split is not None
    child, _ = store.spawn(split.id, split.attempts, "only", JobTemplate(preset="echo",
                                                                        content="x"))
    store.complete(split.id, split.attempts, {})
    _run(store, child, ok=False)
    ended = store.get_workflow("alice", wf.id)
    assert (ended.state, ended.broken_step) == ("FAILED", "split/only")
    assert _states(store, wf)["stitch"] is JobState.CANCELLED


def test_a_keyed_workflow_is_created_once(store: JobStore) -> None:
    body = {"idempotency_key": "nightly-1", "steps": [_step("a"), _step("b", "a")]}
    first, created, _ = store.create_workflow("alice", parse_new_workflow(body))
    again, created_again, roots = store.create_workflow("alice", parse_new_workflow(body))
    assert created and not created_again and roots == [] and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.create_workflow("alice", parse_new_workflow(
            {**body, "steps": [_step("a"), _step("c", "a")]}))


def test_another_owners_workflow_is_not_found(store: JobStore) -> None:
    wf = _create(store, _step("a"))
    for call in (lambda: store.get_workflow("bob", wf.id),
                 lambda: store.cancel_workflow("bob", wf.id),
                 lambda: store.retry_workflow("bob", wf.id)):
        with pytest.raises(WorkflowNotFound):
            call()


@pytest.mark.parametrize(("steps", "field", "says"), [
    ([_step("a"), _step("a")], "steps[1].name", "named twice"),
    ([_step("a", "ghost")], "steps[0].after", "no such step"),
    ([_step("a", "b"), _step("b", "a")], "steps[0].after", "a cycle"),
    ([_step("a", "a")], "steps[0].after", "a cycle"),
    ([_step("a"), _step("b", "a", "a")], "steps[1].after", "twice"),
    ([_step("Bad Name")], "steps[0].name", "pattern"),
    ([], "steps", "at least 1"),
    ([_step(f"s{n}") for n in range(MAX_STEPS + 1)], "steps", "at most"),
    ([_step("a", priority=12)], "steps[0].priority", "less than or equal"),
])
def test_a_bad_graph_is_refused_whole_naming_the_step(store: JobStore, engine: Engine,
                                                      steps: list[Any], field: str,
                                                      says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        store.create_workflow("alice", parse_new_workflow({"steps": steps}))
    assert refused.value.field == field and says in refused.value.message
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM workflows")).scalar_one() == 0


def test_an_unknown_preset_in_any_step_refuses_the_whole(store: JobStore,
                                                         engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        store.create_workflow("alice", NewWorkflow.model_validate(
            {"steps": [_step("a"), {**_step("b", "a"), "preset": "nope"}]}))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workflows")).scalar_one() == 0


# -- through the worker: parents read, children spawned, fan-in published by the last end ------


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish_taken(self, taken: list[Any], release: Any) -> int:
        self.sent += taken
        return len(taken)


def _split(ctx: Any, content: str, options: Any) -> Any:
    for n in range(int(content)):
        ctx.spawn("square", str(n), key=f"chunk-{n}")
    ctx.spawn("square", "0", key="chunk-0")  # a second call with a key: no second child
    return {"chunks": int(content)}


def _square(ctx: Any, content: str, options: Any) -> Any:
    return {"n": int(content) ** 2}


def _stitch(ctx: Any, content: str, options: Any) -> Any:
    squares = [p.output["n"] for name, p in sorted(ctx.parents.items()) if "/" in name]
    return {"sum": sum(squares), "chunks": ctx.parents["split"].output["chunks"]}


def test_a_fan_out_and_fan_in_runs_through_the_worker(store: JobStore, settings: Any) -> None:
    """split spawns 6 children; stitch waits for split and all 6, then reads their outputs.
    Fed only what the worker publishes (each end publishes the steps it made due)."""
    from common.messaging.notify import Notifier
    from common.presets.base import Handler
    from common.presets.registry import Registry
    from common.worker.runner import Worker
    from tests.test_worker import message_for

    quiet = settings.model_copy(update={"results_topic": ""})
    recorder = _Recorder()
    registry = Registry([Handler("split", _split), Handler("square", _square),
                         Handler("stitch", _stitch)])
    worker = Worker(JobStore(store._engine, quiet), registry, Notifier(quiet), quiet,
                    dispatcher=recorder)  # type: ignore[arg-type]
    wf, _, roots = worker.store.create_workflow("alice", parse_new_workflow({"steps": [
        {"name": "split", "preset": "split", "content": "6"},
        {"name": "stitch", "preset": "stitch", "content": "", "after": ["split"]}]}))
    queue = list(roots)
    actions: list[str] = []
    while queue:
        actions.append(worker.handle(message_for(queue.pop(0))).action)
        queue += recorder.sent
        recorder.sent.clear()
    assert actions == ["completed"] * 8
    ended = store.get_workflow("alice", wf.id)
    assert (ended.state, ended.steps_total) == ("COMPLETED", 8)
    stitch = store.get("alice", _id(wf, "stitch"))
    assert stitch.result is not None and stitch.result.output == {"sum": 55, "chunks": 6}


def test_a_workflow_s_end_enqueues_its_webhook_once(store: JobStore, engine: Engine) -> None:
    wf, _, _ = store.create_workflow("alice", parse_new_workflow({
        "callback_url": "https://hooks.example.com/flows",
        "steps": [_step("a"), _step("b", "a")]}))
    _run(store, _id(wf, "a"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 0
    _run(store, _id(wf, "b"))
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT job_id, workflow_id, url, payload FROM webhook_deliveries")).all()
    assert len(rows) == 1
    assert (rows[0].job_id, rows[0].workflow_id) == (_id(wf, "b"), wf.id)
    assert rows[0].payload["type"] == "workflow.completed"
    assert rows[0].payload["data"]["steps_done"] == 2
    assert store.deliveries(_id(wf, "b")) == []  # not the step's own webhook


# -- schedules that start workflows ---------------------------------------------------------


def test_a_schedule_starts_a_workflow_once_per_fire(store: JobStore, engine: Engine) -> None:
    from common.maintenance import schedules as schedules_step
    from common.maintenance.budget import Budget
    from common.store.schedule_models import NewSchedule

    sched = store.create_schedule("alice", NewSchedule.model_validate({
        "cron": "*/5 * * * *", "workflow": {"name": "nightly", "steps": [
            _step("extract"), _step("load", "extract")]}}))
    assert sched.preset is None and sched.workflow is not None
    with engine.begin() as conn:
        conn.execute(text("UPDATE schedules SET next_fire_at = next_fire_at - "
                          "interval '5 minutes 1 second' WHERE id = :id"), {"id": sched.id})
    from datetime import UTC, datetime

    from common.store import cron

    due = store.due_schedules(10)[0]
    fire_time = cron.plan_fire(due.cron, due.timezone, due.next_fire_at, datetime.now(UTC),
                               due.catch_up)[0]
    first = store._fire_workflow(due, fire_time)[0]  # a pass that crashed here...
    assert first is not None
    assert store._fire_workflow(due, fire_time)[0] == first  # ...retried: the same one
    out = schedules_step.fire_due(store, Budget(60), 100, 30)
    assert (out["schedules"], out["fired"]) == (1, 1)
    after = store.get_schedule("alice", sched.id)
    assert after.last_workflow_id == first  # the pass found the one a crashed pass made
    wf = store.get_workflow("alice", first)
    assert wf.name == "nightly" and [s.state for s in wf.steps] == [JobState.PENDING,
                                                                    JobState.WAITING]
    root = store.get("alice", _id(wf, "extract"))
    assert root.dispatched_at is None  # the same pass's re-dispatch step publishes it
    with engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(text(
            "SELECT kind FROM schedule_events WHERE schedule_id = :id"), {"id": sched.id})]
        assert kinds == ["fired"]
        assert conn.execute(text("SELECT count(*) FROM workflows")).scalar_one() == 1
        conn.execute(text("UPDATE schedules SET next_fire_at = date_trunc('second', now()) "
                          "- interval '1 second' WHERE id = :id"), {"id": sched.id})
        conn.commit()
    later = store.due_schedules(10)[0]  # the next tick, while the first workflow still runs
    from datetime import timedelta

    taken, started = store.fire(later, later.next_fire_at,
                                later.next_fire_at + timedelta(minutes=5), 0)
    assert taken and started is None  # overlap 'skip'
    with engine.connect() as conn:
        details = conn.execute(text("SELECT details FROM schedule_events WHERE schedule_id = :id "
                                    "AND kind = 'skipped'"), {"id": sched.id}).scalar_one()
        assert details == {"reason": "previous-workflow-running"}
        assert conn.execute(text("SELECT count(*) FROM workflows")).scalar_one() == 1


def test_a_schedule_takes_a_job_or_a_workflow_and_a_whole_valid_graph(store: JobStore) -> None:
    from common.store.schedule_models import NewSchedule

    with pytest.raises(ValueError, match="one of them"):
        NewSchedule.model_validate({"cron": "* * * * *"})
    with pytest.raises(InvalidInput, match="cycle"):
        store.create_schedule("alice", NewSchedule.model_validate({
            "cron": "*/5 * * * *", "workflow": {"steps": [_step("a", "b"), _step("b", "a")]}}))
    with pytest.raises(InvalidInput) as keyed:
        store.create_schedule("alice", NewSchedule.model_validate({
            "cron": "*/5 * * * *", "workflow": {"idempotency_key": "k", "steps": [_step("a")]}}))
    assert keyed.value.field == "workflow.idempotency_key"
