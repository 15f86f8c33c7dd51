"""The fake Cloud SQL works with the real connector: password auth, IAM auth, private IP, a burst
of concurrent connections, clients that half-close or vanish, junk on the port, and a stop() that
cuts open tunnels without hanging or leaving threads behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pg8000.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.cloud.sql.connector import Connector
from google.cloud.sql.connector.exceptions import CloudSQLIPTypeError

from localstack.postgres import PostgresServer, start_postgres
from tests.support.fake_cloudsql import (
    SERVER_PROXY_PORT,
    FakeCloudSQL,
    FakeIAMCredentials,
    fake_credentials,
)
from tests.support.polling import wait_until


@pytest.fixture()
def fake(pg_server: PostgresServer) -> Iterator[FakeCloudSQL]:
    with FakeCloudSQL(pg_server.host, pg_server.port) as instance:
        yield instance


@pytest.fixture(scope="module")
def trust_pg(pg_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server the raw protocol client below can log into: it speaks trust auth only. The
    session's server is used unless TEST_DATABASE_URL named one that wants a password."""
    if not pg_server.password:
        yield pg_server
        return
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture()
def trust_fake(trust_pg: PostgresServer) -> Iterator[FakeCloudSQL]:
    with FakeCloudSQL(trust_pg.host, trust_pg.port) as instance:
        yield instance


def _connector(fake: FakeCloudSQL, **kwargs: Any) -> Connector:
    kwargs.setdefault("credentials", fake_credentials())
    kwargs.setdefault("ip_type", "PUBLIC")
    return Connector(refresh_strategy="lazy", sqladmin_api_endpoint=fake.api_endpoint, **kwargs)


def _connect(connector: Connector, fake: FakeCloudSQL, pg: PostgresServer) -> Any:
    return connector.connect(
        fake.instance_connection_name,
        "pg8000",
        user=pg.user,
        password=pg.password or "x",  # trust auth ignores it
        db="postgres",
    )


def _query(connector: Connector, fake: FakeCloudSQL, pg: PostgresServer, sql: str) -> Any:
    conn = _connect(connector, fake, pg)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return tuple(cur.fetchone())
    finally:
        conn.close()


def test_password_auth(fake: FakeCloudSQL, pg_server: PostgresServer) -> None:
    with _connector(fake) as connector:
        assert _query(connector, fake, pg_server, "SELECT 1") == (1,)
        assert _query(connector, fake, pg_server, "SELECT 2") == (2,)
    assert fake.connections_proxied >= 2
    assert fake.certs_issued == 1  # the lazy strategy reused the hour-long certificate
    assert fake.access_tokens_seen == []
    assert fake.errors == []


def test_iam_auth_sends_login_token(fake: FakeCloudSQL, pg_server: PostgresServer) -> None:
    creds = FakeIAMCredentials()
    with _connector(fake, credentials=creds, enable_iam_auth=True) as connector:
        assert _query(connector, fake, pg_server, "SELECT 1") == (1,)
    assert fake.access_tokens_seen
    assert set(fake.access_tokens_seen) <= set(creds.tokens_issued)
    assert fake.connections_proxied >= 1


def test_private_ip(pg_server: PostgresServer) -> None:
    with FakeCloudSQL(pg_server.host, pg_server.port, ip_type="PRIVATE") as fake:
        with _connector(fake, ip_type="PRIVATE") as connector:
            assert _query(connector, fake, pg_server, "SELECT 1") == (1,)
        with _connector(fake, ip_type="PUBLIC") as connector, pytest.raises(CloudSQLIPTypeError):
            _query(connector, fake, pg_server, "SELECT 1")
        assert fake.connections_proxied == 1


def test_short_lived_certs_are_refreshed(pg_server: PostgresServer) -> None:
    with FakeCloudSQL(pg_server.host, pg_server.port, cert_lifetime=dt.timedelta(minutes=3)) as f:
        with _connector(f) as connector:
            for _ in range(3):
                assert _query(connector, f, pg_server, "SELECT 1") == (1,)
        assert f.certs_issued == 3  # under the connector's 4-minute buffer: one per connect


def test_concurrent_connections(fake: FakeCloudSQL, pg_server: PostgresServer) -> None:
    """A pool filling up: many connections open at the same moment, each its own backend."""
    n = 12
    barrier = threading.Barrier(n, timeout=30)

    def one(_: int) -> int:
        conn = _connect(connector, fake, pg_server)
        try:
            barrier.wait()  # all n tunnels are open together
            cur = conn.cursor()
            cur.execute("SELECT pg_backend_pid(), repeat('x', 200000)")
            pid, payload = cur.fetchone()
            assert len(payload) == 200_000
            return int(pid)
        finally:
            conn.close()

    with _connector(fake) as connector, ThreadPoolExecutor(n) as pool:
        pids = set(pool.map(one, range(n)))
    assert len(pids) == n
    assert fake.connections_proxied == n
    wait_until(lambda: fake.active_connections == 0, "no open connection", timeout=5,
               pause=0.02)


# --- raw TLS clients, to do what drivers never do ---------------------------------------------


def _tls_client(fake: FakeCloudSQL, tmp_path: Path, *, with_cert: bool = True) -> ssl.SSLSocket:
    """A client certificate straight from the fake's generateEphemeralCert, then TLS to :3307."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    base = f"{fake.api_endpoint}/sql/v1beta4/projects/{fake.project}/instances/{fake.instance}"
    post = urllib.request.Request(
        f"{base}:generateEphemeralCert",
        data=json.dumps({"public_key": public.decode()}).encode(),
        headers={"Authorization": "Bearer fake", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=10) as resp:
        cert = json.load(resp)["ephemeralCert"]["cert"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=fake.ca_pem)
    if with_cert:
        pem = tmp_path / "client.pem"
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem.write_bytes(key_pem + cert.encode())
        context.load_cert_chain(pem)
    raw = socket.create_connection((fake.ip_address, SERVER_PROXY_PORT), timeout=10)
    return context.wrap_socket(raw)


def _startup(user: str, **params: str) -> bytes:
    pairs = {"user": user, "database": "postgres", **params}
    body = struct.pack("!i", 196608) + b"".join(f"{k}\0{v}\0".encode() for k, v in pairs.items())
    return struct.pack("!i", len(body) + 5) + body + b"\0"


def _simple_query(sql: str) -> bytes:
    return b"Q" + struct.pack("!i", len(sql) + 5) + sql.encode() + b"\0"


def _read_until(sock: ssl.SSLSocket, done: Callable[[bytes], bool]) -> bytes:
    data = b""
    # After our own close_notify, the server's arrives as SSLZeroReturnError rather than b"".
    with contextlib.suppress(ssl.SSLZeroReturnError):
        while not done(data) and (chunk := sock.recv(65536)):
            data += chunk
    return data


@pytest.mark.parametrize("how", ["fin", "close_notify"])
def test_client_half_close_still_gets_the_answer(
    trust_fake: FakeCloudSQL, trust_pg: PostgresServer, tmp_path: Path, how: str
) -> None:
    fake, pg_server = trust_fake, trust_pg
    sock = _tls_client(fake, tmp_path)
    with sock:
        sock.sendall(_startup(pg_server.user) + _simple_query("SELECT 41 + 1"))
        if how == "fin":
            socket.socket.shutdown(sock, socket.SHUT_WR)  # TCP half-close under the TLS layer
        else:
            sock.setblocking(False)
            with pytest.raises(ssl.SSLWantReadError):
                sock.unwrap()  # sends close_notify, then would wait for the server's
            sock.setblocking(True)
        reply = _read_until(sock, lambda _: False)  # until the tunnel ends the stream
    assert b"\x00\x00\x00\x0242" in reply  # DataRow column: length 2, "42"
    assert b"SELECT 1\x00" in reply  # CommandComplete
    wait_until(lambda: fake.active_connections == 0, "no open connection", timeout=5,
               pause=0.02)


def test_vanished_clients_and_junk_are_cleaned_up(
    trust_fake: FakeCloudSQL, trust_pg: PostgresServer, tmp_path: Path
) -> None:
    fake, pg_server = trust_fake, trust_pg
    app = f"vanish-{time.monotonic_ns()}"
    sock = _tls_client(fake, tmp_path)
    sock.sendall(_startup(pg_server.user, application_name=app))
    _read_until(sock, lambda data: b"Z\x00\x00\x00\x05I" in data)  # ReadyForQuery, idle
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # reset, no Terminate: the backend must still go away

    with socket.create_connection((fake.ip_address, SERVER_PROXY_PORT)):
        pass  # connect and leave before the handshake
    with socket.create_connection((fake.ip_address, SERVER_PROXY_PORT)) as junk:
        junk.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS at all
        junk.recv(100)
    nocert = _tls_client(fake, tmp_path, with_cert=False)
    with nocert, pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: fails on first read
        nocert.sendall(_startup(pg_server.user))
        nocert.recv(100)

    admin = pg_server.admin_connection()
    try:
        cur = admin.cursor()

        def backend_gone() -> bool:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
            return bool(cur.fetchone()[0] == 0)

        wait_until(backend_gone, "the backend to end", timeout=5, pause=0.02)
    finally:
        admin.close()
    wait_until(lambda: fake.active_connections == 0, "no open connection", timeout=5,
               pause=0.02)
    assert len(fake.errors) == 3, fake.errors
    with _connector(fake) as connector:  # and the endpoint still serves
        assert _query(connector, fake, pg_server, "SELECT 1") == (1,)


def test_stop_cuts_open_connections_and_leaves_no_threads(pg_server: PostgresServer) -> None:
    fake = FakeCloudSQL(pg_server.host, pg_server.port).start()
    connector = _connector(fake)
    try:
        conn = _connect(connector, fake, pg_server)
        silent = socket.create_connection((fake.ip_address, SERVER_PROXY_PORT))  # mid-handshake
        wait_until(lambda: fake.active_connections == 2, "two open connections", timeout=5,
                   pause=0.02)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
        assert [t.name for t in threading.enumerate() if t.name.startswith("fake-cloudsql")] == []
        with pytest.raises(pg8000.exceptions.InterfaceError):
            conn.cursor().execute("SELECT 1")
        with contextlib.suppress(pg8000.exceptions.InterfaceError):
            conn.close()
        silent.close()
        fake.stop()  # idempotent
    finally:
        connector.close()
