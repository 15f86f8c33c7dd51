"""The Cloud Run executor against a stand-in for the Admin API (jobs.run and executions.cancel):
what it asks for, the execution name it reads from the operation, and that any refusal is a
StartFailed (a delivery failure), never an exception of another kind."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.credentials import Credentials

from common.messaging.executions import CloudRunExecutor, StartFailed
from common.settings import Settings

JOB = "projects/p1/locations/europe-west1/jobs/jobs-execute"


class FakeRunApi(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, Any], str]] = []
    answer: tuple[int, Any] = (200, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.calls.append((self.path, body, self.headers.get("Authorization", "")))
        status, payload = self.answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture()
def api() -> Iterator[str]:
    FakeRunApi.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRunApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def executor(settings: Settings, api: str) -> CloudRunExecutor:
    tuned = settings.model_copy(update={
        "google_cloud_project": "p1", "cloud_run_region": "europe-west1",
        "cloud_run_job": "jobs-execute", "cloud_run_api_endpoint": api,
        "long_job_start_timeout_s": 5.0})
    return CloudRunExecutor(tuned, session=AuthorizedSession(Credentials(token="t0k")))


def test_start_runs_the_job_with_the_attempt_as_arguments(executor: CloudRunExecutor) -> None:
    job_id = uuid.uuid4()
    FakeRunApi.answer = (200, {"name": f"{JOB.rsplit('/jobs', 1)[0]}/operations/op1",
                               "metadata": {"name": f"{JOB}/executions/jobs-execute-x7k2p"}})
    assert executor.start(job_id, 3) == "jobs-execute-x7k2p"
    (path, body, auth), = FakeRunApi.calls
    assert path == f"/v2/{JOB}:run" and auth == "Bearer t0k"
    assert body == {"overrides": {"containerOverrides": [
        {"args": ["-m", "common.worker.execute", str(job_id), "3"]}]}}


@pytest.mark.parametrize("answer", [(403, {"error": {"status": "PERMISSION_DENIED"}}),
                                    (429, {"error": {"status": "RESOURCE_EXHAUSTED"}}),
                                    (200, {"name": "op-without-metadata"})])
def test_a_refused_start_is_a_start_failure(executor: CloudRunExecutor,
                                            answer: tuple[int, Any]) -> None:
    FakeRunApi.answer = answer
    with pytest.raises(StartFailed):
        executor.start(uuid.uuid4(), 1)
    assert len(FakeRunApi.calls) == 1


def test_an_unreachable_api_is_a_start_failure(settings: Settings) -> None:
    tuned = settings.model_copy(update={
        "cloud_run_region": "europe-west1", "cloud_run_job": "jobs-execute",
        "cloud_run_api_endpoint": "http://127.0.0.1:9", "long_job_start_timeout_s": 2.0})
    executor = CloudRunExecutor(tuned, session=AuthorizedSession(Credentials(token="t")))
    with pytest.raises(StartFailed):
        executor.start(uuid.uuid4(), 1)


def test_cancel_asks_for_that_execution_and_never_raises(executor: CloudRunExecutor) -> None:
    FakeRunApi.answer = (404, {"error": {"status": "NOT_FOUND"}})
    executor.cancel("jobs-execute-x7k2p")
    assert [c[0] for c in FakeRunApi.calls] == [f"/v2/{JOB}/executions/jobs-execute-x7k2p:cancel"]
