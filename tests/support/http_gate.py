"""An HTTP gate between Pub/Sub's push and `process`, for outage tests: it passes requests
through, or answers every push itself with a fixed status, as Cloud Run's front does when the
service is down (500/503) or at its maximum instances (429). It counts what it refused, so a
test waits for events (refused pushes), never for a length of time."""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from localstack.postgres import free_port

HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class HttpGate:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._status: int | None = None  # None: pass through
        self._lock = threading.Lock()
        self.refused = 0
        self.passed = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = gate._answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="gate").start()

    def refuse(self, status: int) -> None:
        """Answer every push with `status` from now on."""
        self._status = status

    def open(self) -> None:
        self._status = None

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        status = self._status
        if status is None:
            forward = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            request = urllib.request.Request(
                self.upstream + path, data=body, headers=forward, method="POST"
            )
            try:
                # The test's own http://127.0.0.1 upstream.
                with urllib.request.urlopen(request, timeout=60) as resp:
                    reply = resp.read()
                with self._lock:
                    self.passed += 1
                return int(resp.status), reply
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 500  # nothing listens: the service is down
        with self._lock:
            self.refused += 1
        return status, b""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
