"""functions-framework servers as real processes, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localstack.postgres import free_port


class FunctionServer:
    """`functions-framework --target T --source S` as a real server process, in its own process
    group. Its output goes to a file (a pipe nobody reads would fill up and stall it)."""

    def __init__(
        self,
        target: str,
        source: Path,
        env: dict[str, str],
        probe: str = "/",
        port: int | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """`on_line`, if given, receives each line the server prints (make dev shows them);
        otherwise they go to `log_path`."""
        self.target, self.source, self.env, self.probe = target, source, env, probe
        self.on_line = on_line
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, name = tempfile.mkstemp(prefix=f"ff-{target}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            out: Any = subprocess.PIPE if self.on_line else log_file
            self._proc = subprocess.Popen(
                [
                    sys.executable, "-m", "functions_framework",
                    "--target", self.target, "--source", str(self.source),
                    "--host", "127.0.0.1", "--port", str(self.port),
                ],
                cwd=self.source.parent,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.on_line and self._proc.stdout is not None:
            threading.Thread(
                target=self._relay, args=(self._proc.stdout, self.on_line), daemon=True
            ).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                # Our own http://127.0.0.1 URL.
                urllib.request.urlopen(self.url + self.probe, timeout=2).read()  # noqa: S310
                return
            except urllib.error.HTTPError:
                return  # it answers: up
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.target} did not start: {self.log_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    @staticmethod
    def _relay(stream: Any, on_line: Callable[[str], None]) -> None:
        for raw in iter(stream.readline, b""):
            on_line(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9, as an instance that dies mid-job."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
