"""Serverless manners: importing the shared code loads no heavy client; they load where used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("google.cloud.sql.connector", "google.cloud.pubsub", "google.cloud.pubsub_v1", "alembic")


def test_importing_common_loads_no_heavy_client() -> None:
    probe = (
        "import sys, common.store.engine, common.store.job_store, common.store.models, "
        "common.settings; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_no_engine_or_connector_is_created_at_import() -> None:
    probe = "import common.store.engine as d; print(d._engine is None and d._connector is None)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True"
