"""The security matrix: every endpoint x every bad credential answers 401 (or, for another
owner's valid token, 404 or only that owner's own data), never anyone else's data; and SQL
metacharacters in every field are stored and returned verbatim. (The sweep's refusals of every
caller but the scheduler are in test_sweep_api.py.)"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from common.store.job_store import JobStore
from tests.submit_fixtures import AUDIENCE, SECRET, SubmitHarness

ALICE = "alice"
BY_ID = [
    ("GET", "/jobs/{id}"),
    ("GET", "/jobs/{id}/events"),
    ("POST", "/jobs/{id}/cancel"),
    ("POST", "/jobs/{id}/retry"),
]
OWNER_WIDE = [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/stats")]
# A key limit is its owner's, like a job (common/api/limits.py).
LIMITS = [("GET", "/limits"), ("GET", "/limits/gpu"), ("PUT", "/limits/gpu"),
          ("DELETE", "/limits/gpu")]
# A workflow is its owner's, like a job (common/api/workflows.py).
WORKFLOWS = [("POST", "/workflows"), ("GET", "/workflows"), ("GET", "/workflows/{wf}"),
             ("POST", "/workflows/{wf}:cancel"), ("POST", "/workflows/{wf}:retry")]
WORKFLOW = {"steps": [{"name": "a", "preset": "echo", "content": "secret"},
                      {"name": "b", "preset": "echo", "content": "x", "after": ["a"]}]}


def _hs256(sub: str, *, secret: str = SECRET, ttl_s: int = 600, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl_s, **claims}, secret,
                      algorithm="HS256")


def _bad_credentials(api: SubmitHarness) -> dict[str, dict[str, str]]:
    g = api.google
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    return {
        "no token": {},
        "not bearer": {"Authorization": f"Basic {_hs256(ALICE)}"},
        "expired hs256": bearer(_hs256(ALICE, ttl_s=-120)),
        "expired google": bearer(g.token(sub=ALICE, aud=AUDIENCE, ttl_s=-120)),
        "wrong audience": bearer(g.token(sub=ALICE, aud="https://elsewhere.example")),
        "wrong issuer": bearer(g.token(sub=ALICE, aud=AUDIENCE, iss="https://evil.example")),
        "wrong signature hs256": bearer(_hs256(ALICE, secret="not-the-secret-" * 3)),
        "wrong signature google": bearer(g.token(sub=ALICE, aud=AUDIENCE, key=stranger_key)),
        "alg none": bearer(jwt.encode({"sub": ALICE, "exp": int(time.time()) + 60}, None,
                                      algorithm="none")),
        "garbage": bearer("a.b.c"),
    }


def _request(api: SubmitHarness, method: str, path: str, headers: dict[str, str]) -> Any:
    body = json.dumps({"preset": "echo", "content": "x"}) if path == "/jobs" else "{}"
    if path == "/workflows":
        body = json.dumps(WORKFLOW)
    return api.client.open(path, method=method, headers=headers, data=body,
                           content_type="application/json")


def test_every_endpoint_refuses_every_bad_credential(api: SubmitHarness, store: JobStore) -> None:
    job_id = api.post_job(ALICE, {"preset": "echo", "content": "secret stuff"}).get_json()["id"]
    wf = api.client.post("/workflows", json=WORKFLOW, headers=api.auth(ALICE)).get_json()
    before = store.list_jobs(ALICE, limit=10).jobs
    store.set_key_limit(f"hs256:{ALICE}", "gpu", max_running=2)
    for name, headers in _bad_credentials(api).items():
        for method, template in BY_ID + OWNER_WIDE + LIMITS + WORKFLOWS:
            path = template.format(id=job_id, wf=wf["id"])
            resp = _request(api, method, path, headers)
            assert resp.status_code == 401, (name, method, path, resp.get_json())
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            # A problem and nothing else (its `instance` is the path the caller sent).
            assert set(resp.get_json()) <= {"type", "title", "status", "detail", "instance"}
    assert store.list_jobs(ALICE, limit=10).jobs == before  # nothing was created or changed
    assert store.key_limit(f"hs256:{ALICE}", "gpu").max_running == 2
    assert store.get_workflow(f"hs256:{ALICE}", wf["id"]).state == "RUNNING"


def test_another_owners_token_sees_nothing_of_alices(api: SubmitHarness, store: JobStore) -> None:
    job_id = api.post_job(ALICE, {"preset": "echo", "content": "secret stuff"}).get_json()["id"]
    store.set_key_limit(f"hs256:{ALICE}", "gpu", max_running=2)
    wf = api.client.post("/workflows", json=WORKFLOW, headers=api.auth(ALICE)).get_json()
    bob_tokens = {
        "bob hs256": {"Authorization": f"Bearer {_hs256('bob')}"},
        "bob google": {"Authorization": "Bearer " + api.google.token(sub="bob", aud=AUDIENCE)},
    }
    for name, headers in bob_tokens.items():
        for method, template in BY_ID:
            resp = _request(api, method, template.format(id=job_id), headers)
            assert resp.status_code == 404, (name, method, template)
            problem = resp.get_json()
            assert problem["type"].endswith("/not-found")
            assert set(problem) <= {"type", "title", "status", "detail", "instance"}
        listed = api.client.get("/jobs", headers=headers)
        assert listed.status_code == 200 and job_id not in listed.get_data(as_text=True)
        stats = api.client.get("/stats", headers=headers).get_json()
        assert stats["depth"]["PENDING"] == 0
        for method in ("GET", "DELETE"):  # alice's key limit is not bob's to read or delete
            resp = api.client.open("/limits/gpu", method=method, headers=headers)
            assert resp.status_code == 404 and resp.get_json()["type"].endswith("/not-found")
        assert api.client.get("/limits", headers=headers).get_json()["keys"] == []
        for method, template in WORKFLOWS[2:]:  # alice's workflow is not bob's
            resp = _request(api, method, template.format(wf=wf["id"]), headers)
            assert resp.status_code == 404 and resp.get_json()["type"].endswith("/not-found")
        listed = api.client.get("/workflows", headers=headers)
        assert listed.status_code == 200 and listed.get_json()["workflows"] == []
    assert store.get_workflow(f"hs256:{ALICE}", wf["id"]).state == "RUNNING"
    # bob's cancel/retry did nothing (owners are namespaced by verifier: docs/api.md)
    assert store.get(f"hs256:{ALICE}", job_id).state.value == "PENDING"
    assert store.key_limit(f"hs256:{ALICE}", "gpu").max_running == 2


SQL_NASTIES = [
    "'; DROP TABLE jobs; --",
    "\" OR \"1\"=\"1",
    "$$ SELECT pg_sleep(10) $$",
    "%s %(x)s :name ?",
    "\\x00\\'\\\\",
    "jobs; DELETE FROM job_events WHERE true",
    "/* comment */ UNION SELECT * FROM pg_user --",
]


@pytest.mark.parametrize("nasty", SQL_NASTIES)
def test_sql_metacharacters_are_stored_and_returned_verbatim(
    api: SubmitHarness, store: JobStore, nasty: str
) -> None:
    owner = "owner " + nasty
    resp = api.post_job(
        owner,
        {
            "preset": "echo",
            "content": nasty,
            "metadata": {nasty: nasty, "list": [nasty]},
            "idempotency_key": nasty[:200],
        },
    )
    assert resp.status_code == 202, resp.get_json()
    view = resp.get_json()
    assert view["metadata"] == {nasty: nasty, "list": [nasty]}
    stored = store.get(f"hs256:{owner}", view["id"])
    assert stored.content == nasty and stored.owner_id == f"hs256:{owner}"
    assert stored.idempotency_key == nasty[:200]
    got = api.client.get(f"/jobs/{view['id']}", headers=api.auth(owner)).get_json()
    assert got["metadata"] == {nasty: nasty, "list": [nasty]}
    # As a filter value and a cursor it is refused cleanly, never executed.
    for key in ("state", "cursor"):
        bad = api.client.get("/jobs?" + urlencode({key: nasty}), headers=api.auth(owner))
        assert bad.status_code in (400, 422) and bad.content_type == "application/problem+json"
    # The tables are all still there, and only this job exists for this owner.
    assert [j.id for j in store.list_jobs(f"hs256:{owner}", limit=10).jobs] == [stored.id]


GOOGLE_SUB = "109876543210987654321"  # the shape of a Google account's subject


def test_an_hs256_token_cannot_act_as_the_google_user_with_the_same_sub(
    api: SubmitHarness, store: JobStore
) -> None:
    """Anyone holding the HS256 secret can mint any `sub`; owners are namespaced by verifier,
    so the Google user's jobs stay theirs alone (and the reverse)."""
    google = {"Authorization": "Bearer " + api.google.token(sub=GOOGLE_SUB, aud=AUDIENCE)}
    forged = {"Authorization": f"Bearer {_hs256(GOOGLE_SUB)}"}
    body = json.dumps({"preset": "echo", "content": "x", "idempotency_key": "same-key"})
    ids = {}
    for name, headers in (("google", google), ("hs256", forged)):
        resp = api.client.post("/jobs", headers=headers, data=body,
                               content_type="application/json")
        assert resp.status_code == 202, name  # the same key is no conflict: other owner
        ids[name] = resp.get_json()["id"]
    for mine, theirs, headers in (("google", "hs256", google), ("hs256", "google", forged)):
        assert api.client.get(f"/jobs/{ids[theirs]}", headers=headers).status_code == 404
        listed = api.client.get("/jobs", headers=headers).get_json()["jobs"]
        assert [j["id"] for j in listed] == [ids[mine]]
        assert store.get(f"{mine}:{GOOGLE_SUB}", ids[mine]).owner_id == f"{mine}:{GOOGLE_SUB}"
        stats = api.client.get("/stats", headers=headers).get_json()
        assert stats["depth"]["PENDING"] == 1


def test_hs256_issuer_and_audience_are_checked_when_configured(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.submit_fixtures import reset_instance_state

    monkeypatch.setenv("AUTH_HS256_ISSUER", "https://issuer.example")
    monkeypatch.setenv("AUTH_HS256_AUDIENCE", AUDIENCE)
    reset_instance_state()  # a new instance, built from the new environment
    good = {"iss": "https://issuer.example", "aud": AUDIENCE}
    cases = {
        "no iss": {"aud": AUDIENCE},
        "wrong iss": {**good, "iss": "jobs-pipeline-dev"},
        "no aud": {"iss": "https://issuer.example"},
        "wrong aud": {**good, "aud": "https://elsewhere.example"},
    }
    for name, claims in cases.items():
        headers = {"Authorization": f"Bearer {_hs256(ALICE, **claims)}"}
        assert api.client.get("/jobs", headers=headers).status_code == 401, name
    ok = api.client.get("/jobs", headers={"Authorization": f"Bearer {_hs256(ALICE, **good)}"})
    assert ok.status_code == 200
