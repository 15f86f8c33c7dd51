"""`GET /jobs/{id}?wait=N`: the answer comes when the job ends, or after N seconds; what a
waiting request costs is counted in statements (round trips) and threads, never in time."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import functions.submit
from common.store.callers import SQL_GET, SQL_STATE
from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness
from tests.support.polling import wait_until

JOB = json.dumps({"preset": "echo", "content": "hi"})


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.data
    assert resp.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = resp.get_json(force=True)
    assert body["status"] == status and "Traceback" not in resp.get_data(as_text=True)
    return body


def _count_statements(monkeypatch: pytest.MonkeyPatch) -> tuple[JobStore, list[str]]:
    """The submit instance's own store, recording every statement it sends."""
    store = functions.submit.get_api().service.store
    sent: list[str] = []
    real = store._rows

    def counting(sql: str, **params: Any) -> list[dict[str, Any]]:
        sent.append(sql)
        return real(sql, **params)

    monkeypatch.setattr(store, "_rows", counting)
    return store, sent


def _job(api: SubmitHarness, owner: str = "alice") -> str:
    resp = api.post_job(owner, {"preset": "echo", "content": "hi"})
    assert resp.status_code == 202
    return str(resp.get_json()["id"])


def test_a_job_that_does_not_end_is_answered_as_it_is_after_n_seconds(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(api)
    _, sent = _count_statements(monkeypatch)
    resp = api.client.get(f"/jobs/{job_id}?wait=1", headers=api.auth("alice"))
    assert resp.status_code == 200 and resp.get_json()["state"] == "PENDING"
    # Polls back off 0.1, 0.2, 0.4 s then the remainder: a full read, 4 probes, a full read.
    assert sent == [SQL_GET, *[SQL_STATE] * 4, SQL_GET]


def test_the_answer_comes_when_the_job_ends_not_when_the_wait_does(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(api)
    store, sent = _count_statements(monkeypatch)
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(
        api.client.get(f"/jobs/{job_id}?wait=30", headers=api.auth("alice"))))
    threads_before = threading.active_count()
    waiter.start()
    for _ in range(1000):  # until the waiter has probed twice
        if sent.count(SQL_STATE) >= 2:
            break
        threading.Event().wait(0.01)
    # The waiting request holds its own thread and nothing else: no listener, no helper.
    assert threading.active_count() == threads_before + 1
    claimed = store.claim(job_id).job
    assert claimed is not None
    store.complete(claimed.id, claimed.attempts, {"content": "hi"})
    waiter.join(30)
    body = answers[0].get_json()
    assert body["state"] == "COMPLETED" and body["result"]["output"] == {"content": "hi"}
    probes = sent.count(SQL_STATE)
    # It answered at the first probe after the end: far fewer than the ~33 of a full 30 s wait.
    assert 2 <= probes <= 6 and sent[0] == sent[-1] == SQL_GET


def test_a_terminal_job_answers_at_once_with_one_read(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(api)
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice")).status_code == 200
    _, sent = _count_statements(monkeypatch)
    resp = api.client.get(f"/jobs/{job_id}?wait=30", headers=api.auth("alice"))
    assert resp.get_json()["state"] == "CANCELLED" and sent == [SQL_GET]


def test_another_owners_job_is_404_before_any_wait(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(api, "alice")
    _, sent = _count_statements(monkeypatch)
    resp = api.client.get(f"/jobs/{job_id}?wait=30", headers=api.auth("mallory"))
    assert problem(resp, 404)["type"].endswith("/not-found") and sent == [SQL_GET]


@pytest.mark.parametrize(
    "raw", ["0", "0.0", "-1", "30.001", "31", "1e2", "abc", "", "nan", "inf", " 1", "1 ",
            "+1", "0x1", "\u0663", "1_0", "\ufffd", "1" * 400]
)
def test_a_wait_that_is_not_a_number_in_range_is_422(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    job_id = _job(api)
    _, sent = _count_statements(monkeypatch)
    resp = api.client.get(f"/jobs/{job_id}", query_string={"wait": raw},
                          headers=api.auth("alice"))
    body = problem(resp, 422)
    assert body["invalid_params"][0]["name"] == "wait" and sent == []


@pytest.mark.parametrize("encoded", ["%ED%A0%80", "%FF", "%00", "1%00"])
def test_a_wait_that_is_not_text_is_422(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch, encoded: str
) -> None:
    """A lone surrogate's UTF-8 form, bytes that are no UTF-8 at all, NUL."""
    job_id = _job(api)
    _, sent = _count_statements(monkeypatch)
    resp = api.client.get(f"/jobs/{job_id}?wait={encoded}", headers=api.auth("alice"))
    assert problem(resp, 422)["invalid_params"][0]["name"] == "wait" and sent == []


@pytest.mark.parametrize("raw", ["30", "0.5", "1e-3", "3E1"])
def test_every_number_the_schema_allows_is_accepted(api: SubmitHarness, raw: str) -> None:
    job_id = _job(api)
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice")).status_code == 200
    resp = api.client.get(f"/jobs/{job_id}?wait={raw}", headers=api.auth("alice"))
    assert resp.status_code == 200 and resp.get_json()["state"] == "CANCELLED"


def _hold_waits(api: SubmitHarness, owner: str, job_id: str, n: int) -> list[threading.Thread]:
    """`n` requests of `owner` waiting for `job_id`, each on its own thread; returns once the
    instance counts them all as held."""
    gate = functions.submit.get_api().waits
    before = gate.held
    threads = [threading.Thread(target=lambda: api.client.get(
        f"/jobs/{job_id}?wait=30", headers=api.auth(owner))) for _ in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: gate.held == before + n, f"{n} waits held")
    return threads


def _refused(resp: Any, kind: str, quota: str, limit: int) -> None:
    body = problem(resp, 429)
    assert body["type"].endswith("/" + kind) and body["quota"] == quota
    assert body["limit"] == limit
    # Whole seconds, when the soonest wait ends at the latest.
    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    assert body["retry_after_s"] == int(resp.headers["Retry-After"])


def test_an_owner_past_its_wait_cap_is_429_and_others_still_wait(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: one owner's waits no longer take every slot. Past OWNER_MAX_WAITS its next
    wait is refused at once, naming the limit; another owner's wait is still served."""
    monkeypatch.setenv("OWNER_MAX_WAITS", "2")
    monkeypatch.setenv("THREADS", "8")  # 4 slots for waits
    job_id = _job(api, "alice")
    held = _hold_waits(api, "alice", job_id, 2)
    third = api.client.get(f"/jobs/{job_id}?wait=30", headers=api.auth("alice"))
    _refused(third, "wait-limit-reached", "owner_max_waits", 2)
    assert api.client.get(f"/jobs/{job_id}", headers=api.auth("alice")).status_code == 200
    bobs = _job(api, "bob")
    resp = api.client.get(f"/jobs/{bobs}?wait=0.2", headers=api.auth("bob"))
    assert resp.status_code == 200 and resp.get_json()["state"] == "PENDING"
    assert all(t.is_alive() for t in held)  # alice's two were held all along
    api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice"))
    for t in held:
        t.join(30)
    assert functions.submit.get_api().waits.held == 0  # every slot given back
    again = api.client.get(f"/jobs/{job_id}?wait=30", headers=api.auth("alice"))
    assert again.status_code == 200 and again.get_json()["state"] == "CANCELLED"


def test_waits_have_a_bounded_share_of_the_instance(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """THREADS x WAIT_SHARE slots for waits (4 x 0.5 = 2): a third owner's wait is refused
    while two are held, and the API still answers submits and reads."""
    monkeypatch.setenv("THREADS", "4")
    monkeypatch.setenv("WAIT_SHARE", "0.5")
    jobs = {owner: _job(api, owner) for owner in ("alice", "bob", "carol")}
    held = [*_hold_waits(api, "alice", jobs["alice"], 1), *_hold_waits(api, "bob", jobs["bob"], 1)]
    resp = api.client.get(f"/jobs/{jobs['carol']}?wait=30", headers=api.auth("carol"))
    _refused(resp, "waits-busy", "wait_slots", 2)
    assert api.post_job("carol", {"preset": "echo", "content": "x"}).status_code == 202
    assert all(t.is_alive() for t in held)
    for owner in ("alice", "bob"):
        api.client.post(f"/jobs/{jobs[owner]}/cancel", headers=api.auth(owner))
    for t in held:
        t.join(30)


def test_waits_never_starve_a_real_server(
    submit_env: SubmitHarness,
) -> None:
    """On a real functions-framework server with 4 request threads, four owners ask for long
    waits at once: two are served, two refused at once, and a submit is answered while the two
    still wait (before the fix, four waits took all four threads and the submit queued behind
    them for 30 s: the waiters had all returned by the time it was answered)."""
    import http.client

    from localstack.function_server import FunctionServer
    from tests.support.paths import ROOT

    env = {**submit_env.env, "THREADS": "4", "WAIT_SHARE": "0.5", "OWNER_MAX_WAITS": "1"}
    srv = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
    try:
        def call(method: str, path: str, owner: str, body: str | None = None) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            headers = {**submit_env.auth(owner), "Content-Type": "application/json"}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), conn

        owners = ["o1", "o2", "o3", "o4"]
        ids = {o: json.loads(call("POST", "/jobs", o, JOB)[1])["id"] for o in owners}
        answers: dict[str, int] = {}

        def wait(owner: str) -> None:
            answers[owner] = call("GET", f"/jobs/{ids[owner]}?wait=30", owner)[0]

        waiters = [threading.Thread(target=wait, args=(o,)) for o in owners]
        for t in waiters:
            t.start()
        wait_until(lambda: sum(1 for s in answers.values() if s == 429) == 2, "two refusals")
        status, _, _ = call("POST", "/jobs", "o5", JOB)
        assert status == 202
        still_waiting = [t for t in waiters if t.is_alive()]
        assert len(still_waiting) == 2, answers
        for owner in owners:
            call("POST", f"/jobs/{ids[owner]}/cancel", owner, "{}")
        for t in waiters:
            t.join(30)
        assert sorted(answers.values()) == [200, 200, 429, 429]
    finally:
        srv.close()
