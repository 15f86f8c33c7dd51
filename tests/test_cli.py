"""The CLI's own behaviour: errors, where it finds the API, and what it prints for a person
on a terminal (a real pty) and for a script. The dev-stack test drives it against the whole
running pipeline."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import create_engine, inspect, text

from cli import app as cli
from localstack import dev_client
from localstack.paths import ROOT
from localstack.postgres import PostgresServer, free_port
from tests.submit_fixtures import SECRET

SETTINGS_VARS = ("AUTH_HS256_SECRET", "JOBS_TOKEN", "DATABASE_URL", "JOBS_API_URL", "JOBS_USER",
                 "JOBS_SWEEP_URL", "JOBS_SWEEP_TOKEN", "NO_COLOR")
# No test may pick up a dev-client file from this checkout's own .local/: a folder never made.
NOWHERE = str(Path(tempfile.gettempdir()) / f"jobs-cli-nowhere-{uuid.uuid4().hex}")
LOCAL_SECRET = "local-secret-of-a-decent-length-0123"
ENV_SECRET = "from-the-environment-also-long-enough"


def _env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return {**base, "DEV_DATA_DIR": NOWHERE, **env}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def _in_pty(*args: str, **env: str) -> tuple[int, str]:
    """The CLI with its stdout on a pseudo-terminal, as a person runs it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=_env(**env),
                            stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


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
        assert {"jobs", "job_events"} <= set(inspect(admin).get_table_names())
        assert {"job_trail", "job_results"} <= set(inspect(admin).get_view_names())
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


def test_an_unreadable_or_foreign_url_never_uses_the_dev_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEV_DATA_DIR", str(tmp_path))
    path = tmp_path / dev_client.FILE_NAME
    dev_client.write(path, dev_client.DevClient("http://127.0.0.1:18080", "http://127.0.0.1:18082",
                                                LOCAL_SECRET))
    assert path.stat().st_mode & 0o777 == 0o600

    def who(token: str, secret: str = LOCAL_SECRET) -> str:
        return str(jwt.decode(token, secret, algorithms=["HS256"])["sub"])

    def resolve(url: str | None, token: str | None = None, subject: str = "dev") -> tuple[str, str]:
        found, source = cli.endpoint(url, token, file_url="submit_url",
                                     default_url=cli.DEFAULT_URL, subject=subject)
        return found, source()

    url, token = resolve(None)  # nothing given: the file's URL and a token from its secret
    assert url == "http://127.0.0.1:18080" and who(token) == "dev"
    url, token = resolve("http://localhost:9999", subject="alice")  # loopback: its secret
    assert url == "http://localhost:9999" and who(token) == "alice"
    assert resolve("http://127.0.0.1:1", "given") == ("http://127.0.0.1:1", "given")
    monkeypatch.setenv("AUTH_HS256_SECRET", ENV_SECRET)
    assert who(resolve(None)[1], ENV_SECRET) == "dev"  # the variable wins
    monkeypatch.delenv("AUTH_HS256_SECRET")
    with pytest.raises(cli.CliError, match="no token"):
        resolve("https://jobs.example.com")  # not loopback: the file is never read
    sweep_url, _ = cli.endpoint(None, None, file_url="sweep_url", default_url="x",
                                subject=cli.SCHEDULER_SUBJECT)
    assert sweep_url == "http://127.0.0.1:18082"

    path.chmod(0o644)
    with pytest.raises(cli.CliError, match="readable by others"):
        resolve(None)
    path.chmod(0o600)
    path.write_text("{not json")
    with pytest.raises(cli.CliError, match="restart `make dev`"):
        resolve(None)


@pytest.fixture()
def server(submit_server: str) -> str:
    return submit_server


def test_people_get_tables_and_scripts_get_json(server: str, tmp_path: Path) -> None:
    """Through make dev's file (no URL, no token given), on a pty and through a pipe."""
    dev_client.write(tmp_path / dev_client.FILE_NAME,
                     dev_client.DevClient(server, "http://127.0.0.1:1", SECRET))
    where = {"DEV_DATA_DIR": str(tmp_path)}
    submitted = _cli("submit", "--preset", "echo", "--content", "hi", **where)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)  # a pipe: JSON, as before
    assert job["state"] == "PENDING" and job["preset"] == "echo"
    assert set(json.loads(_cli("list", **where).stdout)) == {"jobs", "next_cursor"}
    assert json.loads(_cli("get", job["id"], **where).stdout)["id"] == job["id"]

    _, table = _in_pty("list", **where)
    header, row = table.splitlines()[:2]
    assert re.sub(r"\033\[[0-9;]*m", "", header).split() == ["ID", "STATE", "PRESET", "AGE",
                                                            "ATTEMPTS", "DUE"]
    assert "\033[34mPENDING" in row and job["id"] in row
    assert row.split()[-2:] == [f"0/{job['max_attempts']}", "now"]  # due now: not for later
    _, plain = _in_pty("list", NO_COLOR="1", **where)
    assert "\033[" not in plain
    lines = plain.splitlines()
    assert lines[1].index("PENDING") == lines[0].index("STATE")  # aligned
    assert lines[-1] == "1 job"
    _, forced = _in_pty("--json", "list", **where)
    assert json.loads(forced)["jobs"][0]["id"] == job["id"]
    reader, writer = os.pipe()
    os.close(reader)  # a reader that has stopped, as `| head -1` does
    closed = subprocess.run([sys.executable, "main.py", "list"], cwd=ROOT, env=_env(**where),
                            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(writer)
    assert closed.returncode == 141 and closed.stderr == ""

    _, shown = _in_pty("cancel", job["id"], NO_COLOR="1", **where)
    assert [line.split()[0] for line in shown.splitlines()[:4]] == ["job", "state", "preset",
                                                                    "created"]
    assert f"CANCELLED  (attempt 0 of {job['max_attempts']})" in shown
    _, events = _in_pty("events", job["id"], NO_COLOR="1", **where)
    created, cancelled = events.splitlines()[1:]
    assert created.split()[1:4] == ["+0.000s", "created", "->"] and "PENDING" in created
    assert "cancelled  PENDING -> CANCELLED" in cancelled
    _, stats = _in_pty("stats", NO_COLOR="1", **where)
    assert re.search(r"^CANCELLED +1$", stats, re.M) and "finished in the last 5 min: 1" in stats


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_renderer_colours_only_a_terminal_and_pretty_prints_results() -> None:
    from datetime import UTC, datetime, timedelta

    from jobs_client import JobView

    from cli import render as r

    assert r.Paint.for_stream(_Stream(True), {}).colour  # type: ignore[arg-type]
    assert not r.Paint.for_stream(_Stream(True), {"NO_COLOR": "1"}).colour  # type: ignore[arg-type]
    assert not r.Paint.for_stream(_Stream(False), {}).colour  # type: ignore[arg-type]

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    base = {"id": "fb041ba8-d9c1-4784-a61e-0ecdf690008d", "preset": "text-stats",
            "attempts": 1, "max_attempts": 3, "metadata": {}, "cancel_requested": False,
            "created_at": now - timedelta(minutes=3), "updated_at": now,
            "started_at": now - timedelta(seconds=2), "finished_at": now - timedelta(seconds=1),
            "not_before": None, "links": {"self": "/jobs/x", "events": "/jobs/x/events"}}
    done = JobView.model_validate({**base, "state": "COMPLETED", "result": {
        "status": "succeeded", "output": {"words": 4, "top_terms": ["hello"]},
        "duration_ms": 12, "created_at": now}})
    text = r.job_summary(done, now, r.Paint(False))
    assert "created   3m ago (2026-11-26 11:57:00 UTC)" in text and "ran       1.0 s" in text
    assert r.duration(0.0042) == "4 ms"
    assert text.splitlines()[-2:] == ["result    succeeded in 12 ms",
                                      '  {"top_terms": ["hello"], "words": 4}']
    assert r.pretty({"words": 4, "top_terms": ["hello"]}, width=20).splitlines() == [
        "{", '  "top_terms": ["hello"],', '  "words": 4', "}"]  # what fits stays on one line
    failed = JobView.model_validate({**base, "state": "FAILED", "result": {
        "status": "failed", "error_type": "PermanentError", "error_message": "bad input",
        "duration_ms": 3, "created_at": now}})
    coloured = r.job_summary(failed, now, r.Paint(True))
    assert "\033[31mFAILED\033[0m" in coloured
    assert "failed in 3 ms: PermanentError: bad input" in coloured
    assert r.age(59) == "59s" and r.age(61) == "1m" and r.age(7200) == "2h" and r.age(2e5) == "2d"
def test_submit_wait_draws_progress_as_a_bar_on_a_tty_and_as_lines_otherwise() -> None:
    from datetime import UTC, datetime

    from jobs_client import JobView

    from cli.jobs import progress_line

    now = datetime.now(UTC).isoformat()
    base = {"id": "00000000-0000-4000-8000-000000000001", "preset": "checksum", "attempts": 1,
            "max_attempts": 3, "metadata": {}, "cancel_requested": False, "created_at": now,
            "updated_at": now, "started_at": now, "finished_at": None, "not_before": None,
            "result": None, "links": {"self": "/jobs/x", "events": "/jobs/x/events"}}
    progress = {"fraction": 0.5, "note": "32768 of 65536 bytes", "at": now, "attempt": 1}
    running = JobView.model_validate({**base, "state": "PROCESSING", "progress": progress})
    bar = progress_line(running, tty=True, width=10)
    assert bar == "PROCESSING [#####.....]  50% 32768 of 65536 bytes"
    assert progress_line(running, tty=False) == "PROCESSING 50% 32768 of 65536 bytes"
    pending = JobView.model_validate({**base, "state": "PENDING", "progress": None})
    assert progress_line(pending, tty=True) == "PENDING   "
    done = running.model_copy(update={"state": "COMPLETED"})  # a finished job shows no bar
    assert progress_line(done, tty=True) == progress_line(done, tty=False) == "COMPLETED "


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
    assert {"owner_id": "hs256:cli-user", "max_running": 3, "running": 0,
            "max_submits_per_s": None, "max_pending": None} in shown["owners"]
    refused = _cli("limit", "set", "hs256:cli-user", "-1", **db)
    assert refused.returncode == 1 and "max_running" in refused.stderr


def test_operator_commands_find_make_devs_database_and_fail_in_one_line(
    submit_env: Any, tmp_path: Path
) -> None:
    """`limit` and `migrate` talk to the database: with no variable they use make dev's, and
    every way they can fail is one line on stderr (exit 2 when the database cannot be reached),
    never a traceback. An owner without its namespace is refused: it could match no one."""
    import json

    def one_line(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
        assert result.returncode == code, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert text in result.stderr and "Traceback" not in result.stderr

    empty = {"DEV_DATA_DIR": str(tmp_path / "none")}
    one_line(_cli("limit", "list", **empty), 1, "DATABASE_URL")
    one_line(_cli("migrate", **empty), 1, "DATABASE_URL")
    one_line(_cli("limit", "set", "bob", "1", **empty), 1, "owners are namespaced")
    nowhere = {"DATABASE_URL": "postgresql+pg8000://postgres@127.0.0.1:1/jobs", **empty}
    one_line(_cli("limit", "list", **nowhere), 2, "cannot reach the database")
    one_line(_cli("migrate", **nowhere), 2, "cannot reach the database")
    url = submit_env.env["DATABASE_URL"]
    missing = url.rsplit("/", 1)[0] + "/no_such_database"
    one_line(_cli("limit", "list", DATABASE_URL=missing), 1, "does not exist")

    dev_client.write(tmp_path / dev_client.FILE_NAME, dev_client.DevClient(
        "http://127.0.0.1:1", "http://127.0.0.1:2", SECRET, database_url=url))
    dev = {"DEV_DATA_DIR": str(tmp_path)}
    assert _cli("limit", "set", "hs256:dev-user", "2", **dev).returncode == 0
    listed = json.loads(_cli("limit", "list", **dev).stdout)
    assert {"owner_id": "hs256:dev-user", "max_running": 2, "running": 0,
            "max_submits_per_s": None, "max_pending": None} in listed["owners"]
    assert _cli("limit", "clear", "hs256:dev-user", **dev).returncode == 0
    one_line(_cli("limit", "clear", "hs256:dev-user", **dev), 1, "has no override")


def test_a_job_for_later_shows_when_it_is_due_and_a_retry_when_it_runs_again() -> None:
    from datetime import UTC, datetime, timedelta

    from jobs_client import JobView

    from cli import render as r

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    base = {"id": "fb041ba8-d9c1-4784-a61e-0ecdf690008d", "preset": "echo", "state": "PENDING",
            "max_attempts": 3, "metadata": {}, "cancel_requested": False, "created_at": now,
            "updated_at": now, "started_at": None, "finished_at": None, "result": None,
            "not_before": now + timedelta(minutes=5, seconds=30),
            "links": {"self": "/jobs/x", "events": "/jobs/x/events"}}
    later = r.job_summary(JobView.model_validate({**base, "attempts": 0}), now, r.Paint(False))
    assert "due       in 5m (2026-11-26 12:05:30 UTC)" in later
    retry = r.job_summary(JobView.model_validate({**base, "attempts": 1}), now, r.Paint(False))
    assert "next try  in 5m (2026-11-26 12:05:30 UTC)" in retry


def test_get_shows_the_priority_and_why_and_until_when_a_job_waits() -> None:
    from datetime import UTC, datetime, timedelta

    from jobs_client import JobView

    from cli import render as r

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    base = {"id": "fb041ba8-d9c1-4784-a61e-0ecdf690008d", "preset": "echo", "state": "PENDING",
            "attempts": 0, "max_attempts": 3, "metadata": {}, "cancel_requested": False,
            "created_at": now, "updated_at": now, "started_at": None, "finished_at": None,
            "result": None, "not_before": None, "priority": 9, "limit_key": "gpu",
            "links": {"self": "/jobs/x", "events": "/jobs/x/events"}}

    def shown(**fields: Any) -> list[str]:
        job = JobView.model_validate({**base, **fields})
        return r.job_summary(job, now, r.Paint(False)).splitlines()

    plain = shown(waiting=None)
    assert "priority  9" in plain and "key       gpu" in plain
    assert not [line for line in plain if line.startswith("waiting")]
    assert "waiting   running:key (gpu): its key's limit on running jobs is full; starts " \
           "when a job under it ends" in shown(
               waiting={"reason": "running:key", "limit": "gpu", "until": None})
    slot = now + timedelta(seconds=90)
    assert "waiting   rate:key (gpu): its key's rate has no start slot near; next slot in 1m " \
           "(2026-11-26 12:01:30 UTC)" in shown(
               waiting={"reason": "rate:key", "limit": "gpu", "until": slot})
    assert "waiting   rate-reserved (gpu): a start slot is booked; starts in 1m " \
           "(2026-11-26 12:01:30 UTC)" in shown(
               not_before=slot, waiting={"reason": "rate-reserved", "limit": "gpu",
                                         "until": slot})
    default = shown(priority=5, limit_key=None)  # shown when chosen, as metadata is
    assert not [line for line in default if line.startswith(("priority", "key"))]
    older = {k: v for k, v in base.items() if k not in ("priority", "limit_key")}
    assert JobView.model_validate(older).priority == 5  # a server before them: the default


def test_get_names_a_long_job_s_execution_and_its_logs() -> None:
    from datetime import UTC, datetime

    from jobs_client import JobView

    from cli import render as r

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    base = {"id": "fb041ba8-d9c1-4784-a61e-0ecdf690008d", "preset": "render",
            "state": "PROCESSING", "attempts": 2, "max_attempts": 3, "metadata": {},
            "cancel_requested": False, "created_at": now, "updated_at": now,
            "started_at": now, "finished_at": None, "result": None, "not_before": None,
            "links": {"self": "/jobs/x", "events": "/jobs/x/events"}}
    logs = "https://console.cloud.google.com/logs/query;query=x?project=p"
    shown = r.job_summary(JobView.model_validate({**base, "execution": {
        "name": "jobs-execute-x7k2p", "attempt": 2, "logs_url": logs,
        "console_url": "https://console.cloud.google.com/run/jobs/executions/details/r/x"}}),
        now, r.Paint(False)).splitlines()
    assert "run in    jobs-execute-x7k2p (attempt 2)" in shown and f"logs      {logs}" in shown
    local = r.job_summary(JobView.model_validate({**base, "execution": {
        "name": "local-4242", "attempt": 2, "logs_url": None, "console_url": None}}),
        now, r.Paint(False)).splitlines()
    assert "run in    local-4242 (attempt 2)" in local
    assert not [line for line in local if line.startswith("logs")]


def test_a_rate_is_read_as_starts_per_interval() -> None:
    from cli.limits import rate
    from cli.schedules import UsageError

    assert rate("60/1m") == (60, 60.0) and rate("60/m") == (60, 60.0)
    assert rate("5/1s") == (5, 1.0) and rate("3/0.5s") == (3, 0.5)
    assert rate("1000/2h") == (1000, 7200.0) and rate("7/30") == (7, 30.0)
    for bad in ("60", "60/", "/1m", "60/1w", "-1/1m", "60/1.m", "a/b"):
        with pytest.raises(UsageError, match="--rate takes N/DURATION"):
            rate(bad)


def test_priorities_and_key_limits_from_the_command_line(
    submit_server: str, submit_env: Any, store: Any
) -> None:
    """submit and schedule take --priority and --limit-key; `limits set/get/list/delete`
    manage the caller's key limits (each refusal one line naming the field, nothing written);
    `get` says why a job waits."""
    auth = {"JOBS_API_URL": submit_server, "JOBS_TOKEN": submit_env.token("cli-flow")}

    def ok(*args: str) -> Any:
        result = _cli("--json", *args, **auth)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def refused(*args: str) -> str:
        result = _cli(*args, **auth)
        assert result.returncode != 0 and result.stdout == ""
        return result.stderr

    assert ok("limits")["keys"] == [] and ok("limits", "list")["presets"] == []
    made = ok("limits", "set", "gpu", "--max-running", "1")
    assert (made["name"], made["max_running"], made["max_starts"]) == ("gpu", 1, None)
    rated = ok("limits", "set", "api", "--rate", "60/1m")
    assert (rated["max_running"], rated["max_starts"], rated["interval_s"]) == (None, 60, 60.0)
    both = ok("limits", "set", "api", "--max-running", "2", "--max-starts", "5",
              "--interval-s", "1.5")
    assert (both["max_running"], both["max_starts"], both["interval_s"]) == (2, 5, 1.5)
    assert ok("limits", "get", "api") == both
    assert "max_running" in refused("limits", "set", "gpu", "--max-running", "0")
    assert "interval_s" in refused("limits", "set", "gpu", "--max-starts", "5")
    assert "key" in refused("limits", "set", "no spaces", "--max-running", "1")
    assert "--rate takes N/DURATION" in refused("limits", "set", "gpu", "--rate", "fast")
    assert "not both" in refused("limits", "set", "gpu", "--rate", "1/s", "--max-starts", "1")
    assert "limits delete" in refused("limits", "set", "gpu")
    assert ok("limits", "get", "gpu")["max_running"] == 1  # none of these changed it
    _, table = _in_pty("limits", NO_COLOR="1", **auth)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["running", "0", "of", "unlimited"]
    assert lines[2].split() == ["KIND", "NAME", "RUNNING", "RATE", "NEXT", "SLOT"]
    assert lines[3].split() == ["key", "api", "0", "of", "2", "5", "per", "1.5", "s", "-"]
    assert lines[4].split() == ["key", "gpu", "0", "of", "1", "-", "-"]
    _, one = _in_pty("limits", "get", "gpu", NO_COLOR="1", **auth)
    assert one.splitlines()[:3] == ["limit      gpu", "running    0 of 1", "rate       -"]

    first = ok("submit", "--preset", "echo", "--content", "a", "--priority", "9",
               "--limit-key", "gpu")
    second = ok("submit", "--preset", "echo", "--content", "b", "--limit-key", "gpu")
    assert (first["priority"], first["limit_key"], second["priority"]) == (9, "gpu", 5)
    assert "priority" in refused("submit", "--preset", "echo", "--content", "c",
                                 "--priority", "10")
    assert [store.claim(j["id"]).reason for j in (first, second)] == ["claimed", "deferred"]
    assert ok("get", second["id"])["waiting"] == {"reason": "running:key", "limit": "gpu",
                                                  "until": None}
    _, human = _in_pty("get", second["id"], NO_COLOR="1", **auth)
    assert not re.search(r"^priority", human, re.M)  # the default
    assert re.search(r"^key +gpu$", human, re.M)
    _, urgent = _in_pty("get", first["id"], NO_COLOR="1", **auth)
    assert re.search(r"^priority +9$", urgent, re.M), urgent
    assert re.search(r"^waiting +running:key \(gpu\): ", human, re.M), human

    sid = ok("schedule", "add", "--cron", "0 9 * * *", "--preset", "echo", "--content", "x",
             "--priority", "2", "--limit-key", "gpu")["id"]
    assert (ok("schedule", "get", sid)["job"]["priority"],
            ok("schedule", "get", sid)["job"]["limit_key"]) == (2, "gpu")
    assert "give --preset and --content" in refused("schedule", "edit", sid, "--priority", "7")
    edited = ok("schedule", "edit", sid, "--preset", "echo", "--content", "y", "--priority", "7")
    assert (edited["job"]["priority"], edited["job"]["limit_key"]) == (7, None)
    _, summary = _in_pty("schedule", "get", sid, NO_COLOR="1", **auth)
    assert re.search(r"^priority +7$", summary, re.M), summary

    assert ok("limits", "delete", "gpu") == {"deleted": "gpu"}
    assert "Limit not found" in refused("limits", "get", "gpu")
    assert "Limit not found" in refused("limits", "delete", "gpu")
    assert [k["name"] for k in ok("limits")["keys"]] == ["api"]


def test_quotas_from_the_command_line_and_a_429_said_plainly(
    submit_server: str, submit_env: Any
) -> None:
    """An operator sets an owner's PENDING quota with `limit quota`; that owner's next submit
    over it is one line naming the limit and when to come back, at once (no silent retries);
    `clear` returns the owner to the default (instances see it within OWNER_LIMITS_TTL_S), and
    the row goes."""
    import json

    db = {"DATABASE_URL": submit_env.env["DATABASE_URL"]}
    owner = "hs256:cli-quota"
    assert _cli("limit", "quota", owner, "pending", "1", **db).returncode == 0
    shown = json.loads(_cli("limit", "list", **db).stdout)
    assert {"owner_id": owner, "max_running": None, "running": 0, "max_submits_per_s": None,
            "max_pending": 1} in shown["owners"]
    bad = _cli("limit", "quota", owner, "pending", "lots", **db)
    assert bad.returncode == 1 and "whole number" in bad.stderr
    auth = {"JOBS_TOKEN": submit_env.token("cli-quota")}
    submit = ("--url", submit_server, "submit", "--preset", "echo", "--content", "x")
    assert _cli(*submit, **auth).returncode == 0
    refused = _cli(*submit, **auth)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "Too many queued jobs" in refused.stderr and "at most 1 PENDING" in refused.stderr
    assert "(retry after 5 s)" in refused.stderr
    assert _cli("limit", "quota", owner, "pending", "clear", **db).returncode == 0
    assert json.loads(_cli("limit", "list", **db).stdout)["owners"] == []


@pytest.fixture()
def stack_with_a_limit(submit_env: Any) -> Any:
    """`submit` as a stack with OWNER_MAX_RUNNING=4 and loopback callbacks allowed (dev-like)."""
    from localstack.function_server import FunctionServer

    env = {**submit_env.env, "OWNER_MAX_RUNNING": "4", "WEBHOOK_ALLOW_LOOPBACK": "true"}
    srv = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
    try:
        yield srv.url
    finally:
        srv.close()


def test_every_new_option_reaches_the_api_and_comes_back(
    stack_with_a_limit: str, submit_env: Any
) -> None:
    """Callback URL, trace id and due time in `get` and `list`; the webhook secret; schedule
    edit; `--max-attempts 0` refused (nothing created); history and limits; `limit list`'s
    default is the stack's (4), not this shell's (OWNER_MAX_RUNNING=9)."""
    url = stack_with_a_limit
    auth = {"JOBS_API_URL": url, "JOBS_TOKEN": submit_env.token("cli-new")}

    def ok(*args: str, **env: str) -> Any:
        result = _cli("--json", *args, **auth, **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert ok("health") == {"status": "ok", "database": "ok"}
    minted = ok("token", "someone", AUTH_HS256_SECRET=SECRET)
    assert minted["subject"] == "someone" and who_signed(minted["token"]) == "someone"
    hook = "http://127.0.0.1:9/hook"
    job = ok("submit", "--preset", "echo", "--content", "x", "--callback-url", hook, "--in", "1h")
    shown = ok("get", job["id"], "--wait", "0.2")  # not due for an hour: answers after 0.2 s
    assert shown["callback_url"] == hook and re.fullmatch(r"[0-9a-f]{32}", shown["trace_id"])
    assert shown["trace_id"] == job["trace_id"] and shown["not_before"]
    _, human = _in_pty("get", job["id"], NO_COLOR="1", **auth)
    assert re.search(r"^due +in (59|60)m ", human, re.M), human
    assert re.search(rf"^callback +{re.escape(hook)}$", human, re.M)
    assert re.search(rf"^trace +{shown['trace_id']}$", human, re.M)
    _, forced = _in_pty("get", job["id"], "--json", **auth)  # --json after the command too
    assert json.loads(forced)["trace_id"] == shown["trace_id"]
    _, nested = _in_pty("schedule", "list", "--json", **auth)
    assert json.loads(nested) == {"schedules": [], "next_cursor": None}
    _, listed = _in_pty("list", NO_COLOR="1", **auth)
    assert listed.splitlines()[1].split()[-2:] == ["in", "59m"] or \
        listed.splitlines()[1].split()[-2:] == ["in", "1h"], listed

    secret = ok("webhook-secret", "rotate")
    assert secret["secret"].startswith("whsec_") and secret["rotated_at"]

    refused = _cli("schedule", "add", "--cron", "0 9 * * *", "--preset", "echo", "--content",
                   "x", "--max-attempts", "0", **auth)
    assert refused.returncode == 1 and "max_attempts" in refused.stderr, refused.stderr
    assert ok("schedule", "list")["schedules"] == []  # nothing was created
    sid = ok("schedule", "add", "--cron", "0 9 * * *", "--preset", "echo", "--content",
             "x")["id"]
    edited = ok("schedule", "edit", sid, "--cron", "30 10 * * MON", "--timezone",
                "Europe/Riga", "--overlap", "allow")
    assert (edited["cron"], edited["timezone"], edited["overlap"]) == (
        "30 10 * * MON", "Europe/Riga", "allow")
    assert edited["job"]["preset"] == "echo" and edited["catch_up"] == "once"  # the rest kept
    rejob = ok("schedule", "edit", sid, "--preset", "text-stats", "--content", "Hi there",
               "--max-attempts", "2", "--callback-url", hook)
    assert rejob["job"]["preset"] == "text-stats" and rejob["job"]["max_attempts"] == 2
    assert rejob["job"]["callback_url"] == hook  # each job it fires carries it
    _, summary = _in_pty("schedule", "get", sid, NO_COLOR="1", **auth)
    assert re.search(rf"^callback +{re.escape(hook)}$", summary, re.M), summary
    half = _cli("schedule", "edit", sid, "--preset", "echo", **auth)
    assert half.returncode == 1 and "--preset and --content together" in half.stderr
    _, table = _in_pty("schedule", "list", NO_COLOR="1", **auth)
    assert table.splitlines()[0].split() == ["ID", "CRON", "ZONE", "PRESET", "STATE", "NEXT",
                                             "FIRE"] and sid in table

    ok("cancel", job["id"])
    history = ok("history")
    assert history["window"] == "hour" and len(history["buckets"]) == 60
    assert sum(b["counts"]["CANCELLED"] for b in history["buckets"]) == 1
    assert ok("history", "--window", "day")["bucket_s"] == 900
    _, drawn = _in_pty("history", NO_COLOR="1", **auth)
    assert drawn.splitlines()[0] == "jobs ended per minute, last hour"
    assert drawn.splitlines()[1].split() == ["FROM", "COMPLETED", "FAILED", "CANCELLED"]
    assert drawn.splitlines()[2].split()[-3:] == ["0", "0", "1"]
    assert ok("limits") == {"default_max_running": 4, "override": None, "max_running": 4,
                            "running": 0, "max_submits_per_s": 0, "max_pending": 0,
                            "max_waits": 2, "keys": [], "presets": []}

    db = {"DATABASE_URL": submit_env.env["DATABASE_URL"], "OWNER_MAX_RUNNING": "9"}
    limits = ok("limit", "set", "hs256:cli-new", "2", **db)
    assert limits["default"] == 4
    assert {"owner_id": "hs256:cli-new", "max_running": 2, "running": 0,
            "max_submits_per_s": None, "max_pending": None} in limits["owners"]
    assert ok("limits")["max_running"] == 2
    # A job of theirs runs (claimed without a slot); clearing the override hands them back to
    # the stack's default (4), a limit, so the running job is adopted into their slot count,
    # though this shell's OWNER_MAX_RUNNING says 0.
    engine = create_engine(submit_env.env["DATABASE_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "UPDATE jobs SET state = 'PROCESSING', attempts = 1, started_at = now(), "
                "lease_expires_at = now() + interval '5 minutes', holds_slot = false "
                "WHERE id = :id"), {"id": sid_job(submit_env, url)})
        cleared = ok("limit", "clear", "hs256:cli-new", **{**db, "OWNER_MAX_RUNNING": "0"})
        assert cleared["default"] == 4
        with engine.connect() as conn:
            assert conn.execute(text("SELECT running FROM owner_running "
                                     "WHERE owner_id = 'hs256:cli-new'")).scalar_one() == 1
    finally:
        engine.dispose()
    away = _cli("--json", "limit", "list", **db, JOBS_API_URL="http://127.0.0.1:1",
                JOBS_TOKEN="x")
    unknown = json.loads(away.stdout)
    assert unknown["default"] is None and "cannot reach" in unknown["default_unknown"]


def sid_job(submit_env: Any, url: str) -> str:
    """A new PENDING job of cli-new's, through the API."""
    import urllib.request

    req = urllib.request.Request(
        url + "/jobs", data=json.dumps({"preset": "echo", "content": "runs"}).encode(),
        headers={"Authorization": f"Bearer {submit_env.token('cli-new')}",
                 "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["id"])


def who_signed(token: str) -> str:
    return str(jwt.decode(token, SECRET, algorithms=["HS256"],
                          options={"verify_aud": False})["sub"])


def test_get_shows_progress_and_the_webhook_s_state() -> None:
    from datetime import UTC, datetime, timedelta

    from jobs_client import JobView

    from cli import render as r

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    running = JobView.model_validate({
        "id": "fb041ba8-d9c1-4784-a61e-0ecdf690008d", "preset": "demo", "state": "PROCESSING",
        "attempts": 1, "max_attempts": 3, "metadata": {}, "cancel_requested": False,
        "created_at": now, "updated_at": now, "started_at": now, "finished_at": None,
        "not_before": None, "result": None, "callback_url": "https://example.com/h",
        "progress": {"fraction": 0.4, "note": "4 of 10", "at": now - timedelta(seconds=3),
                     "attempt": 1},
        "webhook": {"state": "pending", "waiting_for": "retry", "note": "retried later",
                    "webhook_id": None, "attempts": 2, "last_status": 503,
                    "next_attempt_at": now + timedelta(seconds=30), "last_error": "HTTP 503",
                    "delivered_at": None},
        "lanes": {"a": 1},  # a field a newer server adds: kept, shown by --json
        "links": {"self": "/jobs/x", "events": "/jobs/x/events"}})
    text = r.job_summary(running, now, r.Paint(False))
    assert "progress  40% 4 of 10 (3s ago)" in text
    assert "callback  https://example.com/h" in text
    assert "webhook   pending, 2 attempts, last answer 503, next in 30s" in text
    assert "          retried later" in text and "          last error: HTTP 503" in text
    assert running.model_dump(mode="json")["lanes"] == {"a": 1}


def test_submit_many_reads_json_lines_and_reports_each_refused_line(
    submit_server: str, submit_env: Any, tmp_path: Path
) -> None:
    auth = {"JOBS_TOKEN": submit_env.token("alice")}
    lines = [json.dumps({"preset": "echo", "content": f"line {i}"}) for i in range(3)]
    lines.insert(1, "")  # blank lines are skipped, and numbering follows the file
    lines.append(json.dumps({"preset": "nope", "content": "x"}))
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = _cli("--url", submit_server, "--json", "submit-many", str(path), "--key-prefix", "n1",
               **auth)
    assert out.returncode == 1, out.stderr  # one line was refused
    total = json.loads(out.stdout)
    assert (total["created"], total["replayed"], total["refused"]) == (3, 0, 1)
    assert [r["line"] for r in total["results"]] == [1, 3, 4, 5]
    assert total["results"][3]["problem"]["type"].endswith("/unknown-preset")
    # The same file again, with the same prefix: every line is replayed, nothing duplicated.
    again = json.loads(_cli("--url", submit_server, "--json", "submit-many", str(path),
                            "--key-prefix", "n1", **auth).stdout)
    assert (again["created"], again["replayed"]) == (0, 3)
    from cli.flow import summary  # what a terminal shows

    human = summary(again)
    assert human.splitlines()[0] == "created 0, replayed 3, refused 1"
    assert "line 5: Unknown preset (preset: unknown preset 'nope'" in human
    # A line that is not a JSON object stops the command before anything is sent.
    path.write_text(json.dumps({"preset": "echo", "content": "ok"}) + "\n[1, 2]\n")
    bad = _cli("--url", submit_server, "submit-many", str(path), **auth)
    assert bad.returncode != 0 and "line 2: not a JSON object" in bad.stderr
    listed = json.loads(_cli("--url", submit_server, "--json", "list", **auth).stdout)
    assert len(listed["jobs"]) == 3


def test_bulk_commands_count_then_need_a_confirmation(
    submit_server: str, submit_env: Any
) -> None:
    auth = {"JOBS_TOKEN": submit_env.token("alice")}
    for i in range(3):
        _cli("--url", submit_server, "submit", "--preset", "echo", "--content", str(i), **auth)
    everything = _cli("--url", submit_server, "bulk-cancel", **auth)
    assert everything.returncode == 1 and "all" in everything.stderr
    dry = _cli("--url", submit_server, "--json", "bulk-cancel", "--state", "PENDING",
               "--dry-run", **auth)
    assert json.loads(dry.stdout)["matched"] == 3
    unconfirmed = _cli("--url", submit_server, "bulk-cancel", "--all", **auth)  # no terminal
    assert unconfirmed.returncode != 0
    assert "3 job(s) match; pass --yes to cancel them" in unconfirmed.stderr
    done = _cli("--url", submit_server, "--json", "bulk-cancel", "--all", "--yes", **auth)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cancelled"] == 3
    nothing = _cli("--url", submit_server, "bulk-retry", "--all", **auth)
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["matched"] == 0


def test_workflow_commands_submit_show_cancel_and_retry(
    submit_server: str, submit_env: Any, tmp_path: Path
) -> None:
    auth = {"JOBS_TOKEN": submit_env.token("alice")}
    graph = {"name": "episode-42", "steps": [
        {"name": "script", "preset": "echo", "content": "s"},
        {"name": "audio", "preset": "echo", "content": "a", "after": ["script"]},
        {"name": "report", "preset": "echo", "content": "r", "after": ["audio"],
         "on_upstream_failure": "run"}]}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(graph))
    made = _cli("--url", submit_server, "--json", "workflow", "submit", str(path), "--key", "k",
                **auth)
    assert made.returncode == 0, made.stderr
    wf = json.loads(made.stdout)
    assert (wf["state"], wf["steps_total"]) == ("RUNNING", 3)
    again = _cli("--url", submit_server, "--json", "workflow", "submit", str(path), "--key", "k",
                 **auth)
    assert json.loads(again.stdout)["id"] == wf["id"]  # the same key replays
    _, shown = _in_pty("--url", submit_server, "workflow", "get", wf["id"], **auth)
    assert "0/3 steps" in shown and "RUNNING" in shown
    lines = {line.split()[0]: line for line in shown.splitlines() if line.strip()}
    assert "PENDING" in lines["script"] and "WAITING" in lines["audio"]
    assert "audio (run)" in lines["report"]
    listed = _cli("--url", submit_server, "--json", "workflow", "list", **auth)
    assert [w["id"] for w in json.loads(listed.stdout)] == [wf["id"]]
    nothing = _cli("--url", submit_server, "workflow", "retry", wf["id"], "--step", "script",
                   **auth)
    assert nothing.returncode == 1 and "error:" in nothing.stderr  # script is not FAILED
    cancelled = _cli("--url", submit_server, "--json", "workflow", "cancel", wf["id"], **auth)
    assert json.loads(cancelled.stdout)["state"] == "CANCELLED"
    _, shown = _in_pty("--url", submit_server, "workflow", "get", wf["id"], **auth)
    assert "CANCELLED, 3/3 steps" in shown
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"name": "a", "preset": "echo", "content": "x",
                                          "after": ["a"]}]}))
    refused = _cli("--url", submit_server, "workflow", "submit", str(bad), **auth)
    assert refused.returncode == 1 and "steps[0].after" in refused.stderr, refused.stderr
    notjson = _cli("--url", submit_server, "workflow", "submit", str(path) + "x", **auth)
    assert notjson.returncode == 1 and "No such file" in notjson.stderr
    sched = _cli("--url", submit_server, "--json", "schedule", "add", "--cron", "0 3 * * *",
                 "--workflow", str(path), **auth)
    assert sched.returncode == 0, sched.stderr
    assert json.loads(sched.stdout)["workflow"]["name"] == "episode-42"
    keyed = _cli("--url", submit_server, "--json", "bulk-cancel", "--limit-key", "gpu",
                 "--dry-run", **auth)
    assert json.loads(keyed.stdout)["matched"] == 0
