"""The jobs HTTP API through functions-framework's test client, against real PostgreSQL, the
Pub/Sub emulator and real token verification."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from common.api.auth import issue_dev_token
from tests.submit_fixtures import AUDIENCE, SECRET, SubmitHarness

JOB = {"preset": "echo", "content": "hello", "metadata": {"ref": 7}}


def _problem(resp: object) -> dict[str, object]:
    assert resp.headers["Content-Type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = json.loads(resp.data)  # type: ignore[attr-defined]
    assert body["status"] == resp.status_code  # type: ignore[attr-defined]
    assert "Traceback" not in json.dumps(body)
    return body


def test_post_commits_then_publishes_id_and_attempt_not_content(api: SubmitHarness) -> None:
    resp = api.post_job("alice", JOB)
    assert resp.status_code == 202
    job = resp.get_json()
    assert resp.headers["Location"] == f"/jobs/{job['id']}" == job["links"]["self"]
    assert job["state"] == "PENDING" and job["metadata"] == {"ref": 7}
    assert "content" not in job and "owner_id" not in job
    messages = api.pull()
    # The attributes carry the job's W3C trace too (a new one: this request sent none).
    traceparent = messages[0]["attributes"].get("traceparent", "")
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", traceparent)
    assert messages == [
        {"data": {"v": 1, "job_id": job["id"], "attempts": 0},
         "attributes": {"job_id": job["id"], "traceparent": traceparent}}
    ]
    shown = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert shown["id"] == job["id"]


def test_idempotent_replay_returns_200_and_publishes_nothing(api: SubmitHarness) -> None:
    first = api.post_job("alice", JOB, **{"Idempotency-Key": "order-1"})
    again = api.post_job("alice", JOB, **{"Idempotency-Key": "order-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(api.pull()) == 1
    conflict = api.post_job("alice", {**JOB, "content": "other"}, **{"Idempotency-Key": "order-1"})
    assert conflict.status_code == 409
    assert _problem(conflict)["type"].endswith("/idempotency-conflict")  # type: ignore[union-attr]


def test_key_in_body_and_header_must_agree(api: SubmitHarness) -> None:
    resp = api.post_job("alice", {**JOB, "idempotency_key": "a"}, **{"Idempotency-Key": "b"})
    assert resp.status_code == 409
    assert _problem(resp)["type"].endswith("/idempotency-key-mismatch")  # type: ignore[union-attr]


def test_list_pages_newest_first_and_filters(api: SubmitHarness) -> None:
    ids = [api.post_job("alice", {**JOB, "content": str(i)}).get_json()["id"] for i in range(5)]
    api.post_job("bob", JOB)
    seen, cursor = [], None
    while True:
        query = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(query, headers=api.auth("alice")).get_json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    done = api.client.get("/jobs?state=COMPLETED", headers=api.auth("alice")).get_json()
    assert done == {"jobs": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=DONE", "state"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("cursor=%25%25", "cursor"),
    ],
)
def test_bad_list_parameters(api: SubmitHarness, query: str, field: str) -> None:
    resp = api.client.get(f"/jobs?{query}", headers=api.auth("alice"))
    assert resp.status_code in (400, 422)
    assert _problem(resp)["invalid_params"][0]["name"] == field  # type: ignore[index]


def test_events_cancel_and_retry(api: SubmitHarness) -> None:
    job_id = api.post_job("alice", JOB).get_json()["id"]
    cancelled = api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice"))
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "CANCELLED"
    again = api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice"))
    assert again.status_code == 409 and _problem(again)["state"] == "CANCELLED"
    retry = api.client.post(f"/jobs/{job_id}/retry", headers=api.auth("alice"))
    assert retry.status_code == 409
    events = api.client.get(f"/jobs/{job_id}/events", headers=api.auth("alice")).get_json()
    assert [e["reason"] for e in events["events"]] == ["created", "cancelled"]


def test_retry_of_a_failed_job_dispatches_it_again(api: SubmitHarness, store: object) -> None:
    from common.store.job_store import JobStore

    assert isinstance(store, JobStore)
    job_id = api.post_job("alice", JOB).get_json()["id"]
    api.pull()
    claimed = store.claim(job_id).job
    assert claimed is not None
    store.fail(claimed.id, claimed.attempts, "Broken", "no")
    resp = api.client.post(f"/jobs/{job_id}/retry", headers=api.auth("alice"))
    assert resp.status_code == 202 and resp.get_json()["state"] == "PENDING"
    assert [m["data"]["attempts"] for m in api.pull()] == [1]


def test_another_owners_job_answers_404_like_a_missing_one(api: SubmitHarness) -> None:
    job_id = api.post_job("alice", JOB).get_json()["id"]
    for target in (job_id, str(uuid.uuid4()), "not-a-uuid"):
        for method, path in (
            ("get", f"/jobs/{target}"),
            ("get", f"/jobs/{target}/events"),
            ("post", f"/jobs/{target}/cancel"),
            ("post", f"/jobs/{target}/retry"),
        ):
            resp = getattr(api.client, method)(path, headers=api.auth("mallory"))
            assert resp.status_code == 404
            assert _problem(resp)["title"] == "Job not found"
    assert api.client.get(f"/jobs/{job_id}", headers=api.auth("alice")).status_code == 200


def test_google_id_tokens_are_verified(api: SubmitHarness) -> None:
    token = api.google.token(
        sub="svc-123", aud=AUDIENCE, email="svc@example.iam.gserviceaccount.com"
    )
    resp = api.client.post(
        "/jobs",
        data=json.dumps(JOB),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 202
    fetched = api.google.fetches
    again = api.client.get("/jobs", headers={"Authorization": f"Bearer {token}"})
    assert len(again.get_json()["jobs"]) == 1  # the owner is the token's subject
    assert api.google.fetches == fetched  # certificates are cached, not fetched per request


def test_bad_tokens_get_401(api: SubmitHarness) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "none": None,
        "not bearer": "Basic abc",
        "garbage": "Bearer not.a.token",
        "expired hs256": f"Bearer {issue_dev_token(SECRET, 'a', ttl_s=-60)}",
        "wrong secret": f"Bearer {issue_dev_token('another-secret-of-enough-length!!', 'a')}",
        "wrong audience": f"Bearer {api.google.token(sub='a', aud='https://elsewhere')}",
        "expired google": f"Bearer {api.google.token(sub='a', aud=AUDIENCE, ttl_s=-120)}",
        "wrong signature": f"Bearer {api.google.token(sub='a', aud=AUDIENCE, key=other_key)}",
        "wrong issuer": f"Bearer {api.google.token(sub='a', aud=AUDIENCE, iss='https://evil')}",
    }
    for name, header in bad.items():
        headers = {"Authorization": header} if header else {}
        resp = api.client.get("/jobs", headers=headers)
        assert resp.status_code == 401, name
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        _problem(resp)


def test_http_errors_are_problems(api: SubmitHarness) -> None:
    auth = api.auth("alice")
    cases = [
        (
            api.client.post("/jobs", data="{nope", content_type="application/json", headers=auth),
            400,
        ),
        (api.client.post("/jobs", data="x", content_type="text/plain", headers=auth), 415),
        (api.client.post("/jobs", data="[1]", content_type="application/json", headers=auth), 422),
        (api.client.get("/nowhere", headers=auth), 404),
        (api.client.delete("/jobs", headers=auth), 405),
        (api.post_job("alice", {"preset": "resize", "content": "x"}), 422),
        (api.post_job("alice", {"preset": "echo", "content": "x" * 20_000}), 422),
        (api.post_job("alice", {"preset": "echo", "content": "x", "owner_id": "bob"}), 422),
        (api.post_job("alice", {"preset": "echo", "content": "a\u0000b"}), 422),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.data
        _problem(resp)
    unknown = api.post_job("alice", {"preset": "resize", "content": "x"})
    assert _problem(unknown)["known_presets"] == ["checksum", "echo", "text-stats"]
    assert api.client.delete("/jobs", headers=auth).headers["Allow"] == "GET, HEAD, POST"
    assert api.pull() == []


def test_oversized_body_is_refused_without_reading_it(api: SubmitHarness) -> None:
    huge = b'{"preset": "echo", "content": "' + b"x" * 200_000 + b'"}'
    resp = api.client.post(
        "/jobs", data=huge, content_type="application/json", headers=api.auth("alice")
    )
    assert resp.status_code == 413
    _problem(resp)


def test_healthz_and_openapi_need_no_token(api: SubmitHarness) -> None:
    assert api.client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}
    doc = api.client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel"}
    assert "NewJob" in doc["components"]["schemas"]


def test_logs_are_json_with_trace_and_no_secrets(
    api: SubmitHarness, capfd: pytest.CaptureFixture[str]
) -> None:
    token = api.token("alice")
    api.client.post(
        "/jobs",
        data=json.dumps({**JOB, "content": "top-secret-content"}),
        content_type="application/json",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1",
        },
    )
    lines = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert lines, "no log lines"
    assert any(line.get("job_id") for line in lines)
    assert all(line["severity"] in {"INFO", "WARNING", "ERROR"} for line in lines)
    assert any(
        line.get("logging.googleapis.com/trace", "").endswith(
            "/traces/105445aa7843bc8bf206b12000100000"
        )
        for line in lines
    )
    text = json.dumps(lines)
    assert token not in text and "top-secret-content" not in text


def test_published_job_is_marked_dispatched(api: SubmitHarness, store: object) -> None:
    from common.store.job_store import JobStore

    assert isinstance(store, JobStore)
    api.post_job("alice", JOB)
    assert len(api.pull()) == 1
    assert store.take_due_for_dispatch(10) == []  # sweep will not publish it a second time


def test_cancel_of_a_running_job_is_requested(api: SubmitHarness, store: object) -> None:
    from common.store.job_store import JobStore

    assert isinstance(store, JobStore)
    job_id = api.post_job("alice", JOB).get_json()["id"]
    assert store.claim(job_id).reason == "claimed"
    resp = api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice"))
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["state"], body["cancel_requested"]) == ("PROCESSING", True)


def test_preset_options_are_checked_at_submit(api: SubmitHarness) -> None:
    resp = api.post_job(
        "alice", {"preset": "text-stats", "content": "x", "metadata": {"options": {"top": 0}}}
    )
    assert resp.status_code == 422
    assert _problem(resp)["invalid_params"][0]["name"] == "metadata.options"  # type: ignore[index]
    assert api.pull() == []
    ok = api.post_job(
        "alice",
        {"preset": "checksum", "content": "x", "metadata": {"options": {"algorithms": ["md5"]}}},
    )
    assert ok.status_code == 202


def test_the_trace_id_is_visible_on_submit_and_get(api: SubmitHarness) -> None:
    """The caller's W3C trace continues into the job: the submit answer and GET /jobs/{id}
    name its trace id, the same one the message carries (and, through the job, its logs and
    webhook). Without a traceparent the job gets a new trace, shown the same way."""
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = api.post_job("alice", JOB, traceparent=f"00-{caller}-00f067aa0ba902b7-01")
    assert traced.status_code == 202 and traced.get_json()["trace_id"] == caller
    shown = api.client.get(f"/jobs/{traced.get_json()['id']}", headers=api.auth("alice"))
    assert shown.get_json()["trace_id"] == caller
    fresh = api.post_job("alice", {**JOB, "content": "other"}).get_json()
    messages = {m["data"]["job_id"]: m["attributes"]["traceparent"] for m in api.pull()}
    assert messages[fresh["id"]].split("-")[1] == fresh["trace_id"] != caller
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["trace_id"])
    listed = api.client.get("/jobs", headers=api.auth("alice")).get_json()["jobs"]
    assert {j["trace_id"] for j in listed} == {caller, fresh["trace_id"]}


def test_history_and_limits_are_the_callers_own(api: SubmitHarness) -> None:
    """GET /stats/history counts the caller's ended jobs per minute (60 buckets, zeros
    included) by end state; another owner's never show. GET /limits names the stack's
    default. A window other than hour or day is a 422 naming the field."""
    mine = [api.post_job("alice", {**JOB, "content": str(i)}).get_json()["id"] for i in range(3)]
    theirs = api.post_job("mallory", JOB).get_json()["id"]
    for job_id in mine[:2]:
        api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("alice"))
    api.client.post(f"/jobs/{theirs}/cancel", headers=api.auth("mallory"))
    hour = api.client.get("/stats/history", headers=api.auth("alice")).get_json()
    assert hour["window"] == "hour" and hour["bucket_s"] == 60 and len(hour["buckets"]) == 60
    assert sum(b["counts"]["CANCELLED"] for b in hour["buckets"]) == 2
    assert all(set(b["counts"]) == {"COMPLETED", "FAILED", "CANCELLED"} for b in hour["buckets"])
    starts = [b["at"] for b in hour["buckets"]]
    assert starts == sorted(starts)
    day = api.client.get("/stats/history?window=day", headers=api.auth("alice")).get_json()
    assert len(day["buckets"]) == 96 and sum(b["counts"]["CANCELLED"] for b in day["buckets"]) == 2
    nobody = api.client.get("/stats/history", headers=api.auth("bob")).get_json()
    assert all(not any(b["counts"].values()) for b in nobody["buckets"])
    bad = api.client.get("/stats/history?window=week", headers=api.auth("alice"))
    assert bad.status_code == 422
    assert _problem(bad)["invalid_params"] == [{"name": "window",  # type: ignore[comparison-overlap]
                                                "reason": "must be hour or day"}]
    limits = api.client.get("/limits", headers=api.auth("alice")).get_json()
    assert limits == {"default_max_running": 0, "override": None, "max_running": 0,
                      "running": 0, "max_submits_per_s": 0, "max_pending": 0, "max_waits": 2,
                      "keys": [], "presets": []}
    assert api.client.get("/limits").status_code == 401
