"""A long job's execution as GET /jobs/{id} shows it (issue 29): its name and attempt, and where
Cloud Run executions are used, links to its logs and its page in the Google Cloud console (the
dashboard shows both). The links are built from settings alone, never from what the name holds
unless it is a plain execution name."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, text

from common.messaging.executions import console_links
from common.settings import Settings
from tests.submit_fixtures import SubmitHarness

NAME = "jobs-execute-x7k2p"
QUERY = "\n".join([
    'resource.type="cloud_run_job"',
    'resource.labels.job_name="jobs-execute"',
    'resource.labels.location="europe-west1"',
    f'labels."run.googleapis.com/execution_name"="{NAME}"',
])


def cloud_run(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "long_job_executor": "cloud-run", "cloud_run_job": "jobs-execute",
        "cloud_run_region": "europe-west1", "google_cloud_project": "my-project"})


def test_the_links_are_the_execution_s_logs_query_and_its_console_page(
        settings: Settings) -> None:
    links = console_links(cloud_run(settings), NAME)
    assert links is not None
    head, _, project = links.logs.partition("?")
    assert head.startswith("https://console.cloud.google.com/logs/query;query=")
    assert "/" not in head.split(";query=")[1]  # encoded: a raw slash would end the query
    assert unquote(head.split(";query=")[1]) == QUERY and project == "project=my-project"
    assert links.execution == ("https://console.cloud.google.com/run/jobs/executions/details/"
                               f"europe-west1/{NAME}?project=my-project")


@pytest.mark.parametrize("name", ['x"; DROP', "Upper-Case", "a" * 64, "-x", ""])
def test_no_links_for_a_name_that_is_not_a_cloud_run_execution_s(settings: Settings,
                                                                  name: str) -> None:
    assert console_links(cloud_run(settings), name) is None


def test_no_links_where_executions_are_local(settings: Settings) -> None:
    local = cloud_run(settings).model_copy(update={"long_job_executor": "local"})
    assert console_links(local, NAME) is None


def _with_execution(api: SubmitHarness, engine: Engine, name: str | None) -> str:
    job = api.post_job("alice", {"preset": "echo", "content": "long"}).get_json()
    if name is not None:
        with engine.connect() as conn:
            conn.execute(text("UPDATE jobs SET state = 'PROCESSING', attempts = 1, "
                              "lease_expires_at = now() + interval '1 hour', "
                              "execution = :name, execution_attempt = 1 WHERE id = :id"),
                         {"id": job["id"], "name": name})
    return str(job["id"])


def _get(api: SubmitHarness, path: str) -> Any:
    answer = api.client.get(path, headers=api.auth("alice"))
    assert answer.status_code in (200, 202), answer.get_data(as_text=True)
    return answer.get_json()


def test_get_shows_a_long_job_s_execution_with_its_links(
        api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"LONG_JOB_EXECUTOR": "cloud-run", "CLOUD_RUN_JOB": "jobs-execute",
                       "CLOUD_RUN_REGION": "europe-west1"}.items():
        monkeypatch.setenv(key, value)  # read at the instance's first request
    long_id = _with_execution(api, engine, NAME)
    short_id = _with_execution(api, engine, None)
    shown = _get(api, f"/jobs/{long_id}")["execution"]
    assert {k: shown[k] for k in ("name", "attempt")} == {"name": NAME, "attempt": 1}
    project = api.env["GOOGLE_CLOUD_PROJECT"]
    assert unquote(shown["logs_url"]) == (
        f"https://console.cloud.google.com/logs/query;query={QUERY}?project={project}")
    assert shown["console_url"].endswith(f"/europe-west1/{NAME}?project={project}")
    assert _get(api, f"/jobs/{short_id}")["execution"] is None
    listed = _get(api, "/jobs")["jobs"]
    assert {j["id"] for j in listed} == {long_id, short_id}
    assert [j["execution"] for j in listed] == [None, None]  # GET /jobs/{id} only


def test_a_local_execution_is_named_without_links(
        api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONG_JOB_EXECUTOR", "local")
    job_id = _with_execution(api, engine, "local-4242")
    assert _get(api, f"/jobs/{job_id}")["execution"] == {
        "name": "local-4242", "attempt": 1, "logs_url": None, "console_url": None}
