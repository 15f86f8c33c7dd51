"""The CLI's own behaviour (the dev-stack test drives it against a running pipeline)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

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
        admin = create_engine(pg_server.url(name), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fn_user') "
                "THEN CREATE ROLE fn_user LOGIN; END IF; END $$"
            ))
        done = _cli("migrate", DATABASE_URL=pg_server.url(name), DB_APP_USERS="fn_user")
        assert done.returncode == 0, done.stderr
        assert "granted jobs_app to fn_user" in done.stdout
        assert {"jobs", "job_events", "job_results"} <= set(inspect(admin).get_table_names())
        with admin.connect() as conn:  # the function's user may write jobs, not change tables
            conn.execute(text("SET ROLE fn_user"))
            conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
            with pytest.raises(Exception, match="must be owner"):
                conn.execute(text("ALTER TABLE jobs ADD COLUMN x int"))
        admin.dispose()
        refused = _cli("migrate", DATABASE_URL=pg_server.url(name),
                       DB_APP_USERS='x"; DROP TABLE jobs; --')
        assert refused.returncode != 0 and "not a database user name" in refused.stderr
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


def test_submit_wait_draws_progress_as_a_bar_on_a_tty_and_as_lines_otherwise() -> None:
    from cli import progress_line

    running = {"state": "PROCESSING",
               "progress": {"fraction": 0.5, "note": "32768 of 65536 bytes", "at": "t",
                            "attempt": 1}}
    bar = progress_line(running, tty=True, width=10)
    assert bar == "PROCESSING [#####.....]  50% 32768 of 65536 bytes"
    assert progress_line(running, tty=False) == "PROCESSING 50% 32768 of 65536 bytes"
    assert progress_line({"state": "PENDING", "progress": None}, tty=True) == "PENDING   "
    done = {**running, "state": "COMPLETED"}  # a finished job shows no bar
    assert progress_line(done, tty=True) == progress_line(done, tty=False) == "COMPLETED "
