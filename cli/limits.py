"""The `limits` commands, on the typed client: the limits over your jobs, and your key limits.

    python main.py limits [list]          # your running limit and quotas, your keys, the presets
    python main.py limits get KEY
    python main.py limits set KEY [--max-running N] [--max-starts N --interval-s S | --rate 60/1m]
    python main.py limits delete KEY

A key limit is yours alone (`PUT /limits/{key}`): jobs you submit with `--limit-key KEY` fall
under it. `set` replaces the whole limit: what it is not given is no limit. The presets' limits
are the deployment's (PRESET_LIMITS), shown but not set here. (`limit`, without the s, is the
operator's per-owner setting, in the database: cli/operator.py.)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobs_client import JobsClient, Limits, LimitView

from cli import render as r
from cli.schedules import UsageError

_RATE = re.compile(r"^([0-9]+)/([0-9]+(?:\.[0-9]+)?)?([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def add_commands(sub: Any) -> None:
    lim = sub.add_parser("limits", help="the limits over your jobs: your running limit and "
                         "quotas at the door, your key limits, the presets'; set your own keys'")
    lsub = lim.add_subparsers(dest="limits_command")
    lsub.add_parser("list", help="all of them (the same as `limits` alone)")
    lsub.add_parser("get", help="one of your key limits").add_argument("key")
    st = lsub.add_parser("set", help="set your limit for KEY, replacing it whole (what is not "
                         "given is no limit); jobs submitted with --limit-key KEY fall under it")
    st.add_argument("key")
    st.add_argument("--max-running", type=int, metavar="N",
                    help="at most N of its jobs running at once (1 to 100000)")
    st.add_argument("--max-starts", type=int, metavar="N",
                    help="at most N starts per --interval-s (1 to 1000000)")
    st.add_argument("--interval-s", type=float, metavar="S",
                    help="the rate's interval in seconds (up to 604800, a week)")
    st.add_argument("--rate", metavar="N/DURATION", help="the rate in one: 60/1m, 5/1s, "
                    "1000/1h, 60/m (instead of --max-starts and --interval-s)")
    lsub.add_parser("delete", help="remove your limit for KEY; the jobs it held are let go"
                    ).add_argument("key")


def rate(text: str) -> tuple[int, float]:
    """`60/1m`, `5/1s`, `3/0.5s` as (starts, interval in seconds); `60/m` is 60 a minute."""
    match = _RATE.match(text.strip())
    if match is None or (match.group(2) is None and not match.group(3)):
        raise UsageError(f"--rate takes N/DURATION, such as 60/1m, 5/1s or 60/m, not {text!r}")
    return int(match.group(1)), float(match.group(2) or 1) * _UNITS[match.group(3)]


def run(args: argparse.Namespace, api: JobsClient, as_json: bool) -> int:
    from cli.jobs import emit

    paint, now = r.Paint.for_stream(sys.stdout), datetime.now(UTC)
    command = args.limits_command or "list"
    if command == "list":
        limits = api.limits()
        emit(limits, as_json, lambda: limits_text(limits, now, paint))
    elif command == "delete":
        api.delete_limit(args.key)
        emit({"deleted": args.key}, as_json, lambda: f"deleted your limit for {args.key}")
    else:
        limit = api.get_limit(args.key) if command == "get" else _set(args, api)
        emit(limit, as_json, lambda: limit_text(limit, now, paint))
    return 0


def _set(args: argparse.Namespace, api: JobsClient) -> LimitView:
    starts, interval = args.max_starts, args.interval_s
    if args.rate is not None:
        if starts is not None or interval is not None:
            raise UsageError("give --rate, or --max-starts with --interval-s, not both")
        starts, interval = rate(args.rate)
    if args.max_running is None and starts is None and interval is None:
        raise UsageError("give --max-running, or a rate (--rate, or --max-starts with "
                         "--interval-s): a limit that limits nothing is `limits delete`")
    return api.set_limit(args.key, max_running=args.max_running, max_starts=starts,
                         interval_s=interval)


def _rate_text(limit: LimitView) -> str:
    if limit.max_starts is None or limit.interval_s is None:
        return "-"
    return f"{limit.max_starts} per {limit.interval_s:g} s"


def _next_text(limit: LimitView, now: datetime) -> str:
    if limit.next_at is None:
        return "-"
    return "now" if limit.next_at <= now else "in " + r.age((limit.next_at - now).total_seconds())


def _running_text(limit: LimitView) -> str:
    if limit.max_running is None:
        return "-"
    return f"{limit.running} of {limit.max_running}"


def limit_text(limit: LimitView, now: datetime, paint: r.Paint) -> str:
    """One limit, field by field."""
    lines = [("limit", limit.name), ("running", _running_text(limit)),
             ("rate", _rate_text(limit)), ("next slot", _next_text(limit, now))]
    return "\n".join(f"{paint.dim(k.ljust(9))}  {v}" for k, v in lines)


def limits_text(limits: Limits, now: datetime, paint: r.Paint) -> str:
    """Your running limit and quotas, then one row per key limit and preset limit."""
    cap = str(limits.max_running) if limits.max_running else "unlimited"
    whose = "your override" if limits.override is not None else "the stack's default"
    door = ", ".join(f"{name} {value or 'unlimited'}" for name, value in (
        ("submits/s", limits.max_submits_per_s), ("pending", limits.max_pending),
        ("waits", limits.max_waits)))
    head = [f"{paint.dim('running'.ljust(7))}  {limits.running} of {cap} ({whose})",
            f"{paint.dim('door'.ljust(7))}  {door}"]
    rows: Sequence[tuple[str, ...]] = [
        (kind, lim.name, _running_text(lim), _rate_text(lim), _next_text(lim, now))
        for kind, found in (("key", limits.keys), ("preset", limits.presets)) for lim in found]
    if not rows:
        return "\n".join([*head, "no key or preset limits"])
    return "\n".join([*head, r.table(("KIND", "NAME", "RUNNING", "RATE", "NEXT SLOT"), rows,
                                     paint)])
