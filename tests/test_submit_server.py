"""`submit` served by a real functions-framework server process, as Cloud Run runs it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.submit_fixtures import SubmitHarness


@pytest.fixture()
def server(submit_server: str) -> str:
    return submit_server


def _call(
    url: str,
    method: str = "GET",
    body: Any = None,
    token: str | None = None,
    ctype: str = "application/json",
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_every_endpoint_through_a_real_server(server: str, submit_env: SubmitHarness) -> None:
    alice = submit_env.token("alice")
    status, headers, job = _call(
        server + "/jobs", "POST", {"preset": "echo", "content": "hi"}, alice
    )
    assert status == 202 and headers["Location"] == f"/jobs/{job['id']}"
    assert [m["data"]["job_id"] for m in submit_env.pull()] == [job["id"]]
    assert _call(server + f"/jobs/{job['id']}", token=alice)[2]["state"] == "PENDING"
    assert len(_call(server + "/jobs?limit=10", token=alice)[2]["jobs"]) == 1
    assert _call(server + f"/jobs/{job['id']}/events", token=alice)[0] == 200
    assert _call(server + f"/jobs/{job['id']}/cancel", "POST", {}, alice)[2]["state"] == "CANCELLED"
    assert _call(server + f"/jobs/{job['id']}/retry", "POST", {}, alice)[0] == 409
    assert _call(server + f"/jobs/{job['id']}", token=submit_env.token("bob"))[0] == 404
    assert _call(server + "/jobs")[0] == 401
    assert _call(server + "/openapi.json")[2]["openapi"] == "3.1.0"
    status, _, problem = _call(server + "/jobs", "POST", {"preset": "zzz", "content": "x"}, alice)
    assert status == 422 and problem["type"].endswith("/unknown-preset")
