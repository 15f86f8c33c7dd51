"""Where a long job's attempt runs (issue 29): an execution started for it, given only the job
id and the attempt. Two implementations behind one small interface, chosen by
LONG_JOB_EXECUTOR: a Cloud Run job execution (production), or a child process running the same
entry point with the same environment (make dev, tests, the chaos run).

An executor only starts and cancels; what the execution does is common/worker/execute.py, and
which attempt it may run is the database's to say (common/store/executions.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import quote
from uuid import UUID

from common.settings import LongJobExecutor, Settings

if TYPE_CHECKING:
    from google.auth.transport.requests import AuthorizedSession

ROOT = Path(__file__).resolve().parents[2]
# The entry point, as arguments after the interpreter: `python -m common.worker.execute ID N`.
ENTRY = ["-m", "common.worker.execute"]


class StartFailed(Exception):
    """The execution could not be started (quota, a missing permission, the API away, no
    executor configured): a delivery failure, not the job's."""


class Executor(Protocol):
    def start(self, job_id: UUID, attempt: int) -> str:
        """Start one execution for this attempt and return its name. Raises StartFailed."""
        ...

    def cancel(self, name: str) -> None:
        """Stop that execution, if it still runs. Never raises."""
        ...


class NoExecutor:
    """LONG_JOB_EXECUTOR unset: every start fails, so a long job waits (and, past the delivery
    budget, ends 'Unstartable') rather than running inside a push it does not fit in."""

    def start(self, job_id: UUID, attempt: int) -> str:
        raise StartFailed("no executor configured for long jobs (LONG_JOB_EXECUTOR)")

    def cancel(self, name: str) -> None:
        return None


class LocalExecutor:
    """A child process per execution, in its own session (so a signal for the dev stack's
    process group does not reach it, as a Cloud Run execution outlives a push). Its name is
    `local-<pid>`: the child computes the same name itself, and any process on this machine
    (the sweep, say) can cancel it by that name."""

    def __init__(self, env: dict[str, str] | None = None,
                 output: IO[bytes] | None = None) -> None:
        self._env = env
        self._output = output  # the children's stdout and stderr (tests); else inherited
        self._lock = threading.Lock()
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, job_id: UUID, attempt: int) -> str:
        env = dict(os.environ if self._env is None else self._env)
        try:
            child = subprocess.Popen(
                [sys.executable, *ENTRY, str(job_id), str(attempt)],
                cwd=ROOT, env=env, start_new_session=True, stdout=self._output,
                stderr=None if self._output is None else subprocess.STDOUT,
            )
        except OSError as exc:
            raise StartFailed(f"could not start a child process: {exc}") from exc
        name = f"local-{child.pid}"
        with self._lock:
            self._reap()
            self.children[name] = child
        return name

    def cancel(self, name: str) -> None:
        with self._lock:
            child = self.children.get(name)
        if child is not None:
            if child.poll() is None:
                child.kill()
            return
        pid = name.removeprefix("local-")
        if pid.isdigit():
            with contextlib.suppress(OSError):  # gone already (or never ours)
                os.kill(int(pid), signal.SIGKILL)

    def _reap(self) -> None:
        """Forget children that ended (collecting their exit status)."""
        for name, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[name]


class CloudRunExecutor:
    """An execution of the Cloud Run job CLOUD_RUN_JOB, started with the Admin API's `jobs.run`
    and per-execution arguments (the job id and attempt). The execution's environment is the
    job's own (Terraform gives it the same settings as `process`). Google's auth library is
    imported on the first start, never on a short job's path."""

    def __init__(self, settings: Settings, session: AuthorizedSession | None = None) -> None:
        self.settings = settings
        self._session = session  # tests pass one with fixed credentials
        self._lock = threading.Lock()

    @property
    def job_path(self) -> str:
        s = self.settings
        return (f"projects/{s.google_cloud_project}/locations/{s.cloud_run_region}"
                f"/jobs/{s.cloud_run_job}")

    def _authorized(self) -> AuthorizedSession:
        with self._lock:
            if self._session is None:
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"])
                self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            return self._session

    def start(self, job_id: UUID, attempt: int) -> str:
        url = f"{self.settings.cloud_run_api_endpoint}/v2/{self.job_path}:run"
        body = {"overrides": {"containerOverrides": [
            {"args": [*ENTRY, str(job_id), str(attempt)]}]}}
        try:
            answer = self._authorized().post(url, json=body,
                                             timeout=self.settings.long_job_start_timeout_s)
        except Exception as exc:  # auth, network, timeout: the start did not happen (or the
            # execution, finding its attempt given back, runs nothing: common/store/executions)
            raise StartFailed(f"jobs.run failed: {type(exc).__name__}: {exc}") from exc
        if answer.status_code >= 300:
            raise StartFailed(f"jobs.run answered {answer.status_code}: {answer.text[:300]}")
        try:
            # A long-running operation whose metadata is the Execution (its full name).
            name = str(answer.json()["metadata"]["name"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StartFailed("jobs.run answered without the execution's name") from exc
        return name.rsplit("/", 1)[-1]

    def cancel(self, name: str) -> None:
        url = f"{self.settings.cloud_run_api_endpoint}/v2/{self.job_path}/executions/{name}:cancel"
        try:
            self._authorized().post(url, json={}, timeout=self.settings.long_job_start_timeout_s)
        except Exception:  # best effort: the lease and the attempt fence whatever it writes
            return


def executor_for(settings: Settings) -> Executor:
    if settings.long_job_executor == "local":
        return LocalExecutor()
    if settings.long_job_executor == "cloud-run":
        return CloudRunExecutor(settings)
    return NoExecutor()


CONSOLE = "https://console.cloud.google.com"
# A Cloud Run execution's name is a DNS label (`<job>-<suffix>`); anything else gets no link.
EXECUTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConsoleLinks(NamedTuple):
    logs: str  # the execution's logs in the Logs Explorer
    execution: str  # its page in the Cloud Run console (tasks, state, its own logs tab)


def console_links(settings: Settings, name: str) -> ConsoleLinks | None:
    """Where a person reads an execution in the Google Cloud console (the dashboard links to
    both). None where executions are not Cloud Run's: a local child (`local-<pid>`) has no
    console. The logs query is the one for a Cloud Run job's execution: its resource
    (`cloud_run_job`, with the job's name and region) and the `run.googleapis.com/execution_name`
    label Cloud Run puts on every entry of that execution."""
    s = settings
    if (s.long_job_executor != LongJobExecutor.CLOUD_RUN or not s.cloud_run_job
            or not s.cloud_run_region or not EXECUTION_NAME.match(name)):
        return None
    query = "\n".join([
        'resource.type="cloud_run_job"',
        f'resource.labels.job_name="{s.cloud_run_job}"',
        f'resource.labels.location="{s.cloud_run_region}"',
        f'labels."run.googleapis.com/execution_name"="{name}"',
    ])
    project = quote(s.google_cloud_project, safe="")
    return ConsoleLinks(
        logs=f"{CONSOLE}/logs/query;query={quote(query, safe='')}?project={project}",
        execution=(f"{CONSOLE}/run/jobs/executions/details/{s.cloud_run_region}/{name}"
                   f"?project={project}"),
    )
