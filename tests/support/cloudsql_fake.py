"""A local fake of Cloud SQL, so the real `Connector` runs in tests end to end.

Two parts, as the connector sees them:
- the SQL Admin API (connectSettings, generateEphemeralCert) over plain HTTP, with a CA made here
  that signs the client's ephemeral certificate;
- the instance's server-side endpoint: TLS 1.3 on port 3307 of a loopback address of its own
  (127.0.0.x, since the connector's port is fixed), requiring a client certificate from that CA,
  then piping plain PostgreSQL protocol to a real local server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google.auth.credentials
import google.oauth2.credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PORT = 3307  # fixed in the connector


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeIAMCredentials(google.auth.credentials.Credentials):  # type: ignore[misc]
    """Credentials whose refresh always works, as IAM database login needs a fresh token."""

    def refresh(self, request: Any) -> None:
        self.token = "fake-iam-token"
        self.expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(tzinfo=None)


def fake_credentials() -> google.auth.credentials.Credentials:
    return google.oauth2.credentials.Credentials(token="fake-token")  # type: ignore[no-untyped-call]


class FakeCloudSQL:
    def __init__(
        self,
        pg_host: str,
        pg_port: int,
        *,
        project: str = "test-project",
        region: str = "europe-west1",
        instance: str = "jobs-db",
        ip_type: str = "PRIMARY",
    ) -> None:
        self.pg = (pg_host, pg_port)
        self.region = region
        self.ip_type = ip_type
        self.instance_connection_name = f"{project}:{region}:{instance}"
        self.connections_proxied = 0
        self.access_tokens_seen: list[str] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        now = dt.datetime.now(dt.UTC)
        self._ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._ca = self._sign(_name("fake-cloudsql-ca"), self._ca_key.public_key(), now, ca=True)
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server_cert = self._sign(_name(instance), server_key.public_key(), now, ca=False)
        self._dir = Path(tempfile.mkdtemp(prefix="fake-cloudsql-"))
        (self._dir / "server.pem").write_text(_pem(server_cert))
        (self._dir / "server.key").write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (self._dir / "ca.pem").write_text(_pem(self._ca))

    def _sign(
        self, subject: x509.Name, key: Any, now: dt.datetime, *, ca: bool
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name("fake-cloudsql-ca"))
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )

    # -- SQL Admin API ----------------------------------------------------------------------

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if not re.search(r"/instances/[^/]+/connectSettings$", self.path):
                    return self._send(404, {"error": {"message": "no such route"}})
                self._send(
                    200,
                    {
                        "region": fake.region,
                        "databaseVersion": "POSTGRES_15",
                        "backendType": "SECOND_GEN",
                        "ipAddresses": [{"type": fake.ip_type, "ipAddress": fake.ip_address}],
                        "serverCaCert": {"cert": _pem(fake._ca)},
                    },
                )

            def do_POST(self) -> None:
                if not self.path.endswith(":generateEphemeralCert"):
                    return self._send(404, {"error": {"message": "no such route"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if token := body.get("access_token"):
                    fake.access_tokens_seen.append(token)
                public_key = serialization.load_pem_public_key(body["public_key"].encode())
                cert = fake._sign(_name("client"), public_key, dt.datetime.now(dt.UTC), ca=False)
                self._send(200, {"ephemeralCert": {"cert": _pem(cert)}})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    # -- the instance's TLS endpoint ----------------------------------------------------------

    def _bind_loopback(self) -> socket.socket:
        for _ in range(50):
            address = f"127.0.0.{random.randint(2, 250)}"
            sock = socket.socket()
            try:
                sock.bind((address, PORT))
            except OSError:
                sock.close()
                continue
            sock.listen(64)
            self.ip_address = address
            return sock
        raise RuntimeError("no free 127.0.0.x address with port 3307")

    def _serve_tls(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        listener.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._proxy, raw, context)

    def _proxy(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        try:
            # Small protocol messages each way: without NODELAY, Nagle holds them back.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = context.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(self.pg)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self._lock:
            self.connections_proxied += 1
            self._sockets.update({client, upstream})
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            done.set()

        self._spawn(pump, upstream, client)
        pump(client, upstream)
        done.wait(5)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
            with self._lock:
                self._sockets.discard(s)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeCloudSQL:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._api_handler())
        self.api_endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._spawn(self._http.serve_forever)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self._dir / "server.pem", self._dir / "server.key")
        context.load_verify_locations(self._dir / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED  # only holders of an ephemeral cert get in
        # A peer closing without close_notify is an ordinary end of a tunnel, not an attack.
        context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        self._listener = self._bind_loopback()
        self._spawn(self._serve_tls, self._listener, context)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._listener.close()
        with self._lock:
            for s in list(self._sockets):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeCloudSQL:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
