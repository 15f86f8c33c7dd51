"""Expand, then contract (issue 26, item 6): the previous release's code runs against this tree's
schema. A build migrates first and then deploys three functions over minutes, and a failed deploy
or a rollback leaves the older code serving the newer schema for as long as it takes; so every
migration must keep the previous release working, and this test runs it.

The previous release is the commit named in PREVIOUS_RELEASE (tests/previous_release.txt: the
commit production runs, bumped with each release, docs/deploy.md "Releases and rollbacks"). Its
tree comes out of git (`git archive`, so CI's full clone is enough) into a temporary folder; its
own `submit` and `process` run there as real functions-framework servers, on this checkout's
virtualenv, against a database this tree migrated to head, with the Pub/Sub emulator pushing job
messages to the old `process`. A job goes in through the old API, is run by the old worker and
read back by the old API and by this tree's store: both releases agree on every row."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from common.api.auth import issue_dev_token
from common.store.job_store import JobStore
from common.store.states import JobState
from localstack.function_server import FunctionServer
from localstack.paths import ROOT
from localstack.postgres import PostgresServer, migrate
from localstack.topology import Topology
from tests.support.polling import wait_until

SECRET = "previous-release-secret-of-some-length"
PIN = ROOT / "tests" / "previous_release.txt"


def previous_release() -> str:
    commit = PIN.read_text().split()[0]
    done = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"the previous release {commit} is not in this clone's history "
                             "(a shallow clone?): fetch it, e.g. `git fetch --unshallow`")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    commit = previous_release()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT,
                             capture_output=True, check=True).stdout
    target = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture()
def new_schema(pg_server: PostgresServer) -> Iterator[str]:
    name = pg_server.create_database("jobs_previous")
    url = pg_server.url(name)
    migrate(url)  # this tree's migrations: the new schema
    yield url
    pg_server.drop_database(name)


def test_the_previous_releases_api_and_worker_run_against_the_new_schema(
    old_tree: Path, new_schema: str, emulator: Any, settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in emulator.env().items():  # this process makes the topics
        monkeypatch.setenv(key, value)
    tag = uuid.uuid4().hex[:8]
    topology = Topology(project=emulator.project, jobs_topic=f"jobs-{tag}",
                        push_subscription=f"process-{tag}", dead_letter_topic=f"dead-{tag}",
                        dead_letter_subscription=f"dead-{tag}-reader",
                        results_topic=f"results-{tag}", min_backoff_s=0.2, max_backoff_s=1.0)
    env = {
        **emulator.env(),
        "DATABASE_URL": new_schema,
        "AUTH_HS256_SECRET": SECRET,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "JOBS_TOPIC": topology.jobs_topic,
        "RESULTS_TOPIC": topology.results_topic,
        "PUBLISH_TIMEOUT_S": "5",
        "ACK_DEADLINE_S": "60",
    }
    submit = FunctionServer("submit", old_tree / "main.py", env, probe="/healthz")
    process = FunctionServer("process", old_tree / "main.py", env)
    try:
        topology.create(process.url + "/")
        headers = {"Authorization": f"Bearer {issue_dev_token(SECRET, 'alice')}"}
        created = requests.post(f"{submit.url}/jobs", headers=headers, timeout=30,
                                json={"preset": "echo", "content": "from the old release"})
        assert created.status_code == 202, created.text + submit.log_text()
        job_id = created.json()["id"]

        def state() -> str:
            got = requests.get(f"{submit.url}/jobs/{job_id}", headers=headers, timeout=30)
            assert got.status_code == 200, got.text
            return str(got.json()["state"])

        wait_until(lambda: state() in ("COMPLETED", "FAILED"),
                   "the old worker to finish the job", timeout=60)
        old_view = requests.get(f"{submit.url}/jobs/{job_id}", headers=headers,
                                timeout=30).json()
        assert old_view["state"] == "COMPLETED", (old_view, process.log_text()[-3000:])
        events = requests.get(f"{submit.url}/jobs/{job_id}/events", headers=headers,
                              timeout=30)
        assert events.status_code == 200, events.text
        # This release reads what the old one wrote, the same way.
        from common.store.engine import create_engine_from_settings

        new_settings = settings.model_copy(update={"database_url": new_schema})
        engine = create_engine_from_settings(new_settings)
        try:
            job = JobStore(engine, new_settings).get("hs256:alice", job_id)
        finally:
            engine.dispose()
        assert job.state is JobState.COMPLETED and job.result is not None
        assert old_view["result"]["status"] == job.result.status == "succeeded"
        assert json.dumps(old_view["result"]["output"], sort_keys=True) == json.dumps(
            job.result.output, sort_keys=True)
        assert job.attempts == old_view["attempts"] == 1
    finally:
        try:
            topology.delete_push_subscription()
        finally:  # the servers go even if the emulator call fails
            process.close()
            submit.close()
