"""The production connection path: the real Cloud SQL Python Connector (ephemeral certificates,
mutual TLS 1.3, optional IAM login) against a local fake of the Admin API and instance endpoint,
forwarding to the test PostgreSQL. The Connector class itself is not mocked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from common.settings import load_settings
from common.store.engine import close_connector, create_engine_from_settings
from common.store.job_store import JobStore
from common.store.states import JobState
from localstack.postgres import PostgresServer
from tests.jobs_helpers import new_job
from tests.support.fake_cloudsql import FakeCloudSQL, FakeIAMCredentials, fake_credentials


@pytest.fixture()
def fake(pg_server: PostgresServer) -> Iterator[FakeCloudSQL]:
    with FakeCloudSQL(pg_server.host, pg_server.port) as instance:
        yield instance
    close_connector()


def _lifecycle_through(fake: FakeCloudSQL, database_url: str, credentials: Any, **env: Any) -> None:
    dbname = database_url.rsplit("/", 1)[1]
    settings = load_settings(
        instance_connection_name=fake.instance_connection_name,
        cloudsql_admin_endpoint=fake.api_endpoint,
        db_user="postgres",
        db_name=dbname,
        **env,
    )
    engine = create_engine_from_settings(settings, credentials=credentials)
    try:
        store = JobStore(engine, settings)
        job, _ = store.create("via-connector", new_job())
        claimed = store.claim(job.id).job
        assert claimed is not None
        assert store.complete(job.id, claimed.attempts, {"ok": 1}).state is JobState.COMPLETED
        assert store.get("via-connector", job.id).result is not None
    finally:
        engine.dispose()
    assert fake.connections_proxied >= 1  # the traffic really went through the TLS endpoint
    # Inside the tunnel, plain PostgreSQL from the first byte: no second TLS negotiation.
    assert fake.ssl_requests == 0


def test_password_login_through_the_connector(fake: FakeCloudSQL, database_url: str) -> None:
    _lifecycle_through(fake, database_url, fake_credentials(), db_password="unused-by-trust")
    assert fake.access_tokens_seen == []


def test_iam_login_through_the_connector(fake: FakeCloudSQL, database_url: str) -> None:
    _lifecycle_through(fake, database_url, FakeIAMCredentials(), db_iam_auth=True)
    assert fake.access_tokens_seen  # the ephemeral certificate was requested for IAM login


def test_private_ip_through_the_connector(pg_server: PostgresServer, database_url: str) -> None:
    with FakeCloudSQL(pg_server.host, pg_server.port, ip_type="PRIVATE") as fake:
        try:
            _lifecycle_through(
                fake, database_url, fake_credentials(), db_password="x", db_ip_type="PRIVATE"
            )
        finally:
            close_connector()


def test_pool_reuses_connections_through_the_connector(
    fake: FakeCloudSQL, database_url: str
) -> None:
    settings = load_settings(
        instance_connection_name=fake.instance_connection_name,
        cloudsql_admin_endpoint=fake.api_endpoint,
        db_user="postgres",
        db_password="x",
        db_name=database_url.rsplit("/", 1)[1],
        db_pool_size=1,
        db_max_overflow=0,
    )
    engine = create_engine_from_settings(settings, credentials=fake_credentials())
    try:
        store = JobStore(engine, settings)
        for _ in range(20):
            store.create("pooled", new_job())
    finally:
        engine.dispose()
    assert fake.connections_proxied == 1  # one connection, twenty statements
