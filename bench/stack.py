"""Pieces of the local stack that benchmarks start and stop: functions-framework servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.postgres import free_port


class FunctionServer:
    """`functions-framework --target T --source S` as a real server process."""

    def __init__(self, target: str, source: Path, env: dict[str, str], probe: str = "/") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                target,
                "--source",
                str(source),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=source.parent,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + probe, timeout=2).read()  # noqa: S310
                return
            except urllib.error.HTTPError:
                return  # it answers: up
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"{target} did not start: {err[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
