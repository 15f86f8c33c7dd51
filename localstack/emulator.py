"""The official Pub/Sub emulator, started for a test run and stopped by pid.

It ships with the Google Cloud CLI as `cloud-pubsub-emulator` under
platform/pubsub-emulator/bin/ in the SDK root. It is launched directly, in its own process
group: started through `gcloud beta emulators pubsub start`, killing the wrapper would leave the
java child running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from localstack.postgres import free_port

INSTALL_HINT = (
    "the Pub/Sub emulator was not found. Install the Google Cloud CLI and its emulator "
    "(Debian: apt-get install google-cloud-cli-pubsub-emulator; otherwise "
    "`gcloud components install pubsub-emulator`) and Java 11+, or set PUBSUB_EMULATOR_BIN to "
    "the cloud-pubsub-emulator launcher"
)
LAUNCHER = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


class EmulatorUnavailable(RuntimeError):
    pass


def find_emulator_launcher() -> Path:
    """PUBSUB_EMULATOR_BIN, else the SDK root from CLOUDSDK_ROOT_DIR, from where `gcloud`
    really lives, and last from `gcloud info` (slow: about a second)."""
    if explicit := os.environ.get("PUBSUB_EMULATOR_BIN"):
        if Path(explicit).is_file():
            return Path(explicit)
        raise EmulatorUnavailable(f"PUBSUB_EMULATOR_BIN={explicit} does not exist; " + INSTALL_HINT)
    roots = []
    if root := os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(root))
    if gcloud := shutil.which("gcloud"):
        roots.append(Path(gcloud).resolve().parent.parent)
    roots.append(Path("/usr/lib/google-cloud-sdk"))
    for root in roots:
        if (root / LAUNCHER).is_file():
            return root / LAUNCHER
    if gcloud:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
            if out and (Path(out) / LAUNCHER).is_file():
                return Path(out) / LAUNCHER
    raise EmulatorUnavailable(INSTALL_HINT)


class PubSubEmulator:
    def __init__(self, project: str = "test-project", port: int | None = None) -> None:
        self.project = project
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host, "PUBSUB_PROJECT_ID": self.project}

    def start(self) -> PubSubEmulator:
        launcher = find_emulator_launcher()
        if not shutil.which("java"):
            raise EmulatorUnavailable("java not found; " + INSTALL_HINT)
        self._dir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
        log = open(self._dir / "emulator.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(
            [str(launcher), "--host=127.0.0.1", f"--port={self.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self._dir,
        )
        log.close()
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise EmulatorUnavailable(f"the emulator did not start:\n{tail}")
            time.sleep(0.2)

    def log_tail(self, size: int = 3000) -> str:
        path = self._dir / "emulator.log" if self._dir else None
        return path.read_text(errors="replace")[-size:] if path and path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:  # the java child shares the group: make sure it is gone too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
