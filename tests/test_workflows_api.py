"""Workflows through the HTTP API (issue 28): create (201, replayed 200, a reused key 409), its
first steps published at once and only once, read with every step, listed newest first,
cancelled, retried whole or from one step; another owner's is a 404; each bad graph a 422
naming the step with nothing written; a step's job shows its workflow, step and WAITING."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from common.store.job_store import JobStore
from common.store.workflow_models import MAX_STEPS
from tests.submit_fixtures import SubmitHarness

ALICE = "hs256:alice"


def _step(name: str, *after: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "preset": "echo", "content": name, "after": list(after), **kw}


DIAMOND = {"name": "episode-42", "steps": [
    _step("script"), _step("audio", "script"), _step("images", "script"),
    _step("render", "audio", "images"),
    _step("report", "render", on_upstream_failure="run")]}


def _post(api: SubmitHarness, body: Any, owner: str = "alice", **headers: str) -> Any:
    return api.client.post("/workflows", data=json.dumps(body), content_type="application/json",
                           headers={**api.auth(owner), **headers})


def _call(api: SubmitHarness, method: str, path: str, owner: str = "alice",
          body: Any = None) -> Any:
    kw: dict[str, Any] = {}
    if body is not None:
        kw = {"data": json.dumps(body), "content_type": "application/json"}
    return api.client.open(path, method=method, headers=api.auth(owner), **kw)


def _named(resp: Any) -> list[str]:
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.get_json()
    assert problem["status"] == resp.status_code
    return [p["name"] for p in problem.get("invalid_params") or []]


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(text("SELECT count(*) FROM workflows")).scalar_one(),
                conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def _fail(store: JobStore, job_id: str) -> None:
    claim = store.claim(UUID(job_id))
    assert claim.job is not None
    store.fail(claim.job.id, claim.job.attempts, "Broken", "it broke")


def test_a_workflow_is_created_once_and_its_first_step_published_once(
    api: SubmitHarness, engine: Engine
) -> None:
    api.pull()
    made = _post(api, DIAMOND, **{"Idempotency-Key": "ep-42"})
    assert made.status_code == 201, made.get_json()
    wf = made.get_json()
    assert made.headers["Location"] == f"/workflows/{wf['id']}" == wf["links"]["self"]
    assert (wf["name"], wf["state"], wf["steps_done"], wf["steps_total"]) == (
        "episode-42", "RUNNING", 0, 5)
    steps = {s["name"]: s for s in wf["steps"]}
    assert next(s["name"] for s in wf["steps"]) == "script"  # parents first
    assert steps["script"]["state"] == "PENDING" and steps["render"]["state"] == "WAITING"
    assert steps["render"]["after"] == ["audio", "images"] and steps["render"]["waiting_on"] == 2
    assert steps["report"]["on_upstream_failure"] == "run"
    published = [m["data"]["job_id"] for m in api.pull()]
    assert published == [steps["script"]["job_id"]]
    again = _post(api, DIAMOND, **{"Idempotency-Key": "ep-42"})
    assert again.status_code == 200 and again.get_json()["id"] == wf["id"]
    assert api.pull() == []  # a replay publishes nothing
    other = _post(api, {**DIAMOND, "name": "another"}, **{"Idempotency-Key": "ep-42"})
    assert other.status_code == 409 and other.get_json()["type"].endswith("idempotency-conflict")
    mismatch = _post(api, {**DIAMOND, "idempotency_key": "x"}, **{"Idempotency-Key": "y"})
    assert mismatch.status_code == 409
    assert _counts(engine) == (1, 5)


def test_a_step_s_job_shows_its_workflow_its_step_and_waiting(api: SubmitHarness) -> None:
    wf = _post(api, DIAMOND).get_json()
    render = next(s for s in wf["steps"] if s["name"] == "render")
    job = _call(api, "GET", f"/jobs/{render['job_id']}").get_json()
    assert (job["workflow_id"], job["step"], job["state"]) == (wf["id"], "render", "WAITING")
    waiting = _call(api, "GET", "/jobs?state=WAITING").get_json()["jobs"]
    assert {j["step"] for j in waiting} == {"audio", "images", "render", "report"}
    assert _call(api, "GET", "/stats").get_json()["depth"]["WAITING"] == 4
    plain = api.post_job("alice", {"preset": "echo", "content": "x"}).get_json()
    assert (plain["workflow_id"], plain["step"]) == (None, None)


def test_workflows_are_listed_newest_first_a_page_at_a_time(api: SubmitHarness) -> None:
    ids = [_post(api, {"steps": [_step("a")]}).get_json()["id"] for _ in range(3)]
    first = _call(api, "GET", "/workflows?limit=2").get_json()
    assert [w["id"] for w in first["workflows"]] == ids[:0:-1]
    assert all(w["steps"] is None for w in first["workflows"])
    rest = _call(api, "GET", f"/workflows?limit=2&cursor={first['next_cursor']}").get_json()
    assert [w["id"] for w in rest["workflows"]] == ids[:1] and rest["next_cursor"] is None
    assert _call(api, "GET", "/workflows?limit=x").status_code == 422
    assert _call(api, "GET", "/workflows?cursor=nope").status_code == 400
    assert _call(api, "GET", "/workflows", owner="bob").get_json()["workflows"] == []


def test_cancel_ends_every_step_not_yet_ended(api: SubmitHarness) -> None:
    wf = _post(api, DIAMOND).get_json()
    done = _call(api, "POST", f"/workflows/{wf['id']}:cancel")
    assert done.status_code == 200
    body = done.get_json()
    assert body["state"] == "CANCELLED" and body["steps_done"] == 5
    assert {s["state"] for s in body["steps"]} == {"CANCELLED"}


def test_retry_the_whole_or_one_step_publishes_the_failed_steps(
    api: SubmitHarness, store: JobStore
) -> None:
    body = {"steps": [_step("a", max_attempts=1), _step("b", max_attempts=1),
                      _step("c", "a", "b")]}
    wf = _post(api, body).get_json()
    ids = {s["name"]: s["job_id"] for s in wf["steps"]}
    _fail(store, ids["a"])
    _fail(store, ids["b"])
    api.pull()
    path = f"/workflows/{wf['id']}:retry"
    assert _named(_call(api, "POST", path, body={"step": "ghost"})) == ["step"]
    assert _call(api, "POST", path, body={"step": "c"}).status_code == 409  # not FAILED
    assert "stp" in _named(_call(api, "POST", path, body={"stp": "a"}))
    one = _call(api, "POST", path, body={"step": "a"})
    assert one.status_code == 202
    states = {s["name"]: s["state"] for s in one.get_json()["steps"]}
    assert (states["a"], states["b"]) == ("PENDING", "FAILED")
    assert [m["data"]["job_id"] for m in api.pull()] == [ids["a"]]
    whole = api.client.post(path, headers=api.auth("alice"))  # no body: every FAILED step
    assert whole.status_code == 202
    assert {s["name"]: s["state"] for s in whole.get_json()["steps"]}["b"] == "PENDING"
    assert [m["data"]["job_id"] for m in api.pull()] == [ids["b"]]
    nothing = api.client.post(path, headers=api.auth("alice"))
    assert nothing.status_code == 409 and nothing.get_json()["type"].endswith("nothing-to-retry")


def test_another_owner_s_workflow_is_a_404_and_stays_untouched(
    api: SubmitHarness, store: JobStore
) -> None:
    wf = _post(api, DIAMOND).get_json()
    for method, path in (("GET", ""), ("POST", ":cancel"), ("POST", ":retry")):
        resp = _call(api, method, f"/workflows/{wf['id']}{path}", owner="bob")
        assert resp.status_code == 404, (method, path)
        assert resp.get_json()["title"] == "Workflow not found"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        assert _call(api, "GET", f"/workflows/{bad}").status_code == 404
    assert store.get_workflow(ALICE, wf["id"]).state == "RUNNING"


@pytest.mark.parametrize(("steps", "field"), [
    ([_step("a"), _step("a")], "steps[1].name"),
    ([_step("a", "ghost")], "steps[0].after"),
    ([_step("a", "b"), _step("b", "a")], "steps[0].after"),
    ([_step("a"), _step("b", "a", "a")], "steps[1].after"),
    ([_step("Bad Name")], "steps[0].name"),
    ([], "steps"),
    ([_step(f"s{n}") for n in range(MAX_STEPS + 1)], "steps"),
    ([_step("a"), {**_step("b", "a"), "preset": "nope"}], "steps[1].preset"),
    ([_step("a"), {**_step("b"), "priority": 12}], "steps[1].priority"),
    ([_step("a"), {"name": "b", "preset": "text-stats", "content": "x",
                   "metadata": {"options": {"top": 0}}}], "steps[1].metadata.options"),
    ([_step("a"), {**_step("b"), "callback_url": "https://example.com"}], "steps[1].callback_url"),
])
def test_a_bad_graph_is_a_422_naming_the_step_and_writes_nothing(
    api: SubmitHarness, engine: Engine, steps: list[Any], field: str,
) -> None:
    resp = _post(api, {"steps": steps})
    assert resp.status_code == 422 and field in _named(resp), resp.get_json()
    assert _counts(engine) == (0, 0)


@pytest.mark.parametrize(("body", "field"), [
    ({"steps": [_step("a")], "callback_url": "http://169.254.169.254/x"}, "callback_url"),
    ({"steps": [_step("a")], "callback_url": "ftp://example.com/"}, "callback_url"),
    ({"steps": [_step("a")], "extra": 1}, "extra"),
    ({"steps": [_step("a")], "name": ""}, "name"),
    ({"steps": [_step("a")], "name": "\ud800"}, "name"),
    ({"steps": [_step("a")], "idempotency_key": "k\ud800"}, "idempotency_key"),
    ([_step("a")], "body"),
])
def test_a_bad_workflow_field_is_a_422_naming_it(api: SubmitHarness, engine: Engine,
                                                 body: Any, field: str) -> None:
    resp = _post(api, body)
    assert resp.status_code == 422 and _named(resp) == [field], resp.get_json()
    assert _counts(engine) == (0, 0)


def test_a_schedule_may_start_a_workflow_checked_like_post_workflows(
    api: SubmitHarness, engine: Engine
) -> None:
    graph = {"name": "nightly", "steps": [_step("a"), _step("b", "a")]}
    made = api.client.post("/schedules", json={"cron": "0 3 * * *", "workflow": graph},
                           headers=api.auth("alice"))
    assert made.status_code == 201, made.get_json()
    view = made.get_json()
    assert view["job"] is None and view["last_workflow_id"] is None
    assert [(s["name"], s["after"]) for s in view["workflow"]["steps"]] == [
        ("a", []), ("b", ["a"])]
    bad = {"steps": [_step("a", "b"), _step("b", "a")]}
    for body in ({"cron": "0 3 * * *", "workflow": bad},
                 {"cron": "0 3 * * *", "workflow": {**graph, "idempotency_key": "k"}},
                 {"cron": "0 3 * * *", "workflow": graph,
                  "job": {"preset": "echo", "content": "x"}}):
        refused = api.client.post("/schedules", json=body, headers=api.auth("alice"))
        assert refused.status_code == 422, refused.get_json()
    cycle = api.client.post("/schedules", json={"cron": "0 3 * * *", "workflow": bad},
                            headers=api.auth("alice"))
    assert _named(cycle) == ["workflow.steps[0].after"]
    patched = api.client.patch(f"/schedules/{view['id']}",
                               json={"job": {"preset": "echo", "content": "x"}},
                               headers=api.auth("alice")).get_json()
    assert patched["workflow"] is None and patched["job"]["preset"] == "echo"
    back = api.client.patch(f"/schedules/{view['id']}", json={"workflow": graph},
                            headers=api.auth("alice")).get_json()
    assert back["job"] is None and back["workflow"]["name"] == "nightly"
    assert _counts(engine) == (0, 0)


def test_the_custom_methods_are_routed_apart_from_get(api: SubmitHarness) -> None:
    wf = _post(api, {"steps": [_step("a")]}).get_json()
    for verb in (":cancel", ":retry"):
        resp = api.client.open(f"/workflows/{wf['id']}{verb}", method="OPTIONS",
                               headers=api.auth("alice"))
        assert resp.status_code == 405 and "GET" not in resp.headers["Allow"], verb
    assert _call(api, "GET", f"/workflows/{wf['id']}:cancel").status_code == 405
    assert _call(api, "GET", f"/workflows/{wf['id']}:nope").status_code == 404
