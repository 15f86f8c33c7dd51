"""Peers that answer slowly or never, on real loopback sockets, for the webhook deadline and
isolation tests:

- `DripReceiver`: an HTTP receiver that reads the whole request, then answers one byte at a
  time, forever (a status line, then an endless header), until the caller hangs up;
- `BlackHole`: accepts connections and never sends a byte (a DNS server that never answers,
  a receiver that never answers), counting how many are open at once;
- `Lookups`: a stand-in for `socket.getaddrinfo` (the system resolver) that answers chosen
  names with chosen addresses, blocks names under a "never answers" suffix on a real read from
  a `BlackHole` (as the system resolver blocks on an unanswered UDP query, for up to about
  10 s), and hands every other name to the real resolver.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any


class _Server:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self._conns.append(conn)
            threading.Thread(target=self._serve_and_count, args=(conn,), daemon=True).start()

    def _serve_and_count(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self.open -= 1
            conn.close()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class BlackHole(_Server):
    """Never answers; a connection ends when the peer hangs up or the hole is stopped."""

    def serve(self, conn: socket.socket) -> None:
        while conn.recv(4096):
            pass


class DripReceiver(_Server):
    """Reads the request, then drips `HTTP/1.1 200 OK` and an endless header, one byte each
    `interval_s`. `cut` counts requests whose caller hung up during the drip."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.requests = 0
        self.cut = 0
        self.dripped = threading.Event()  # set once a request is being dripped
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/jobs"

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        with self._lock:
            self.requests += 1
        self.dripped.set()
        answer = b"HTTP/1.1 200 OK\r\nX-Drip: "
        i = 0
        try:
            while not self._stopped.is_set():
                conn.sendall(answer[i:i + 1] if i < len(answer) else b"a")
                i += 1
                if self._stopped.wait(self.interval_s):
                    return
        except OSError:
            with self._lock:
                self.cut += 1


class Lookups:
    """A stand-in for socket.getaddrinfo (install it with monkeypatch)."""

    def __init__(self, hole: BlackHole, *, never_suffix: str = ".never.example",
                 wait_s: float = 10.0) -> None:
        self.hole = hole
        self.never_suffix = never_suffix
        self.wait_s = wait_s
        self.answers: dict[str, list[str]] = {}
        self.real: Callable[..., Any] = socket.getaddrinfo
        self.asked: list[str] = []

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0,
                 proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        if name.endswith(self.never_suffix):
            with socket.create_connection(("127.0.0.1", self.hole.port), timeout=5) as sock:
                sock.settimeout(self.wait_s)
                with contextlib.suppress(OSError):
                    sock.recv(1)  # nobody answers
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name in self.answers:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port or 0), 0, 0) if ":" in a else (a, int(port or 0)))
                for a in self.answers[name]
            ]
        return list(self.real(host, port, family, type, proto, flags))


class TlsReceiver:
    """A real HTTPS receiver on loopback with a certificate for `localhost` signed by a CA made
    here; `client_context()` trusts that CA (and nothing else). With `stall_handshake`, it
    accepts TCP and never answers the TLS ClientHello."""

    def __init__(self, *, stall_handshake: bool = False) -> None:
        import datetime as dt
        import ssl
        import tempfile
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test webhook CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(days=1))
              .not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self._dir = tempfile.TemporaryDirectory()
        cert_path, key_path = f"{self._dir.name}/cert.pem", f"{self._dir.name}/key.pem"
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._hole: BlackHole | None = None
        self._server: ThreadingHTTPServer | None = None
        if stall_handshake:
            self._hole = BlackHole()
            self.port = self._hole.port
            return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_path, key_path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = server_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/hooks/jobs"

    @property
    def hole(self) -> BlackHole:
        assert self._hole is not None
        return self._hole

    def client_context(self) -> Any:
        import ssl

        context = ssl.create_default_context(cadata=self.ca_pem)
        return context

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._hole is not None:
            self._hole.stop()
        self._dir.cleanup()
