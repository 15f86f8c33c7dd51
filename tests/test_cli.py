"""The CLI's own behaviour (the dev-stack test drives it against a running pipeline)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

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


def test_run_later_schedules_and_limits_from_the_command_line(
    submit_server: str, submit_env: Any
) -> None:
    import json

    auth = {"JOBS_TOKEN": submit_env.token("cli-user")}
    later = _cli("--url", submit_server, "submit", "--preset", "echo", "--content", "x",
                 "--in", "10m", **auth)
    assert later.returncode == 0, later.stderr
    job = json.loads(later.stdout)
    assert job["state"] == "PENDING" and job["not_before"]
    at = _cli("--url", submit_server, "submit", "--preset", "echo", "--content", "x",
              "--at", "2001-01-01T00:00:00Z", **auth)
    assert at.returncode == 0 and json.loads(at.stdout)["not_before"] is None
    bad = _cli("--url", submit_server, "submit", "--preset", "echo", "--content", "x",
               "--in", "soon", **auth)
    assert bad.returncode == 1 and "--in takes a duration" in bad.stderr
    naive = _cli("--url", submit_server, "submit", "--preset", "echo", "--content", "x",
                 "--at", "2026-12-01T09:00:00", **auth)
    assert naive.returncode == 1 and "run_at" in naive.stderr
    added = _cli("--url", submit_server, "schedule", "add", "--cron", "*/15 9-17 * * MON-FRI",
                 "--timezone", "Europe/Riga", "--preset", "echo", "--content", "tick", **auth)
    assert added.returncode == 0, added.stderr
    sid = json.loads(added.stdout)["id"]
    paused = _cli("--url", submit_server, "schedule", "pause", sid, **auth)
    assert json.loads(paused.stdout)["enabled"] is False
    resumed = _cli("--url", submit_server, "schedule", "resume", sid, **auth)
    assert json.loads(resumed.stdout)["next_fire_at"]
    listed = _cli("--url", submit_server, "schedule", "list", **auth)
    assert [s["id"] for s in json.loads(listed.stdout)["schedules"]] == [sid]
    bad_cron = _cli("--url", submit_server, "schedule", "add", "--cron", "61 * * * *",
                    "--preset", "echo", "--content", "x", **auth)
    assert bad_cron.returncode == 1 and "cron" in bad_cron.stderr
    assert _cli("--url", submit_server, "schedule", "delete", sid, **auth).returncode == 0
    gone = _cli("--url", submit_server, "schedule", "get", sid, **auth)
    assert gone.returncode == 1 and "Schedule not found" in gone.stderr
    db = {"DATABASE_URL": submit_env.env["DATABASE_URL"]}
    assert _cli("limit", "set", "hs256:cli-user", "3", **db).returncode == 0
    shown = json.loads(_cli("limit", "list", **db).stdout)
    assert {"owner_id": "hs256:cli-user", "max_running": 3, "running": 0} in shown["owners"]
    refused = _cli("limit", "set", "hs256:cli-user", "-1", **db)
    assert refused.returncode == 1 and "max_running" in refused.stderr
