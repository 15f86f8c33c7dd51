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


# Loaded by the first request that needs them, never by a cold start of any function.
ON_DEMAND = ("cronsim", "common.store.cron", "common.store.cron_grammar",
             "common.store.schedule_models", "common.api.schedules", "common.api.openapi",
             "common.api.ui", "common.messaging.webhooks", "common.api.limits",
             "common.api.workflows")


def test_a_cold_start_loads_no_schedule_code_nor_other_on_demand_modules() -> None:
    """Every function imports the store and most import the API, but few requests touch a
    schedule, the OpenAPI document or the dashboard: their models and grammars wait. The sweep
    fires schedules on every pass, so it may load the cron code (not cronsim) at once."""
    for target in ("submit", "process", "sweep"):
        waiting = [m for m in ON_DEMAND
                   if target != "sweep" or m not in ("common.store.cron",
                                                     "common.store.cron_grammar")]
        probe = (f"import sys, main; main.{target}; "
                 f"print([m for m in {waiting!r} if m in sys.modules])")
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert out == "[]", (target, out)


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
        "app = functions_framework.create_app('process', 'main.py', 'http'); "
        "r = app.test_client().get('/jobs/a%0Ab'); print(r.status_code, r.content_type)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1]
    assert out == "404 application/problem+json"
