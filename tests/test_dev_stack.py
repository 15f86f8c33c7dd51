"""`make dev` end to end: the same code path on free ports, its data in a private (0700) folder
as `mktemp -d` makes, driven over HTTP with real tokens and through the CLI with no exports
(it finds the stack through the client file); SIGTERM leaves nothing running, and the embedded
database survives a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from common.api.auth import issue_dev_token
from localstack import dev_client
from localstack.paths import ROOT
from localstack.postgres import cluster_home, free_port
from tests.support.console_blocks import UUID, console_blocks, in_terminal, mismatch, screen


class DevProcess:
    """`python -m localstack.dev` with its output drained (and kept) by a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in ("submit", "process", "sweep", "emulator",
                                                      "pg")}
        env = {**os.environ, "DEV_DATA_DIR": str(data_dir), "SWEEP_EVERY_S": "1"}
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localstack.dev",
             "--submit-port", str(self.ports["submit"]),
             "--process-port", str(self.ports["process"]),
             "--sweep-port", str(self.ports["sweep"]),
             "--emulator-port", str(self.ports["emulator"]),
             "--pg-port", str(self.ports["pg"])],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(180):
            self.proc.kill()
            raise AssertionError("make dev did not get ready:\n" + "\n".join(self.lines[-40:]))
        client = dev_client.read(data_dir / dev_client.FILE_NAME)
        assert client is not None
        self.token = issue_dev_token(client.secret, "dev")
        self.pids = [int(p) for p in self._value("pids ").split()]
        self.url = f"http://127.0.0.1:{self.ports['submit']}"

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line == "ready":
                self._ready.set()

    def _value(self, prefix: str) -> str:
        return next(line.strip()[len(prefix):] for line in self.lines
                    if line.strip().startswith(prefix))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """No exports: only DEV_DATA_DIR, since this stack's folder is not .local/."""
        unset = ("JOBS_API_URL", "JOBS_TOKEN", "JOBS_SWEEP_URL", "JOBS_SWEEP_TOKEN",
                 "AUTH_HS256_SECRET", "JOBS_USER")
        env = {**{k: v for k, v in os.environ.items() if k not in unset},
               "DEV_DATA_DIR": str(self.data_dir)}
        return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_done(dev: DevProcess, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status, job = dev.call("GET", f"/jobs/{job_id}")
        assert status == 200, job
        if job["state"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _dashboard_signs_in(dev: DevProcess) -> None:
    """The printed dashboard link signs a browser in as 'dev' and shows its queue."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import start_chromium

    link = dev._value("dashboard ")
    assert link.startswith(f"{dev.url}/ui/#token=")
    driver = start_chromium()
    try:
        driver.get(link)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const c = document.querySelector('.count[data-state=COMPLETED]');"
            "return c && c.textContent === '4'"))
        # moved to sessionStorage, off the URL
        assert link.split("#token=", 1)[1] not in driver.current_url
    finally:
        driver.quit()


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """Private, as `mktemp -d` makes it: as root, the server's user cannot even enter it."""
    path = Path(tempfile.mkdtemp(prefix="jobs-dev-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    import shutil

    shutil.rmtree(cluster_home(path / "postgres"), ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def test_make_dev_runs_the_pipeline_and_stops_cleanly(data_dir: Path) -> None:
    dev = DevProcess(data_dir)
    home = cluster_home(data_dir / "postgres")
    try:
        assert (data_dir / dev_client.FILE_NAME).stat().st_mode & 0o777 == 0o600
        assert any(line.endswith(f"data in {home}") for line in dev.lines)
        if os.geteuid() == 0:  # the server's user owns its data, outside the private tree
            assert data_dir not in home.parents and home.stat().st_uid != 0
        # The signing secret is never printed; the one token printed is the dashboard's sign-in
        # link, in the URL fragment (never sent to a server), for this terminal's user.
        secret = json.loads((data_dir / dev_client.FILE_NAME).read_text())["secret"]
        assert not any(secret in line or "AUTH_HS256_SECRET=" in line for line in dev.lines)
        assert [line for line in dev.lines if "#token=" in line] == [
            line for line in dev.lines if "dashboard http" in line]
        ids = []
        for preset, content in (("echo", "hi"), ("text-stats", "One. Two."), ("checksum", "x")):
            status, job = dev.call("POST", "/jobs", {"preset": preset, "content": content})
            assert status == 202, job
            ids.append(job["id"])
        for job_id in ids:
            assert _wait_done(dev, job_id)["state"] == "COMPLETED"

        done = dev.cli("submit", "--preset", "text-stats", "--content", "Hello there.", "--wait")
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["state"] == "COMPLETED" and job["result"]["output"]["words"] == 2
        progress = [line.split()[2:] for line in done.stderr.splitlines()]
        assert progress == [["PENDING", "created"], ["PROCESSING", "claimed,", "attempt", "1"],
                            ["COMPLETED", "completed,", "attempt", "1"]], done.stderr
        listed = json.loads(dev.cli("list", "--state", "COMPLETED").stdout)
        assert len(listed["jobs"]) == 4
        events = json.loads(dev.cli("events", job["id"]).stdout)["events"]
        assert [e["reason"] for e in events] == ["created", "claimed", "completed"]
        stats = json.loads(dev.cli("stats").stdout)
        assert stats["depth"]["COMPLETED"] == 4 and stats["finished_last_5_min"] == 4
        refused = dev.cli("cancel", job["id"])
        assert refused.returncode == 1 and refused.stderr.startswith("error: ")
        missing = dev.cli("get", "00000000-0000-4000-8000-000000000000")
        assert missing.returncode == 1 and "Job not found" in missing.stderr
        sweep = dev.cli("sweep")
        assert sweep.returncode == 0 and json.loads(sweep.stdout)["ok"] is True
        other = dev.cli("token", "bob")
        assert other.returncode == 0 and other.stdout.count(".") == 2
        # The scheduler's pass may still be running (the CLI's overlapping one was skipped).
        deadline = time.monotonic() + 30
        while not any(line.startswith("schedule| sweep:") for line in dev.lines):
            assert time.monotonic() < deadline, "the scheduler never reported a pass"
            time.sleep(0.1)
        _dashboard_signs_in(dev)
        assert any(line.startswith("process | ") for line in dev.lines)
    finally:
        code = dev.terminate()
    assert code == 0, "\n".join(dev.lines[-30:])
    assert dev.lines[-1].endswith("stopped")
    time.sleep(0.5)
    assert [pid for pid in dev.pids if _alive(pid)] == []
    assert (home / "data" / "PG_VERSION").exists()
    assert not (home / "data" / "postmaster.pid").exists()

    # The embedded database survives a restart.
    again = DevProcess(data_dir)
    try:
        status, job = again.call("GET", f"/jobs/{ids[0]}")
        assert status == 200 and job["state"] == "COMPLETED"
    finally:
        assert again.terminate() == 0
    assert [pid for pid in again.pids if _alive(pid)] == []


@pytest.fixture(scope="module")
def running_dev() -> Iterator[DevProcess]:
    """One `make dev` for the tests below that only add jobs of their own."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="jobs-dev-"))
    dev = DevProcess(path)
    try:
        yield dev
    finally:
        code = dev.terminate()
        shutil.rmtree(cluster_home(path / "postgres"), ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        assert code == 0, "\n".join(dev.lines[-30:])


def _events(dev: DevProcess, job_id: str) -> dict[str, datetime]:
    """When each of the job's events happened, by reason (as the database recorded them)."""
    status, trail = dev.call("GET", f"/jobs/{job_id}/events")
    assert status == 200, trail
    return {e["reason"]: datetime.fromisoformat(e["at"]) for e in trail["events"]}


def test_make_dev_pushes_several_jobs_into_process_at_once(running_dev: DevProcess) -> None:
    """Four slow demo jobs run at once (the emulator's own push ran two), and a quick job sent
    after them is done before any of them: counted from the jobs' own trails, not timed."""
    dev = running_dev
    assert any("8 pushes at once" in line for line in dev.lines)
    slow = []
    for _ in range(4):
        status, job = dev.call("POST", "/jobs", {"preset": "demo", "content": "4"})
        assert status == 202, job
        slow.append(job["id"])
    status, quick = dev.call("POST", "/jobs", {"preset": "echo", "content": "quick"})
    assert status == 202, quick
    for job_id in [*slow, quick["id"]]:
        assert _wait_done(dev, job_id)["state"] == "COMPLETED"
    trails = [_events(dev, job_id) for job_id in slow]
    last_claim = max(t["claimed"] for t in trails)
    first_end = min(t["completed"] for t in trails)
    assert last_claim < first_end, trails  # all four were PROCESSING together
    assert _events(dev, quick["id"])["completed"] < first_end


DOCS = [path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if console_blocks(path)]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_the_docs_console_examples_show_what_they_say(running_dev: DevProcess, path: Path) -> None:
    """Every ```console block of README and docs/ (tests/support/console_blocks.py says how),
    run in a terminal against `make dev`, shows what the docs show. A file's blocks are one
    session, in order, as a reader follows them, by a user of its own."""
    dev = running_dev
    user = f"docs-{uuid.uuid4().hex[:8]}"
    unset = ("JOBS_API_URL", "JOBS_TOKEN", "JOBS_SWEEP_URL", "JOBS_SWEEP_TOKEN",
             "AUTH_HS256_SECRET")
    env = {**{k: v for k, v in os.environ.items() if k not in unset},
           "DEV_DATA_DIR": str(dev.data_dir), "JOBS_USER": user, "NO_COLOR": "1"}
    last_id = None
    for step in [step for block in console_blocks(path) for step in block]:
        command = (step.command.replace("python main.py", f"{sys.executable} main.py")
                   .replace("http://127.0.0.1:8080", dev.url)
                   .replace("token dev", f"token {user}")
                   .replace("hs256:dev", f"hs256:{user}"))
        if last_id is not None:
            command = UUID.sub(last_id, command)
        shown = screen(in_terminal(command, env, ROOT))
        expected = [line.replace("hs256:dev", f"hs256:{user}") for line in step.expected]
        problem = mismatch(expected, shown)
        assert problem is None, f"{path.name}: $ {step.command}\n{problem}\nshown:\n" + "\n".join(
            shown)
        if ids := UUID.findall("\n".join(shown)):
            last_id = ids[0]
