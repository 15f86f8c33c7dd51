"""Flow control through the HTTP API (issue 27): a job's priority and limit key, why and until
when it waits (made with the store's own claims, as a worker would), and the caller's key
limits (`/limits/{key}`): each owner's own, every bad input a 4xx problem naming the field with
nothing written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.settings import PresetLimit
from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness

JOB = {"preset": "echo", "content": "hello"}
ALICE = "hs256:alice"  # the owner a dev token for `alice` acts as


def _problem(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(resp.data)
    assert body["status"] == resp.status_code and "Traceback" not in json.dumps(body)
    return body


def _named(resp: Any) -> list[str]:
    return [p["name"] for p in _problem(resp).get("invalid_params") or []]


def _get(api: SubmitHarness, path: str, owner: str = "alice") -> Any:
    return api.client.get(path, headers=api.auth(owner))


def _put(api: SubmitHarness, key: str, body: Any, owner: str = "alice") -> Any:
    return api.client.put(f"/limits/{key}", data=json.dumps(body),
                          content_type="application/json", headers=api.auth(owner))


def test_a_job_carries_its_priority_and_key_and_they_join_its_fingerprint(
    api: SubmitHarness, store: JobStore
) -> None:
    plain = api.post_job("alice", JOB).get_json()
    assert (plain["priority"], plain["limit_key"], plain["waiting"]) == (5, None, None)
    urgent = api.post_job("alice", {**JOB, "priority": 9, "limit_key": "customer-42"},
                          **{"Idempotency-Key": "k1"})
    assert urgent.status_code == 202
    job = urgent.get_json()
    assert (job["priority"], job["limit_key"], job["waiting"]) == (9, "customer-42", None)
    shown = _get(api, f"/jobs/{job['id']}").get_json()
    assert (shown["priority"], shown["limit_key"]) == (9, "customer-42")
    listed = {j["id"]: j for j in _get(api, "/jobs").get_json()["jobs"]}
    assert (listed[job["id"]]["priority"], listed[plain["id"]]["priority"]) == (9, 5)
    again = api.post_job("alice", {**JOB, "priority": 9, "limit_key": "customer-42"},
                         **{"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.get_json()["id"] == job["id"]
    other = api.post_job("alice", {**JOB, "priority": 1, "limit_key": "customer-42"},
                         **{"Idempotency-Key": "k1"})
    assert other.status_code == 409  # another request under the same key
    batch = api.client.post("/jobs:batch", data=json.dumps({"jobs": [
        {**JOB, "priority": 0, "limit_key": "nightly"}, {**JOB, "priority": 10}]}),
        content_type="application/json", headers=api.auth("alice")).get_json()
    made, refused = batch["results"]
    assert (made["job"]["priority"], made["job"]["limit_key"]) == (0, "nightly")
    assert [p["name"] for p in refused["problem"]["invalid_params"]] == ["priority"]
    assert len(store.list_jobs(ALICE, limit=10).jobs) == 3


@pytest.mark.parametrize(("field", "value"), [
    ("priority", 10), ("priority", -1), ("priority", "5"), ("priority", True), ("priority", 1.5),
    ("limit_key", ""), ("limit_key", "-gpu"), ("limit_key", "a b"), ("limit_key", "k" * 129),
    ("limit_key", "gpu/1"), ("limit_key", 42),
])
def test_a_bad_priority_or_key_is_refused_naming_it(
    api: SubmitHarness, store: JobStore, field: str, value: Any
) -> None:
    resp = api.post_job("alice", {**JOB, field: value})
    assert resp.status_code == 422 and _named(resp) == [field]
    schedule = api.client.post("/schedules", data=json.dumps(
        {"cron": "0 9 * * *", "job": {**JOB, field: value}}), content_type="application/json",
        headers=api.auth("alice"))
    assert schedule.status_code == 422 and _named(schedule) == [f"job.{field}"]
    assert store.list_jobs(ALICE, limit=10).jobs == []
    assert store.list_schedules(ALICE, limit=10).schedules == []


def test_a_schedule_s_template_carries_priority_and_key(api: SubmitHarness) -> None:
    made = api.client.post("/schedules", data=json.dumps(
        {"cron": "0 9 * * *", "job": {**JOB, "priority": 2, "limit_key": "reports"}}),
        content_type="application/json", headers=api.auth("alice"))
    assert made.status_code == 201
    template = made.get_json()["job"]
    assert (template["priority"], template["limit_key"]) == (2, "reports")
    plain = api.client.patch(f"/schedules/{made.get_json()['id']}", data=json.dumps(
        {"job": JOB}), content_type="application/json", headers=api.auth("alice")).get_json()
    assert (plain["job"]["priority"], plain["job"]["limit_key"]) == (5, None)


def test_a_job_says_why_it_waits_and_until_when(api: SubmitHarness, store: JobStore) -> None:
    """Parked by a key's running limit, by the owner's, by a preset's; a booked rate slot;
    parked by a rate: each `waiting` names its limit; `until` is the booked slot, or the rate's
    next free slot (in GET /jobs/{id}, not in lists), or null for a running limit."""

    def job(**fields: Any) -> str:
        return str(api.post_job("alice", {**JOB, **fields}).get_json()["id"])

    def waiting(job_id: str) -> Any:
        return _get(api, f"/jobs/{job_id}").get_json()["waiting"]

    store.set_key_limit(ALICE, "gpu", max_running=1)
    running, parked = job(limit_key="gpu"), job(limit_key="gpu")
    assert [store.claim(j).reason for j in (running, parked)] == ["claimed", "deferred"]
    assert waiting(running) is None  # PROCESSING: it waits on nothing
    assert waiting(parked) == {"reason": "running:key", "limit": "gpu", "until": None}

    # One start per 45 s: the next slot is near enough to book, the one after is not.
    store.set_key_limit(ALICE, "api", max_starts=1, interval_s=45)
    rated = [job(limit_key="api") for _ in range(3)]
    assert [store.claim(j).reason for j in rated] == ["claimed", "held", "deferred"]
    booked = _get(api, f"/jobs/{rated[1]}").get_json()
    assert booked["waiting"] == {"reason": "rate-reserved", "limit": "api",
                                 "until": booked["not_before"]}
    later = waiting(rated[2])
    assert (later["reason"], later["limit"]) == ("rate:key", "api")
    assert later["until"] > booked["not_before"]  # the slot after the booked one
    listed = {j["id"]: j["waiting"] for j in _get(api, "/jobs").get_json()["jobs"]}
    assert listed[rated[2]] == {"reason": "rate:key", "limit": "api", "until": None}
    assert listed[rated[1]] == booked["waiting"]

    store.delete_key_limit(ALICE, "gpu")  # its parked job is let go: it waits on nothing
    assert waiting(parked) is None

    store.set_owner_limit(ALICE, 1)  # `running` holds alice's one slot
    owner_parked = job()
    assert store.claim(owner_parked).reason == "deferred"
    assert waiting(owner_parked) == {"reason": "running:owner", "limit": ALICE, "until": None}
    store.set_owner_limit(ALICE, None)

    store.sync_preset_limits({"text-stats": PresetLimit(max_running=1)})
    first = api.post_job("bob", {"preset": "text-stats", "content": "Hi."}).get_json()["id"]
    second = job(preset="text-stats", content="Hi there.")
    assert [store.claim(j).reason for j in (first, second)] == ["claimed", "deferred"]
    assert waiting(second) == {"reason": "running:preset", "limit": "text-stats",
                               "until": None}
    presets = _get(api, "/limits").get_json()["presets"]
    assert [(p["name"], p["max_running"], p["running"]) for p in presets] == [
        ("text-stats", 1, 1)]


def test_key_limits_are_set_read_replaced_and_deleted_by_their_owner_only(
    api: SubmitHarness,
) -> None:
    assert _get(api, "/limits").get_json()["keys"] == []
    made = _put(api, "gpu", {"max_running": 2})
    assert made.status_code == 200
    view = made.get_json()
    assert {k: view[k] for k in ("name", "max_running", "max_starts", "interval_s", "running",
                                 "next_at")} == {"name": "gpu", "max_running": 2,
                                                 "max_starts": None, "interval_s": None,
                                                 "running": 0, "next_at": None}
    assert _get(api, "/limits/gpu").get_json() == view
    replaced = _put(api, "gpu", {"max_starts": 60, "interval_s": 60}).get_json()
    assert (replaced["max_running"], replaced["max_starts"], replaced["interval_s"]) == (
        None, 60, 60.0)  # PUT replaces the whole limit

    # Bob's `gpu` is another limit; alice's is not his to read, change or delete.
    assert _problem(_get(api, "/limits/gpu", "bob"))["status"] == 404
    gone = api.client.delete("/limits/gpu", headers=api.auth("bob"))
    assert gone.status_code == 404 and _problem(gone)["title"] == "Limit not found"
    assert _put(api, "gpu", {"max_running": 7}, "bob").status_code == 200
    assert _get(api, "/limits/gpu").get_json()["max_starts"] == 60  # alice's is unchanged
    assert [k["name"] for k in _get(api, "/limits").get_json()["keys"]] == ["gpu"]
    _put(api, "a.b:c@d-e_f", {"max_running": 1})
    assert [k["name"] for k in _get(api, "/limits").get_json()["keys"]] == ["a.b:c@d-e_f", "gpu"]

    deleted = api.client.delete("/limits/gpu", headers=api.auth("alice"))
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert _get(api, "/limits/gpu").status_code == 404
    assert api.client.delete("/limits/gpu", headers=api.auth("alice")).status_code == 404
    assert _get(api, "/limits/gpu", "bob").get_json()["max_running"] == 7
    for method in ("GET", "PUT", "DELETE"):
        assert api.client.open("/limits/gpu", method=method).status_code == 401
    assert api.client.get("/limits").status_code == 401


@pytest.mark.parametrize(("body", "field"), [
    ({}, "max_running"),
    ({"max_running": 0}, "max_running"),
    ({"max_running": 100_001}, "max_running"),
    ({"max_running": True}, "max_running"),
    ({"max_running": "2"}, "max_running"),
    ({"max_running": None}, "max_running"),
    ({"max_running": 1.5}, "max_running"),
    ({"max_starts": 5}, "interval_s"),
    ({"interval_s": 5}, "max_starts"),
    ({"max_starts": 0, "interval_s": 1}, "max_starts"),
    ({"max_starts": 1_000_001, "interval_s": 1}, "max_starts"),
    ({"max_starts": 1, "interval_s": 0}, "interval_s"),
    ({"max_starts": 1, "interval_s": -1}, "interval_s"),
    ({"max_starts": 1, "interval_s": 604_801}, "interval_s"),
    ({"max_starts": 1, "interval_s": "60"}, "interval_s"),
    ({"max_starts": 1, "interval_s": 10 ** 400}, "interval_s"),
    ({"max_running": 1, "burst": 2}, "burst"),
    ([{"max_running": 1}], "body"),
])
def test_a_bad_limit_is_refused_naming_the_field_and_changes_nothing(
    api: SubmitHarness, body: Any, field: str
) -> None:
    kept = _put(api, "gpu", {"max_running": 3}).get_json()
    for key in ("gpu", "new"):
        resp = _put(api, key, body)
        assert resp.status_code == 422 and _named(resp) == [field], resp.get_json()
    assert _get(api, "/limits/gpu").get_json() == kept
    assert [k["name"] for k in _get(api, "/limits").get_json()["keys"]] == ["gpu"]


@pytest.mark.parametrize("key", ["-gpu", "a%20b", "k" * 129, "caf%C3%A9", "a%00"])
def test_a_bad_key_is_refused_naming_it(api: SubmitHarness, key: str) -> None:
    for resp in (_put(api, key, {"max_running": 1}), _get(api, f"/limits/{key}"),
                 api.client.delete(f"/limits/{key}", headers=api.auth("alice"))):
        assert resp.status_code == 422 and _named(resp) == ["key"]
    assert _get(api, "/limits").get_json()["keys"] == []


def test_a_limit_body_that_is_not_json_or_too_large_is_refused(api: SubmitHarness) -> None:
    auth = api.auth("alice")
    malformed = api.client.put("/limits/gpu", data="{", content_type="application/json",
                               headers=auth)
    assert malformed.status_code == 400 and _problem(malformed)["type"].endswith("malformed-json")
    text = api.client.put("/limits/gpu", data="max_running=1", content_type="text/plain",
                          headers=auth)
    assert text.status_code == 415
    huge = api.client.put("/limits/gpu", data=json.dumps({"max_running": 1, "x": "y" * 5000}),
                          content_type="application/json", headers=auth)
    assert huge.status_code == 413
    assert _get(api, "/limits").get_json()["keys"] == []
