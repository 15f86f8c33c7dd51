"""A real webhook receiver for tests: an HTTP server on loopback that verifies every request
with the Standard Webhooks reference verifier (the `standardwebhooks` package) and answers the
statuses a test plans (then 200)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed payload, or None
    error: str | None
    answered: int


@dataclass
class Receiver:
    port: int
    secret: str | None = None
    plan: list[int] = field(default_factory=list)  # statuses to answer first, in order
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/jobs"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = None, None
                try:
                    verified = Webhook(receiver.secret or "whsec_").verify(body, headers)
                except (WebhookVerificationError, Exception) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                with receiver._cond:
                    status = receiver.plan.pop(0) if receiver.plan else 200
                    receiver.received.append(Received(headers, body, verified, error, status))
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, answered: int, count: int = 1, timeout_s: float = 30) -> list[Received]:
        """Wait until `count` requests were answered with `answered`; all requests so far."""
        with self._cond:
            self._cond.wait_for(
                lambda: sum(r.answered == answered for r in self.received) >= count, timeout_s
            )
            return list(self.received)
