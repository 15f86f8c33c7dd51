"""The command line: `python main.py <command>`. It talks to the HTTP API through the project's
one HTTP client (common/api/client.py), like any other caller; only `migrate` and `limit` (an
operator's settings, not an owner's) touch the database directly.

    python main.py submit --preset text-stats --content "Hello there." --wait
    python main.py get ID | list --state FAILED | events ID | cancel ID | retry ID | stats
    python main.py token alice                       # a dev HS256 token
    python main.py submit --preset echo --content hi --in 10m    # or --at 2026-12-01T09:00:00Z
    python main.py schedule add --cron '0 9 * * MON-FRI' --timezone Europe/Riga --preset echo \
        --content hi | schedule list | pause ID | resume ID | delete ID | events ID
    python main.py limit set hs256:alice 2 | limit clear OWNER | limit list   # database
    python main.py sweep                             # one maintenance pass, as the scheduler
    python main.py migrate                           # alembic upgrade head

Where it finds the API, first match wins: the flags (--url, --token), the variables
(JOBS_API_URL, JOBS_TOKEN; AUTH_HS256_SECRET to mint a token for JOBS_USER, default `dev`), and
last the file `make dev` writes (.local/dev-client.json), which is used only for a loopback URL.
On a terminal it prints tables and summaries; otherwise, or with --json, the API's JSON.
Errors are one line; an API error exits 1, an API that cannot be reached exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cli_schedules

if TYPE_CHECKING:
    from common.api.client import JobsClient
    from localstack.dev_client import DevClient

SCHEDULER_SUBJECT = "local-scheduler"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_SWEEP_URL = "http://127.0.0.1:8082"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- where the API is, and who we are ---------------------------------------------------------


def _dev_file(url: str | None) -> DevClient | None:
    """make dev's client file, if there is one and it may serve `url` (None: no URL was
    given). Never for a URL off this machine, and never in a deployed source tree."""
    try:
        from localstack.dev_client import DevClientFileError, is_loopback, read
    except ImportError:
        return None
    if url is not None and not is_loopback(url):
        return None
    try:
        dev = read()
    except DevClientFileError as exc:
        raise CliError(str(exc)) from None
    if dev is None or not (is_loopback(dev.submit_url) and is_loopback(dev.sweep_url)):
        return None
    return dev


def _mint(secret: str | None, subject: str, ttl_s: int = 3600) -> str:
    """A dev token signed with the dev secret (AUTH_HS256_SECRET or make dev's file)."""
    if not secret:
        raise CliError("no token: pass --token, set JOBS_TOKEN or AUTH_HS256_SECRET, "
                       "or start `make dev` (it writes .local/dev-client.json)")
    from common.api.auth import issue_dev_token

    return issue_dev_token(secret, subject, ttl_s=ttl_s)


def endpoint(
    url: str | None, token: str | None, *, file_url: str, default_url: str, subject: str
) -> tuple[str, Callable[[], str]]:
    """The URL and a token source, from flags or variables (already in `url` and `token`),
    else from make dev's file. The file's secret never signs a token for a non-loopback URL."""
    dev = _dev_file(url) if url is None or token is None else None
    url = url or (getattr(dev, file_url) if dev is not None else default_url)
    if token:
        fixed = token
        return url, lambda: fixed
    secret = os.environ.get("AUTH_HS256_SECRET") or (dev.secret if dev is not None else None)
    minted = _mint(secret, subject)  # once: it lasts an hour, far longer than a command
    return url, lambda: minted


def _client(url: str, token: Callable[[], str]) -> JobsClient:
    from common.api.client import InvalidUrl, JobsClient

    try:
        # A person is waiting: give up on a stopped stack within a second or so.
        return JobsClient(url, token, retries=2, backoff_s=0.25)
    except InvalidUrl as exc:
        raise CliError(str(exc)) from None


# -- commands ---------------------------------------------------------------------------------


def _emit(value: Any, as_json: bool, human: Callable[[], str]) -> None:
    if as_json:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        print(json.dumps(value, indent=2, sort_keys=True))
    else:
        print(human())


def progress_line(job: Any, tty: bool, width: int = 30) -> str:
    """The job's state and its last progress: a bar on a terminal, plain text otherwise."""
    from common.store.states import JobState

    progress, state = job.progress, JobState(job.state)
    text = f"{state.value:<10}"
    if progress is not None and not state.terminal:
        note = f" {progress.note}" if progress.note else ""
        if tty:
            filled = round(progress.fraction * width)
            text += (f" [{'#' * filled}{'.' * (width - filled)}] "
                     f"{progress.fraction:4.0%}{note[:30]}")
        else:
            text += f" {progress.fraction:.0%}{note}"
    return text


def _wait(api: JobsClient, job_id: str, timeout_s: float) -> Any:
    """Wait for the job to end (the server holds each poll up to a second and answers at once
    when the job ends), showing on stderr every state it passed through and its progress: each
    state change fetches the audit trail, so a change between two polls is shown too; progress
    is a bar redrawn in place on a terminal, a line per change otherwise."""
    from cli_render import Paint, state_change
    from common.api.client import WaitTimeout
    from common.store.states import JobState

    paint, shown, tty = Paint.for_stream(sys.stderr), 0, sys.stderr.isatty()
    bar = ""

    def show(job: Any) -> None:
        nonlocal shown, bar
        events = api.events(job.id)
        if events[shown:] and bar and tty:
            sys.stderr.write("\n")
            bar = ""
        for event in events[shown:]:
            sys.stderr.write(state_change(event, job.created_at, paint) + "\n")
        shown = len(events)
        # The trail may be newer than `job`: once it shows the end, no bar follows it.
        ended = bool(events) and JobState(events[-1].to_state).terminal
        if job.progress is not None and not job.state.terminal and not ended:
            line = progress_line(job, tty)
            if line != bar:
                sys.stderr.write("\r" + line.ljust(len(bar)) if tty else line + "\n")
                bar = line
        sys.stderr.flush()

    try:
        return api.wait(job_id, timeout_s, poll_s=0.1, server_wait_s=1.0, on_change=show)
    except WaitTimeout as exc:
        raise CliError(str(exc)) from None
    finally:
        if bar and tty:
            sys.stderr.write("\n")


def _jobs_command(args: argparse.Namespace, api: JobsClient, as_json: bool) -> int:
    import cli_render as r

    paint, now = r.Paint.for_stream(sys.stdout), datetime.now(UTC)
    if args.command == "submit":
        metadata = None
        if args.metadata:
            try:
                metadata = json.loads(args.metadata)
            except ValueError:
                raise CliError("--metadata is not valid JSON") from None
        job = api.submit(args.preset, args.content, metadata=metadata,
                         max_attempts=args.max_attempts, idempotency_key=args.idempotency_key,
                         **cli_schedules.submit_fields(args))
        if args.wait:
            job = _wait(api, str(job.id), args.timeout)
        _emit(job, as_json, lambda: r.job_summary(job, datetime.now(UTC), paint))
        return 0 if not args.wait or job.state == "COMPLETED" else 1
    if args.command == "schedule":
        answer = cli_schedules.run_schedule(args, api.call)
        _emit(answer, as_json, lambda: r.pretty(answer))
        return 0
    if args.command == "list":
        page = api.page(state=args.state, limit=args.limit, cursor=args.cursor)
        _emit(page, as_json, lambda: r.job_table(page.jobs, page.next_cursor, now, paint))
    elif args.command == "events":
        events = api.events(args.id)
        _emit({"events": [e.model_dump(mode="json") for e in events]}, as_json,
              lambda: r.timeline(events, paint))
    elif args.command == "stats":
        stats = api.stats()
        _emit(stats, as_json, lambda: r.stats_summary(stats, paint))
    else:
        action = {"get": api.get, "cancel": api.cancel, "retry": api.retry}[args.command]
        job = action(args.id)
        _emit(job, as_json, lambda: r.job_summary(job, now, paint))
    return 0


def _migrate() -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    from common.store.errors import DatabaseUnavailable

    cli_schedules.database_settings()  # a clear error if there is no database to migrate
    root = os.path.dirname(os.path.abspath(__file__))
    config = Config(os.path.join(root, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(root, "migrations"))
    try:
        command.upgrade(config, "head")
    except DatabaseUnavailable:
        raise CliError("cannot reach the database", code=2) from None
    except SQLAlchemyError as exc:
        if type(exc).__name__ in ("OperationalError", "InterfaceError"):  # never connected
            raise CliError(f"cannot reach the database: {cli_schedules.database_message(exc)}",
                           code=2) from None
        raise CliError(f"database error: {cli_schedules.database_message(exc)}") from None
    print("migrated to head")
    users = [u.strip() for u in os.environ.get("DB_APP_USERS", "").split(",") if u.strip()]
    if users:
        from common.settings import load_settings
        from common.store.engine import create_engine_from_settings, grant_app_role

        engine = create_engine_from_settings(load_settings(), autocommit=False)
        try:
            grant_app_role(engine, users)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        finally:
            engine.dispose()
        print("granted jobs_app to " + ", ".join(users))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python main.py", description="Drive the jobs pipeline.",
                                epilog="Without a terminal, output is JSON (as with --json).")
    p.add_argument("--url", default=os.environ.get("JOBS_API_URL"),
                   help=f"the submit API (JOBS_API_URL; make dev's, else {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("JOBS_TOKEN"))
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("token", help="print a dev HS256 token for USER")
    t.add_argument("user")
    t.add_argument("--ttl", type=int, default=86400, help="seconds (default a day)")
    s = sub.add_parser("submit", help="create a job")
    s.add_argument("--preset", required=True)
    s.add_argument("--content", required=True)
    s.add_argument("--metadata", help="JSON object; a preset's options go under 'options'")
    s.add_argument("--max-attempts", type=int)
    s.add_argument("--idempotency-key", help="default: a new one for this call")
    cli_schedules.add_submit_options(s)
    s.add_argument("--wait", action="store_true", help="show its states until it ends; "
                   "exit 1 unless COMPLETED")
    s.add_argument("--timeout", type=float, default=300)
    for name, text in (("get", "show a job"), ("events", "a job's audit trail, as a timeline"),
                       ("cancel", "cancel a job"), ("retry", "retry a FAILED job")):
        sub.add_parser(name, help=text).add_argument("id")
    ls = sub.add_parser("list", help="your jobs, newest first")
    ls.add_argument("--state")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--cursor", help="the next page, as the previous one named it")
    sub.add_parser("stats", help="your jobs per state, oldest pending, recent throughput")
    sub.add_parser("migrate", help="alembic upgrade head (DATABASE_URL or Cloud SQL); then "
                   "GRANT jobs_app to the users in DB_APP_USERS (comma-separated)")
    sw = sub.add_parser("sweep", help="run one maintenance pass")
    sw.add_argument("--sweep-url", default=os.environ.get("JOBS_SWEEP_URL"))
    sw.add_argument("--sweep-token", default=os.environ.get("JOBS_SWEEP_TOKEN"))
    sw.add_argument("--steps", nargs="*", help="rescue dead_letters schedules redispatch "
                    "parked retention webhooks (default: all)")
    cli_schedules.add_commands(sub)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    as_json = args.json or not sys.stdout.isatty()
    if args.command == "token":
        dev = None if os.environ.get("AUTH_HS256_SECRET") else _dev_file(None)
        print(_mint(os.environ.get("AUTH_HS256_SECRET") or (dev.secret if dev else None),
                    args.user, args.ttl))
        return 0
    if args.command == "migrate":
        _migrate()
        return 0
    if args.command == "limit":
        from cli_render import pretty

        limits = cli_schedules.run_limit(args)
        _emit(limits, as_json, lambda: pretty(limits))
        return 0
    if args.command == "sweep":
        url, token = endpoint(args.sweep_url, args.sweep_token, file_url="sweep_url",
                              default_url=DEFAULT_SWEEP_URL, subject=SCHEDULER_SUBJECT)
        body = {"steps": args.steps} if args.steps else None
        from cli_render import pretty

        summary = _client(url, token).call("POST", "/", body)
        _emit(summary, as_json, lambda: pretty(summary))
        return 0
    url, token = endpoint(args.url, args.token, file_url="submit_url", default_url=DEFAULT_URL,
                          subject=os.environ.get("JOBS_USER", "dev"))
    return _jobs_command(args, _client(url, token), as_json)


def main(argv: list[str] | None = None) -> int:
    from common.api.client import ClientError, Unreachable

    try:
        return run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `… | head` stopped reading: exit quietly, as `cat` would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141
    except Unreachable as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except (CliError, ClientError, cli_schedules.UsageError) as err:
        sys.stderr.write(f"error: {err}\n")
        return err.code if isinstance(err, CliError | cli_schedules.UsageError) else 1
