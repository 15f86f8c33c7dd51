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


def test_process_cold_import_loads_no_api_module_and_unrouted_paths_are_problems() -> None:
    """`process` answers no HTTP API, so its cold import leaves the API's modules out; the 404
    handler every function registers loads them on first use and still answers a problem."""
    probe = (
        "import sys, main; main.process; "
        "print(sorted(m for m in sys.modules if m.startswith('common.api')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
    probe = (
        "import functions_framework; "
        "app = functions_framework.create_app('process', 'main.py', 'cloudevent'); "
        "r = app.test_client().get('/jobs/a%0Ab'); print(r.status_code, r.content_type)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1]
    assert out == "404 application/problem+json"
