"""The command line's schedule commands and run-later options, wired into cli.py.

    python main.py submit --preset echo --content hi --in 10m      # or --at 2026-12-01T09:00:00Z
    python main.py schedule add --cron '*/15 9-17 * * MON-FRI' --timezone Europe/Riga \\
        --preset text-stats --content 'Hello' [--overlap allow] [--catch-up all] [--paused]
    python main.py schedule list | pause ID | resume ID | delete ID | events ID
    python main.py limit set OWNER N | limit clear OWNER | limit list     # operators: database
    python main.py limit quota OWNER submits-per-s|pending N|clear

`limit` talks to the database, like `migrate`: limits are an operator's setting, not an
owner's. It finds it in DATABASE_URL (or INSTANCE_CONNECTION_NAME for Cloud SQL), else in the
file `make dev` writes. An owner is always namespaced by who vouches for it: `hs256:<sub>` for
a dev or service token's subject, `google:<sub>` for a Google identity.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

Api = Callable[..., Any]
_DURATION = re.compile(r"^([0-9]+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_OWNER = re.compile(r"^(hs256|google):.+$", re.S)


class UsageError(Exception):
    """A command the user must change; `code` 2 when the database cannot be reached."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def seconds(text: str) -> int:
    """`90`, `90s`, `10m`, `2h`, `1d` as seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(f"--in takes a duration such as 90s, 10m, 2h or 1d, not {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def add_submit_options(submit: argparse.ArgumentParser) -> None:
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--at", help="run at this RFC 3339 time (with an offset)")
    when.add_argument("--in", dest="delay", help="run after this long: 90s, 10m, 2h, 1d")


def submit_fields(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "at", None):
        return {"run_at": args.at}
    if getattr(args, "delay", None):
        return {"delay_s": seconds(args.delay)}
    return {}


def add_commands(sub: Any) -> None:
    sc = sub.add_parser("schedule", help="recurring jobs: add, list, pause, resume, delete")
    ssub = sc.add_subparsers(dest="schedule_command", required=True)
    add = ssub.add_parser("add", help="create a schedule")
    add.add_argument("--cron", required=True, help="5 fields, e.g. '*/15 9-17 * * MON-FRI'")
    add.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
    add.add_argument("--preset", required=True)
    add.add_argument("--content", required=True)
    add.add_argument("--metadata", help="JSON object; a preset's options go under 'options'")
    add.add_argument("--max-attempts", type=int)
    add.add_argument("--overlap", choices=["skip", "allow"])
    add.add_argument("--catch-up", choices=["once", "all"])
    add.add_argument("--paused", action="store_true", help="create it paused")
    ssub.add_parser("list", help="your schedules, newest first")
    for name, text in (("get", "show a schedule"), ("pause", "pause a schedule"),
                       ("resume", "resume a schedule (from its next fire time)"),
                       ("delete", "delete a schedule"), ("events", "its fires and skips")):
        ssub.add_parser(name, help=text).add_argument("id")
    lim = sub.add_parser("limit", help="per-owner running limits and quotas at the door "
                         "(operators; database)")
    lsub = lim.add_subparsers(dest="limit_command", required=True)
    st = lsub.add_parser("set", help="at most N PROCESSING jobs for OWNER (0 = unlimited)")
    st.add_argument("owner", help="a namespaced owner, e.g. hs256:alice or google:123")
    st.add_argument("n", type=int)
    lsub.add_parser("clear", help="remove OWNER's override").add_argument("owner")
    qt = lsub.add_parser("quota", help="OWNER's quota at the door: submits per second (per "
                         "instance) or PENDING jobs; N (0 = unlimited) or `clear` for the default")
    qt.add_argument("owner", help="a namespaced owner, e.g. hs256:alice or google:123")
    qt.add_argument("quota", choices=sorted(QUOTA_NAMES))
    qt.add_argument("value", help="N, or clear")
    lsub.add_parser("list", help="the owners with an override, and how many jobs each runs now; "
                    "`default` is OWNER_MAX_RUNNING as this shell sets it")


def run_schedule(args: argparse.Namespace, api: Api) -> Any:
    cmd = args.schedule_command
    if cmd == "add":
        job: dict[str, Any] = {"preset": args.preset, "content": args.content}
        if args.metadata:
            try:
                job["metadata"] = json.loads(args.metadata)
            except ValueError:
                raise UsageError("--metadata is not valid JSON") from None
        if args.max_attempts:
            job["max_attempts"] = args.max_attempts
        body: dict[str, Any] = {"cron": args.cron, "timezone": args.timezone, "job": job}
        if args.overlap:
            body["overlap"] = args.overlap
        if args.catch_up:
            body["catch_up"] = args.catch_up
        if args.paused:
            body["enabled"] = False
        return api("POST", "/schedules", body)
    if cmd == "list":
        return api("GET", "/schedules?limit=100")
    path = "/schedules/" + urllib.parse.quote(args.id, safe="")
    if cmd == "get":
        return api("GET", path)
    if cmd == "events":
        return api("GET", path + "/events")
    if cmd == "delete":
        api("DELETE", path)
        return {"deleted": args.id}
    return api("PATCH", path, {"enabled": cmd == "resume"})


def database_settings() -> Any:
    """Settings for a command that talks to the database: the variables, else `make dev`'s
    database (its file is only ever written by make dev, for a loopback server)."""
    import os

    from common.settings import SettingsError, load_settings

    if not (os.environ.get("DATABASE_URL") or os.environ.get("INSTANCE_CONNECTION_NAME")):
        try:
            from localstack import dev_client
        except ImportError:  # a deployed tree has no localstack
            dev_client = None  # type: ignore[assignment]
        if dev_client is not None:
            try:
                dev = dev_client.read()
            except dev_client.DevClientFileError as exc:
                raise UsageError(str(exc)) from None
            if dev is not None and dev.database_url:
                os.environ["DATABASE_URL"] = dev.database_url
    try:
        return load_settings()
    except SettingsError as exc:
        reason = str(exc).replace("Value error, ", "")
        raise UsageError(f"{reason} (or start `make dev`, whose database is used then)") from None


def database_message(exc: BaseException) -> str:
    """The server's own words (pg8000 carries them as a dict: M is the message), one line."""
    orig = getattr(exc, "orig", exc)
    detail = orig.args[0] if orig.args else orig
    if isinstance(detail, dict):
        detail = detail.get("M", detail)
    return " ".join(str(detail).split())[:200]


QUOTA_NAMES = {"submits-per-s": "max_submits_per_s", "pending": "max_pending"}


def _quota_value(raw: str) -> int | None:
    if raw == "clear":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise UsageError(f"a quota is a whole number (0 = unlimited) or `clear`, not {raw!r}")
    return int(raw)


def run_limit(args: argparse.Namespace) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from common.store.engine import create_engine_from_settings
    from common.store.errors import DatabaseUnavailable, InvalidInput
    from common.store.job_store import JobStore

    owner: str = getattr(args, "owner", "")
    if args.limit_command != "list" and not _OWNER.match(owner):
        raise UsageError(f"owner {owner!r} names no one: owners are namespaced, e.g. "
                         "hs256:alice (the subject of a dev or service token) or google:<sub>")
    settings = database_settings()
    engine = create_engine_from_settings(settings)
    try:
        store = JobStore(engine, settings)
        try:
            if args.limit_command == "set":
                store.set_owner_limit(owner, args.n)
            elif args.limit_command == "clear":
                if not any(row["owner_id"] == owner and row["max_running"] is not None
                           for row in store.owner_limits()):
                    raise UsageError(f"{owner} has no override to clear")
                store.set_owner_limit(owner, None)
            elif args.limit_command == "quota":
                store.set_owner_quota(owner, QUOTA_NAMES[args.quota], _quota_value(args.value))
            return {"default": settings.owner_max_running,
                    "quota_defaults": {"max_submits_per_s": settings.owner_max_submits_per_s,
                                       "max_pending": settings.owner_max_pending},
                    "owners": store.owner_limits()}
        except InvalidInput as exc:
            raise UsageError(f"{exc.field}: {exc.message}") from None
        except DatabaseUnavailable:
            raise UsageError("cannot reach the database", code=2) from None
        except SQLAlchemyError as exc:  # no such database, no such table (not migrated), …
            raise UsageError(f"database error: {database_message(exc)}") from None
    finally:
        engine.dispose()
