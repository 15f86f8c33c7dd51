"""A local Cloud SQL: the two Admin API calls the connector makes, plus the instance's TLS endpoint.

The real `google.cloud.sql.connector.Connector` runs unchanged against it and ends up talking to a
plain local PostgreSQL, so tests cover its refresh, mutual-TLS and IAM code paths, not a mock.

Why it is shaped this way:
- The connector accepts `sqladmin_api_endpoint`, so a loopback HTTP server plays the Admin API:
  `connectSettings` (region, IPs, server CA) and `generateEphemeralCert` (signs the client key).
- The connector always dials `<instance IP>:3307` (hard-coded), so each fake listens on its own
  loopback address 127.0.0.x; several fakes can run at once.
- After a TLS 1.3 handshake with certificates on both sides, the drivers speak the plain
  PostgreSQL protocol (pg8000 sends no SSLRequest), so the endpoint only pipes decrypted bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import random
import re
import secrets
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import google.auth.credentials
import google.auth.transport
import google.oauth2.credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

logger = logging.getLogger(__name__)

SERVER_PROXY_PORT = 3307  # fixed in the connector (connector.SERVER_PROXY_PORT)
_BUF = 64 * 1024
_HANDSHAKE_TIMEOUT = 10.0  # bounds a client that connects and then says nothing
_JOIN_TIMEOUT = 5.0  # stop() never waits longer than this for any one stage
_POLL = 0.1  # how often the accept and API loops look at the stop flag
_ROUTE = re.compile(
    r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+)(/connectSettings|:generateEphemeralCert)"
)
_IP_TYPES = {"PRIMARY": "PRIMARY", "PUBLIC": "PRIMARY", "PRIVATE": "PRIVATE"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _zulu(cert: x509.Certificate) -> str:
    return cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")


def _certificate(
    subject: str,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    lifetime: dt.timedelta,
    *,
    issuer: x509.Certificate | None = None,
    ip: str | None = None,
) -> x509.Certificate:
    """A self-signed CA when `issuer` is None, else a leaf signed by it. Key identifiers and key
    usage are set so the chain also passes OpenSSL's strict X.509 checks."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate clock skew, like Google
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is None:
        unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
        usage = x509.KeyUsage(
            digital_signature=True,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
            **dict.fromkeys(unused, False),
        )
        builder = builder.add_extension(usage, critical=True)
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    if ip:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _bind_loopback(port: int, attempts: int = 50) -> tuple[socket.socket, str]:
    """Listen on a random 127.0.0.x: the port is fixed, so the address is what keeps fakes apart.
    Linux routes all of 127/8 to loopback; elsewhere only 127.0.0.1 may exist."""
    for _ in range(attempts):
        ip = f"127.0.0.{random.randint(2, 250)}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR only skips TIME_WAIT leftovers; Linux still refuses a second listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
            sock.listen(128)
        except OSError:
            sock.close()
            continue
        sock.settimeout(_POLL)
        return sock, ip
    raise RuntimeError(f"no free 127.0.0.x address for port {port} (is 127.0.0.0/8 routed?)")


def _error(code: int, status: str, message: str) -> tuple[int, dict[str, Any]]:
    """Google's JSON error shape; the connector copies `error.message` into its exception."""
    return code, {"error": {"code": code, "status": status, "message": message}}


# PostgreSQL's SSLRequest: length 8, code 80877103.
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


class _Tunnel:
    """One accepted client. TLS runs over memory BIOs, so each direction is pumped by its own
    plain blocking thread (no busy loops, true half-close), while `_tls_lock` serialises the
    SSLObject calls, which never block and which OpenSSL forbids from two threads at once (an
    SSLSocket shared by a reader and a writer thread would break that rule).
    `_send_lock` keeps TLS records in wire order when both threads flush."""

    def __init__(
        self, raw: socket.socket, context: ssl.SSLContext,
        on_ssl_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.raw = raw
        self._on_ssl_request = on_ssl_request
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else Nagle adds ~40 ms
        self.pg: socket.socket | None = None
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._tls_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._aborted = False
        self.ssl_request: bool | None = None  # did the client open with an SSLRequest?

    def _flush(self) -> None:
        with self._send_lock:
            with self._tls_lock:
                data = self._outgoing.read()
            if data:
                self.raw.sendall(data)

    def handshake(self) -> None:
        """Server side of TLS 1.3; a bad or missing client certificate fails here."""
        self.raw.settimeout(_HANDSHAKE_TIMEOUT)
        while True:
            try:
                with self._tls_lock:
                    self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(_BUF)
                if not data:
                    raise ConnectionAbortedError("client left during the TLS handshake") from None
                self._incoming.write(data)
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # the alert tells the client why
                raise
        self._flush()  # session tickets
        self.raw.settimeout(None)  # pooled connections may idle for as long as they like

    def attach(self, pg: socket.socket) -> None:
        pg.settimeout(None)
        pg.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pg = pg
        if self._aborted:  # stop() ran while we were dialling
            self.abort()

    def client_to_pg(self) -> None:
        """Decrypt and forward. When the client stops sending (close_notify, FIN or reset) only
        PostgreSQL's read side is shut, so an answer still in flight reaches the client."""
        assert self.pg is not None
        try:
            ended = False
            while not ended:
                data = self.raw.recv(_BUF)
                ended = not data
                plain = bytearray()
                with self._tls_lock:
                    if data:
                        self._incoming.write(data)
                    else:
                        self._incoming.write_eof()
                    while True:
                        try:
                            chunk = self._tls.read(_BUF)
                        except ssl.SSLWantReadError:
                            break
                        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                            chunk = b""
                        if not chunk:
                            ended = True
                            break
                        plain += chunk
                self._flush()  # e.g. the answer to a TLS 1.3 KeyUpdate
                if plain:
                    if self.ssl_request is None:
                        self.ssl_request = bytes(plain[:8]) == _SSL_REQUEST
                        if self.ssl_request:
                            self._on_ssl_request()
                    self.pg.sendall(plain)
        except OSError:  # resets, TLS errors (ssl.SSLError is an OSError), abort()
            pass
        finally:
            with contextlib.suppress(OSError):
                self.pg.shutdown(socket.SHUT_WR)

    def pg_to_client(self) -> None:
        """Encrypt and forward. PostgreSQL never half-closes, so its EOF ends the tunnel; the
        client gets close_notify first so it sees a clean end of stream."""
        assert self.pg is not None
        with contextlib.suppress(OSError):
            while data := self.pg.recv(_BUF):
                with self._tls_lock:
                    self._tls.write(data)  # a memory BIO takes all of it
                self._flush()
            with self._tls_lock, contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()  # queues close_notify; raises WantRead as it awaits the peer's
            self._flush()

    def abort(self) -> None:
        """Wake both pumps: shutdown() interrupts a recv/send blocked in another thread, whereas
        close() would not (and would free the descriptor while it is still in use)."""
        self._aborted = True
        for sock in (self.raw, self.pg):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in (self.raw, self.pg):
            if sock is not None:
                sock.close()


class _ApiServer(HTTPServer):
    """Single-threaded on purpose: a refresh is two short requests. It is driven by a
    handle_request() poll loop, because shutdown() blocks forever if serve_forever never ran."""

    timeout = _POLL

    def __init__(self, fake: FakeCloudSQL) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _ApiHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.socket.getsockname()[1])


class _ApiHandler(BaseHTTPRequestHandler):
    server: _ApiServer
    timeout = 5  # a client that stalls mid-request cannot wedge the single-threaded server

    def do_GET(self) -> None:
        self._reply("GET")

    def do_POST(self) -> None:
        self._reply("POST")

    def _reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        path = urlsplit(self.path).path
        status, payload = self.server.fake.handle_api(method, path, auth, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake Cloud SQL Admin API: " + format, *args)


class FakeCloudSQL:
    """One fake Cloud SQL instance in front of the PostgreSQL at `pg_host:pg_port`."""

    def __init__(
        self,
        pg_host: str,
        pg_port: int,
        *,
        project: str = "test-project",
        region: str = "europe-west1",
        instance: str = "jobs-db",
        ip_type: str = "PRIMARY",
        database_version: str = "POSTGRES_15",
        cert_lifetime: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        """`ip_type` is the one address type advertised ("PUBLIC" is taken as "PRIMARY", the
        API's name for it). `cert_lifetime` is Google's hour by default; under 4 minutes makes
        the lazy connector fetch a new certificate on every connect."""
        if ip_type.upper() not in _IP_TYPES:
            raise ValueError(f"ip_type must be PRIMARY/PUBLIC or PRIVATE, not {ip_type!r}")
        self.pg_address = (pg_host, pg_port)
        self.project, self.region, self.instance = project, region, instance
        self.ip_type = _IP_TYPES[ip_type.upper()]
        self.database_version = database_version
        self.cert_lifetime = cert_lifetime
        self.instance_connection_name = f"{project}:{region}:{instance}"
        self.api_endpoint = ""
        self.ip_address = ""
        self.connections_proxied = 0  # TLS handshakes done and PostgreSQL dialled
        self.ssl_requests = 0  # tunnels whose client asked for TLS again inside the TLS
        self.certs_issued = 0
        self.access_tokens_seen: list[str] = []  # IAM login tokens sent to generateEphemeralCert
        self.errors: list[str] = []  # failed handshakes/dials, for debugging a test
        self._ca_key = ec.generate_private_key(ec.SECP256R1())  # EC: instant, unlike RSA
        self._ca = _certificate(
            f"fake Cloud SQL server CA for {instance}",
            self._ca_key.public_key(),
            self._ca_key,
            dt.timedelta(days=30),
        )
        self.ca_pem = _pem(self._ca)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._tunnels: set[_Tunnel] = set()
        self._main_threads: list[threading.Thread] = []
        self._httpd: _ApiServer | None = None
        self._listener: socket.socket | None = None
        self._context: ssl.SSLContext | None = None

    @property
    def active_connections(self) -> int:
        """Tunnels still open (handshaking or piping)."""
        with self._lock:
            return len(self._tunnels)

    def start(self) -> FakeCloudSQL:
        if self._main_threads or self._stopping.is_set():
            raise RuntimeError("a FakeCloudSQL starts once")
        try:
            self._listener, self.ip_address = _bind_loopback(SERVER_PROXY_PORT)
            self._context = self._server_context()
            self._httpd = _ApiServer(self)
            self.api_endpoint = f"http://127.0.0.1:{self._httpd.server_port}"
            self._main_threads = [
                self._spawn(self._api_loop, "api"),
                self._spawn(self._accept_loop, "accept"),
            ]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent and bounded: open tunnels are cut, and every wait has a timeout, so a
        wedged peer cannot hang a test's teardown."""
        self._stopping.set()
        for thread in self._main_threads:
            thread.join(_JOIN_TIMEOUT)
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            tunnels, threads = list(self._tunnels), list(self._threads)
        for tunnel in tunnels:
            tunnel.abort()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeCloudSQL:
        return self if self._main_threads else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- Admin API -------------------------------------------------------------------------

    def handle_api(
        self, method: str, path: str, authorization: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """The Admin API calls the connector makes, answered as Cloud SQL answers them."""
        route = _ROUTE.fullmatch(path)
        if route is None:
            return _error(404, "NOT_FOUND", f"the fake has no route {path}")
        token = authorization.removeprefix("Bearer ").strip()
        if not authorization.startswith("Bearer ") or token in ("", "None"):
            return _error(401, "UNAUTHENTICATED", "request had no valid bearer token")
        project, instance, action = route.groups()
        if (project, instance) != (self.project, self.instance):
            return _error(404, "NOT_FOUND", f"The Cloud SQL instance {instance} does not exist.")
        if method != ("GET" if action == "/connectSettings" else "POST"):
            return _error(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {path}")
        if action == "/connectSettings":
            return 200, self._connect_settings()
        return self._ephemeral_cert(body)

    def _connect_settings(self) -> dict[str, Any]:
        """Every field client.py reads (region, databaseVersion, ipAddresses, serverCaCert,
        pscEnabled) plus the usual companions, so the shape matches the real response."""
        return {
            "kind": "sql#connectSettings",
            "serverCaCert": {
                "kind": "sql#sslCert",
                "cert": self.ca_pem,
                "commonName": self._ca.subject.rfc4514_string(),
                "instance": self.instance,
                "expirationTime": _zulu(self._ca),
            },
            "ipAddresses": [{"type": self.ip_type, "ipAddress": self.ip_address}],
            "region": self.region,
            "databaseVersion": self.database_version,
            "backendType": "SECOND_GEN",
            "pscEnabled": False,
            "serverCaMode": "GOOGLE_MANAGED_INTERNAL_CA",
        }

    def _ephemeral_cert(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Sign the client's public key with the instance CA, which the TLS endpoint trusts."""
        try:
            request = json.loads(body)
            key = serialization.load_pem_public_key(request["public_key"].encode())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"bad public_key: {exc}")
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return _error(400, "INVALID_ARGUMENT", "public_key must be RSA or EC")
        access_token = request.get("access_token")
        with self._lock:
            if isinstance(access_token, str) and access_token:
                self.access_tokens_seen.append(access_token)
            self.certs_issued += 1
        cn = "fake-cloudsql-ephemeral"
        cert = _certificate(cn, key, self._ca_key, self.cert_lifetime, issuer=self._ca)
        return 200, {
            "ephemeralCert": {
                "kind": "sql#sslCert",
                "cert": _pem(cert),
                "commonName": cn,
                "expirationTime": _zulu(cert),
            }
        }

    # --- threads ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., object], name: str, *args: object) -> threading.Thread:
        """Daemon threads (a bug must not block interpreter exit), tracked until they return."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"fake-cloudsql-{name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _server_context(self) -> ssl.SSLContext:
        """TLS 1.3 only, client certificate required and checked against the instance CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            f"{self.project}:{self.instance}",
            key.public_key(),
            self._ca_key,
            dt.timedelta(days=30),
            issuer=self._ca,
            ip=self.ip_address,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        # OpenSSL 3 answers a FIN without close_notify with a fatal decode_error alert, which
        # would kill a half-closed tunnel; treat it as close_notify, so writing may go on.
        context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        context.load_verify_locations(cadata=self.ca_pem)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain only reads files
            path = Path(tmp) / "server.pem"
            path.write_text(key_pem + _pem(cert))
            context.load_cert_chain(path)
        return context

    def _api_loop(self) -> None:
        assert self._httpd is not None
        httpd = self._httpd
        while not self._stopping.is_set():
            httpd.handle_request()

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._context is not None
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            tunnel = _Tunnel(raw, self._context, self._count_ssl_request)
            with self._lock:
                self._tunnels.add(tunnel)
            self._spawn(self._serve, "tunnel", tunnel)

    def _count_ssl_request(self) -> None:
        with self._lock:
            self.ssl_requests += 1

    def _serve(self, tunnel: _Tunnel) -> None:
        """Handshake, dial PostgreSQL, then pump both ways (one direction in a second thread)."""
        pump: threading.Thread | None = None
        try:
            tunnel.handshake()
            tunnel.attach(socket.create_connection(self.pg_address, timeout=_HANDSHAKE_TIMEOUT))
            with self._lock:
                self.connections_proxied += 1
            pump = self._spawn(tunnel.client_to_pg, "pump")
            tunnel.pg_to_client()
        except OSError as exc:  # includes ssl.SSLError and timeouts
            if not self._stopping.is_set():
                logger.debug("fake Cloud SQL tunnel failed: %r", exc)
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            tunnel.abort()
            if pump is not None:
                pump.join(_JOIN_TIMEOUT)
            tunnel.close()
            with self._lock:
                self._tunnels.discard(tunnel)


def fake_credentials() -> google.auth.credentials.Credentials:
    """User-style OAuth credentials with a fixed token and no expiry, so the connector never
    tries to refresh them (it could not: there is no refresh token). Enough for password auth."""
    return google.oauth2.credentials.Credentials(token="fake")  # type: ignore[no-untyped-call]


class FakeIAMCredentials(google.auth.credentials.Credentials):
    """Credentials whose refresh() mints a random token valid for `lifetime`.

    IAM auth needs a refresh: the connector copies the credentials, swaps in the login scope and
    refreshes the copy, then sends that token to generateEphemeralCert and caps the cert's
    lifetime at the token's expiry. The copy is shallow, so `tokens_issued` is shared and a test
    can match it against `FakeCloudSQL.access_tokens_seen`."""

    def __init__(self, lifetime: dt.timedelta = dt.timedelta(hours=1)) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.lifetime = lifetime
        self.tokens_issued: list[str] = []

    def refresh(self, request: google.auth.transport.Request) -> None:
        self.token = f"fake-iam-{secrets.token_hex(8)}"
        # google-auth keeps expiry as naive UTC (and the connector re-attaches the tzinfo).
        self.expiry = _now().replace(tzinfo=None) + self.lifetime
        self.tokens_issued.append(self.token)
