"""The CLI's own behaviour (the dev-stack test drives it against a running pipeline)."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, inspect

from localstack.paths import ROOT
from localstack.postgres import PostgresServer, free_port


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("AUTH_HS256_SECRET", "JOBS_TOKEN", "DATABASE_URL")}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_migrate_builds_the_schema(pg_server: PostgresServer) -> None:
    name = pg_server.create_database("jobs_cli")
    try:
        done = _cli("migrate", DATABASE_URL=pg_server.url(name))
        assert done.returncode == 0, done.stderr
        engine = create_engine(pg_server.url(name))
        assert {"jobs", "job_events", "job_results"} <= set(inspect(engine).get_table_names())
        engine.dispose()
    finally:
        pg_server.drop_database(name)


def test_errors_are_short_and_exit_non_zero() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    unreachable = _cli("--url", down, "--token", "t", "stats")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("error: cannot reach")
    no_secret = _cli("token", "alice")
    assert no_secret.returncode == 1 and "AUTH_HS256_SECRET" in no_secret.stderr
    bad_json = _cli("--url", down, "--token", "t", "submit", "--preset", "echo", "--content",
                    "x", "--metadata", "{nope")
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    not_http = _cli("--url", "file:///etc/passwd", "--token", "t", "stats")
    assert not_http.returncode == 1 and "not an http(s) URL" in not_http.stderr
    assert "Traceback" not in unreachable.stderr + no_secret.stderr + bad_json.stderr
