"""The command line's entry: where the API is, who we are, the parser, and one-line errors.
The commands live beside it: cli/jobs.py, cli/flow.py, cli/limits.py, cli/schedules.py,
cli/workflows.py, cli/operator.py; how
things are shown, cli/render.py. See cli/__init__.py for the commands and where the API is found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobs_client import ClientError, InvalidUrl, JobsClient, Unreachable

from cli import flow, jobs, limits, operator, render, schedules, workflows
from cli.schedules import UsageError

if TYPE_CHECKING:
    from localstack.dev_client import DevClient

SCHEDULER_SUBJECT = "local-scheduler"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_SWEEP_URL = "http://127.0.0.1:8082"


CliError = UsageError  # one kind of error the user must act on; `code` is the exit status


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
    try:
        # A person is waiting: give up on a stopped stack within a second or so.
        # Over a quota at the door (429): say so at once, with its Retry-After.
        return JobsClient(url, token, retries=2, backoff_s=0.25, retry_limited=False)
    except InvalidUrl as exc:
        raise CliError(str(exc)) from None


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
    jobs.add_commands(sub)
    flow.add_commands(sub)
    limits.add_commands(sub)
    schedules.add_commands(sub)
    workflows.add_commands(sub)
    operator.add_commands(sub)
    sw = sub.add_parser("sweep", help="run one maintenance pass")
    sw.add_argument("--sweep-url", default=os.environ.get("JOBS_SWEEP_URL"))
    sw.add_argument("--sweep-token", default=os.environ.get("JOBS_SWEEP_TOKEN"))
    sw.add_argument("--steps", nargs="*", help="rescue dead_letters schedules redispatch "
                    "parked retention webhooks (default: all)")
    _json_everywhere(p)
    return p


def _json_everywhere(p: argparse.ArgumentParser) -> None:
    """`--json` after any command too (`python main.py list --json`), as before it."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                     help="print the API's JSON")
                _json_everywhere(command)


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    as_json = args.json or not sys.stdout.isatty()
    if args.command == "token":
        dev = None if os.environ.get("AUTH_HS256_SECRET") else _dev_file(None)
        minted = _mint(os.environ.get("AUTH_HS256_SECRET") or (dev.secret if dev else None),
                       args.user, args.ttl)
        # The bare token unless --json is asked for: `TOKEN=$(python main.py token alice)`.
        jobs.emit({"token": minted, "subject": args.user, "ttl_s": args.ttl}, args.json,
                  lambda: minted)
        return 0
    if args.command == "migrate":
        done = operator.migrate()
        if done["migrated_to"] is None:  # behind a newer database: said on stderr, exit 0
            jobs.emit(done, args.json, lambda: "")
            return 0
        jobs.emit(done, args.json, lambda: "migrated to head" + (
            "\ngranted jobs_app to " + ", ".join(done["granted"]) if done["granted"] else ""))
        return 0
    if args.command == "sweep":
        url, token = endpoint(args.sweep_url, args.sweep_token, file_url="sweep_url",
                              default_url=DEFAULT_SWEEP_URL, subject=SCHEDULER_SUBJECT)
        body = {"steps": args.steps} if args.steps else None
        summary = _client(url, token).call("POST", "/", body)
        jobs.emit(summary, as_json, lambda: render.pretty(summary))
        return 0

    def api() -> JobsClient:
        url, token = endpoint(args.url, args.token, file_url="submit_url",
                              default_url=DEFAULT_URL, subject=os.environ.get("JOBS_USER", "dev"))
        return _client(url, token)

    if args.command == "limit":
        owners = operator.run_limit(args, lambda: api().limits().default_max_running)
        jobs.emit(owners, as_json, lambda: render.pretty(owners))
        return 0
    if args.command == "limits":
        return limits.run(args, api(), as_json)
    if args.command == "submit-many":
        total = flow.submit_many(api(), args.file, args.key_prefix)
        jobs.emit(total, as_json, lambda: flow.summary(total))
        return 1 if total["refused"] else 0
    if args.command == "workflow":
        answer = workflows.run(args, api())
        jobs.emit(answer, as_json, lambda: workflows.show(answer))
        return 0
    if args.command in ("bulk-cancel", "bulk-retry"):
        outcome, text = flow.bulk(args, api(), as_json)
        jobs.emit(outcome, as_json, lambda: text)
        return 0
    return jobs.run(args, api(), as_json)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `… | head` stopped reading: exit quietly, as `cat` would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141
    except Unreachable as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except (UsageError, ClientError) as err:
        sys.stderr.write(f"error: {err}\n")
        return err.code if isinstance(err, UsageError) else 1
