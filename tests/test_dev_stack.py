"""`make dev` end to end: the same code path on free ports, driven over HTTP with real tokens
and through the CLI; SIGTERM leaves nothing running, and the embedded database survives a
restart."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localstack.paths import ROOT
from localstack.postgres import free_port


class DevProcess:
    """`python -m localstack.dev` with its output drained (and kept) by a thread."""

    def __init__(self, data_dir: Path) -> None:
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
        self.token = self._value("export JOBS_TOKEN=")
        self.secret = self._value("export AUTH_HS256_SECRET=")
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
        env = {**os.environ, "JOBS_API_URL": self.url, "JOBS_TOKEN": self.token,
               "JOBS_SWEEP_URL": f"http://127.0.0.1:{self.ports['sweep']}",
               "AUTH_HS256_SECRET": self.secret}
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
    assert link == f"{dev.url}/ui/#token={dev.token}"
    driver = start_chromium()
    try:
        driver.get(link)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const c = document.querySelector('.count[data-state=COMPLETED]');"
            "return c && c.textContent === '4'"))
        assert dev.token not in driver.current_url  # moved to sessionStorage, off the URL
    finally:
        driver.quit()


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jobs-dev-"))
    path.chmod(0o755)  # the embedded server may run as an unprivileged user
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_make_dev_runs_the_pipeline_and_stops_cleanly(data_dir: Path) -> None:
    dev = DevProcess(data_dir)
    try:
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
        assert "COMPLETED" in done.stderr  # the progress display
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
        assert any(line.startswith("schedule| sweep:") for line in dev.lines)
        _dashboard_signs_in(dev)
        assert any(line.startswith("process | ") for line in dev.lines)
    finally:
        code = dev.terminate()
    assert code == 0, "\n".join(dev.lines[-30:])
    assert dev.lines[-1].endswith("stopped")
    time.sleep(0.5)
    assert [pid for pid in dev.pids if _alive(pid)] == []
    assert not (data_dir / "postgres" / "data" / "postmaster.pid").exists()

    # The embedded database survives a restart.
    again = DevProcess(data_dir)
    try:
        status, job = again.call("GET", f"/jobs/{ids[0]}")
        assert status == 200 and job["state"] == "COMPLETED"
    finally:
        assert again.terminate() == 0
    assert [pid for pid in again.pids if _alive(pid)] == []
