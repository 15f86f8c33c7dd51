"""The OpenAPI document is exact: schemathesis, an independent contract tester, finds nothing.

schemathesis runs against a real `submit` server (functions-framework, real PostgreSQL, the
Pub/Sub emulator) with every check, including the stateful phase that follows the document's
links from `POST /jobs` to the job's own operations. Seeded and bounded for CI; `make bench`
runs it longer (SCHEMATHESIS_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common.presets.demo import SECONDS
from tests.submit_fixtures import SubmitHarness

# 23 operations, three of them batch and bulk bodies (the coverage phase sends a batch of
# 1,000 and one of 1,001): longer than the suite's 300 s default on a loaded 2-core VM.
pytestmark = pytest.mark.timeout(600)

SEED = 20261126
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "50"))


@pytest.fixture()
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """`GET /jobs/{id}?wait=N` holds a request up to N s: this instance allows at most 0.5 s
    (WAIT_MAX_S, which the document states), so the run stays as short as it was."""
    monkeypatch.setenv("WAIT_MAX_S", "0.5")
    # The demo preset (make dev's) is on, so its content pattern is in the document and checked.
    monkeypatch.setenv("ENABLE_DEMO_PRESET", "true")


@pytest.fixture()
def server(short_waits: None, submit_server: str) -> str:
    return submit_server


def run_schemathesis(
    url: str, token: str, report: Path, examples: int
) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [
            str(cli), "run", f"{url}/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--checks", "all",
            "--phases", os.environ.get("SCHEMATHESIS_PHASES", "examples,coverage,fuzzing,stateful"),
            "-n", str(examples),
            "--seed", str(SEED),
            "--workers", "1",
            # The run is the seed's alone, as in CI's fresh checkout: examples an earlier local
            # run saved would change what this one generates (a second local run once failed a
            # "filter_too_much" health check on POST /schedules that the seed alone passes).
            "--generation-database", "none",
            "--report", "json",
            "--report-json-path", str(report),
            "--no-color",
        ],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )


def test_schemathesis_finds_nothing(server: str, submit_env: SubmitHarness, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = run_schemathesis(server, submit_env.token("contract"), report, EXAMPLES)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]
    print(f"schemathesis: {cases['generated']} cases, seed {SEED}, "
          f"{summary['operations']['tested']} operations")
    assert summary["complete"] and summary["failures"] == [] and summary["errors"] == []
    assert cases["with_failures"] == 0 and cases["generated"] >= 8 * EXAMPLES
    assert summary["operations"]["tested"] == summary["operations"]["total"] == 23
    assert {name: p["status"] for name, p in summary["phases"].items() if name != "examples"} == {
        "coverage": "success", "fuzzing": "success", "stateful": "success"
    }
    # The stateful phase walked real jobs: the job operations were reached through the links.
    assert "GET /jobs/{job_id}" not in summary["warnings"]["missing_test_data"]
    assert "GET /schedules/{schedule_id}" not in summary["warnings"]["missing_test_data"]
    assert "GET /limits/{key}" not in summary["warnings"]["missing_test_data"]


def test_the_document_lists_this_instance_s_presets_and_links(server: str) -> None:
    from urllib.request import urlopen

    with urlopen(server + "/openapi.json", timeout=10) as resp:
        doc = json.loads(resp.read())
    variants = doc["components"]["schemas"]["NewJob"]["oneOf"]
    presets = sorted(
        doc["components"]["schemas"][v["$ref"].rsplit("/", 1)[1]]["properties"]["preset"]["const"]
        for v in variants
    )
    assert presets == ["checksum", "demo", "echo", "text-stats"]
    demo = doc["components"]["schemas"]["NewJob_demo"]["properties"]["content"]
    assert demo["pattern"] == SECONDS and "0 to 30" in demo["description"]
    links = doc["paths"]["/jobs"]["post"]["responses"]["202"]["links"]
    assert set(links) == {"getJob", "getJobEvents", "cancelJob", "retryJob"}
    schedule_links = doc["paths"]["/schedules"]["post"]["responses"]["201"]["links"]
    assert set(schedule_links) == {"getSchedule", "updateSchedule", "deleteSchedule",
                                   "getScheduleEvents"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code, answer in op["responses"].items():
                if int(code) >= 400 and path != "/healthz":  # /healthz's 503 is a Health body
                    assert "problem+json" in str(answer["content"]), (path, method, code)


@pytest.mark.parametrize(
    "cursor", ["0." + "0" * 32, "9999999999999999." + "f" * 32, "1732612345123456." + "a" * 32]
)
def test_every_cursor_the_pattern_allows_is_accepted(
    server: str, submit_env: SubmitHarness, cursor: str
) -> None:
    from urllib.request import Request, urlopen

    req = Request(f"{server}/jobs?cursor={cursor}",
                  headers={"Authorization": f"Bearer {submit_env.token('c')}"})
    with urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["jobs"] == []


@pytest.fixture()
def _tight_quotas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OWNER_MAX_PENDING", "1")
    monkeypatch.setenv("OWNER_MAX_WAITS", "1")
    monkeypatch.setenv("WAIT_MAX_S", "10")


def _validate(doc: dict[str, Any], path: str, method: str, status: int, body: Any,
              headers: Any) -> None:
    """A real answer against what the document says of it: its body's schema (with the
    document's own $refs) and every header it declares required."""
    import jsonschema

    answer = doc["paths"][path][method]["responses"][str(status)]
    schema = answer["content"]["application/problem+json"]["schema"]
    # The document's own components beside the schema, so its "#/components/..." refs resolve.
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(body)
    for name, header in answer.get("headers", {}).items():
        assert header["required"] and name in headers
        jsonschema.Draft202012Validator(header["schema"]).validate(headers[name])


@pytest.mark.usefixtures("_tight_quotas")
def test_real_429s_match_the_document(submit_server: str, submit_env: SubmitHarness) -> None:
    """Both kinds of 429 at the door, produced for real, match their documented response:
    LimitProblem naming the quota, and the Retry-After header."""
    import http.client
    import threading
    from urllib.parse import urlsplit
    from urllib.request import urlopen

    with urlopen(submit_server + "/openapi.json", timeout=10) as resp:
        doc = json.loads(resp.read())
    port = urlsplit(submit_server).port

    def call(method: str, path: str, body: str | None = None) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(method, path, body=body, headers={
            "Authorization": f"Bearer {submit_env.token('c')}",
            "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), resp.headers

    job = json.dumps({"preset": "echo", "content": "x"})
    status, first, _ = call("POST", "/jobs", job)
    assert status == 202
    status, body, headers = call("POST", "/jobs", job)
    assert status == 429 and body["quota"] == "max_pending"
    _validate(doc, "/jobs", "post", 429, body, headers)
    # Three waits at once with a cap of one: whichever comes second or third is refused, so the
    # test does not depend on which thread the server sees first.
    answers: list[tuple[int, Any, Any]] = []
    waits = [threading.Thread(target=lambda: answers.append(
        call("GET", f"/jobs/{first['id']}?wait=10"))) for _ in range(3)]
    for wait in waits:
        wait.start()
    for wait in waits:
        wait.join(30)
    refused = [answer for answer in answers if answer[0] == 429]
    assert refused, f"no wait refused among {[a[0] for a in answers]}"
    status, body, headers = refused[0]
    assert body["quota"] == "owner_max_waits"
    _validate(doc, "/jobs/{job_id}", "get", 429, body, headers)
