"""The command line: `python main.py <command>`. It talks to the HTTP API like any other client
(URL and token from flags or the environment); only `migrate` touches the database directly.

    python main.py token alice                       # a dev HS256 token (needs the secret)
    python main.py submit --preset text-stats --content "Hello there." --wait
    python main.py get ID | list --state FAILED | events ID | cancel ID | retry ID | stats
    python main.py sweep                             # one maintenance pass, as the scheduler
    python main.py migrate                           # alembic upgrade head

Environment: JOBS_API_URL (default http://127.0.0.1:8080), JOBS_TOKEN, JOBS_SWEEP_URL (default
http://127.0.0.1:8082), JOBS_SWEEP_TOKEN, AUTH_HS256_SECRET (for `token`, and to mint tokens
when none is given). Errors print the problem's title and exit 1; an unreachable API exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import cli_schedules

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
SCHEDULER_SUBJECT = "local-scheduler"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _mint(subject: str, ttl_s: int = 3600) -> str:
    """A dev token signed with AUTH_HS256_SECRET (`make dev` prints it)."""
    secret = os.environ.get("AUTH_HS256_SECRET")
    if not secret:
        raise CliError("no token: pass --token, set JOBS_TOKEN, or set AUTH_HS256_SECRET")
    from common.api.auth import issue_dev_token

    return issue_dev_token(secret, subject, ttl_s=ttl_s)


def _call(base: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise CliError(f"not an http(s) URL: {base}")
    data = json.dumps(body).encode() if body is not None else None
    # The scheme was checked just above: only http(s) is ever opened.
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)  # noqa: S310
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            raise CliError(f"HTTP {err.code}") from None
        detail = problem.get("detail") or ", ".join(
            f"{p['name']}: {p['reason']}" for p in problem.get("invalid_params") or []
        )
        title = problem.get("title", "error")
        raise CliError(title + (f": {detail}" if detail else "")) from None
    except (urllib.error.URLError, OSError) as err:
        raise CliError(f"cannot reach {base}: {getattr(err, 'reason', err)}", code=2) from None
    return json.loads(raw) if raw else None


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _wait(api: Any, job_id: str, timeout_s: float) -> Any:
    """Poll until the job ends, showing each state it passes through on stderr."""
    started, last, spin = time.monotonic(), None, 0
    while True:
        job = api("GET", f"/jobs/{job_id}")
        if job["state"] != last:
            sys.stderr.write(("\n" if last else "") + f"{job['state']:<10}")
            last = job["state"]
        else:
            sys.stderr.write("." if spin % 10 == 0 else "")
        spin += 1
        sys.stderr.flush()
        if job["state"] in TERMINAL:
            sys.stderr.write(f"  ({time.monotonic() - started:.1f} s)\n")
            return job
        if time.monotonic() - started > timeout_s:
            sys.stderr.write("\n")
            raise CliError(f"still {job['state']} after {timeout_s:g} s")
        time.sleep(0.1)


def _migrate() -> None:
    from alembic import command
    from alembic.config import Config

    root = os.path.dirname(os.path.abspath(__file__))
    config = Config(os.path.join(root, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(root, "migrations"))
    command.upgrade(config, "head")
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
    p = argparse.ArgumentParser(prog="python main.py", description="Drive the jobs pipeline.")
    p.add_argument("--url", default=os.environ.get("JOBS_API_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("JOBS_TOKEN"))
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("token", help="print a dev HS256 token for USER")
    t.add_argument("user")
    t.add_argument("--ttl", type=int, default=86400, help="seconds (default a day)")
    s = sub.add_parser("submit", help="create a job")
    s.add_argument("--preset", required=True)
    s.add_argument("--content", required=True)
    s.add_argument("--metadata", help="JSON object; a preset's options go under 'options'")
    s.add_argument("--max-attempts", type=int)
    s.add_argument("--idempotency-key")
    cli_schedules.add_submit_options(s)
    s.add_argument("--wait", action="store_true", help="wait until the job ends")
    s.add_argument("--timeout", type=float, default=300)
    for name, text in (("get", "show a job"), ("events", "a job's audit trail"),
                       ("cancel", "cancel a job"), ("retry", "retry a FAILED job")):
        sub.add_parser(name, help=text).add_argument("id")
    ls = sub.add_parser("list", help="your jobs, newest first")
    ls.add_argument("--state")
    ls.add_argument("--limit", type=int, default=20)
    sub.add_parser("stats", help="queue depth per state, oldest pending, recent throughput")
    sub.add_parser("migrate", help="alembic upgrade head (DATABASE_URL or Cloud SQL); then "
                   "GRANT jobs_app to the users in DB_APP_USERS (comma-separated)")
    cli_schedules.add_commands(sub)
    sw = sub.add_parser("sweep", help="run one maintenance pass")
    sw.add_argument("--sweep-url", default=os.environ.get("JOBS_SWEEP_URL",
                                                          "http://127.0.0.1:8082"))
    sw.add_argument("--sweep-token", default=os.environ.get("JOBS_SWEEP_TOKEN"))
    sw.add_argument("--steps", nargs="*",
                    help="rescue schedules parked redispatch dead_letters retention")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "token":
        print(_mint(args.user, args.ttl))
        return 0
    if args.command == "migrate":
        _migrate()
        return 0
    if args.command == "sweep":
        token = args.sweep_token or _mint(SCHEDULER_SUBJECT)
        body = {"steps": args.steps} if args.steps else None
        _print(_call(args.sweep_url, token, "POST", "/", body))
        return 0
    if args.command == "limit":
        _print(cli_schedules.run_limit(args))
        return 0
    token = args.token or _mint(os.environ.get("JOBS_USER", "dev"))

    def api(method: str, path: str, body: Any = None) -> Any:
        return _call(args.url, token, method, path, body)

    if args.command == "schedule":
        _print(cli_schedules.run_schedule(args, api))
        return 0
    if args.command == "submit":
        body: dict[str, Any] = {"preset": args.preset, "content": args.content,
                                **cli_schedules.submit_fields(args)}
        if args.metadata:
            try:
                body["metadata"] = json.loads(args.metadata)
            except ValueError:
                raise CliError("--metadata is not valid JSON") from None
        if args.max_attempts:
            body["max_attempts"] = args.max_attempts
        if args.idempotency_key:
            body["idempotency_key"] = args.idempotency_key
        job = api("POST", "/jobs", body)
        if args.wait:
            job = _wait(api, job["id"], args.timeout)
        _print(job)
        return 0 if not args.wait or job["state"] == "COMPLETED" else 1
    if args.command == "list":
        query = {"limit": str(args.limit), **({"state": args.state} if args.state else {})}
        _print(api("GET", "/jobs?" + urllib.parse.urlencode(query)))
        return 0
    paths = {
        "get": ("GET", "/jobs/{id}"),
        "events": ("GET", "/jobs/{id}/events"),
        "cancel": ("POST", "/jobs/{id}/cancel"),
        "retry": ("POST", "/jobs/{id}/retry"),
        "stats": ("GET", "/stats"),
    }
    method, path = paths[args.command]
    job_id = urllib.parse.quote(getattr(args, "id", ""), safe="")
    _print(api(method, path.format(id=job_id), {} if method == "POST" else None))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except CliError as err:
        sys.stderr.write(f"error: {err}\n")
        return err.code
    except cli_schedules.UsageError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
