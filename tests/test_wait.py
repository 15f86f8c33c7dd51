"""`GET /jobs/{id}?wait=N`: the answer comes when the job ends, or after N seconds; what a
waiting request costs is counted in statements (round trips) and threads, never in time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import functions.submit
from common.store.callers import SQL_GET, SQL_STATE
from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness


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
