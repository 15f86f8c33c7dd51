"""The command line's schedule commands and run-later options, on the typed client.

    python main.py submit --preset echo --content hi --in 10m      # or --at 2026-12-01T09:00:00Z
    python main.py schedule add --cron '*/15 9-17 * * MON-FRI' --timezone Europe/Riga \\
        --preset text-stats --content 'Hello' [--overlap allow] [--catch-up all] [--paused]
    python main.py schedule edit ID [--cron C] [--timezone Z] [--overlap O] [--catch-up C] \\
        [--preset P --content T [--metadata J] [--max-attempts N] [--priority N]
         [--limit-key K]]
    python main.py schedule add --cron '0 3 * * *' --workflow nightly.json
    python main.py schedule list | get ID | pause ID | resume ID | delete ID | events ID

`edit` changes only what it is given, as `PATCH /schedules/{id}` does. The job a schedule
creates is replaced whole (the API never echoes its content back), so changing it takes
--preset and --content together.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING, Any, cast

from jobs_client import JobTemplate, template

if TYPE_CHECKING:
    from jobs_client import JobsClient

_DURATION = re.compile(r"^([0-9]+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
# The job's own options, which `edit` can only send with the whole job (--preset, --content).
_JOB_ONLY = ("metadata", "max_attempts", "callback_url", "priority", "limit_key")


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


def add_flow_options(p: argparse.ArgumentParser) -> None:
    """A job's priority and limit key, for submit and for a schedule's job."""
    p.add_argument("--priority", type=int, metavar="N", help="0 to 9 (default 5): higher goes "
                   "first where jobs compete for a slot")
    p.add_argument("--limit-key", metavar="KEY", help="your limits for KEY (`limits set KEY`) "
                   "apply to the job")


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


def metadata(text: str | None) -> dict[str, Any] | None:
    """--metadata as a JSON object (None when not given)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise UsageError("--metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise UsageError("--metadata must be a JSON object")
    return cast(dict[str, Any], value)


def _job_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--preset", required=required)
    p.add_argument("--content", required=required)
    p.add_argument("--metadata", help="JSON object; a preset's options go under 'options'")
    p.add_argument("--max-attempts", type=int, help="1 to 100 (default: the preset's)")
    p.add_argument("--callback-url", help="each fired job POSTs its end here, signed")
    add_flow_options(p)


def _when_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    p.add_argument("--cron", required=defaults, help="5 fields, e.g. '*/15 9-17 * * MON-FRI'")
    p.add_argument("--timezone", default="UTC" if defaults else None,
                   help="IANA zone" + (" (default UTC)" if defaults else ""))
    p.add_argument("--overlap", choices=["skip", "allow"])
    p.add_argument("--catch-up", choices=["once", "all"])


def add_commands(sub: Any) -> None:
    sc = sub.add_parser("schedule", help="recurring jobs: add, edit, list, pause, resume, delete")
    ssub = sc.add_subparsers(dest="schedule_command", required=True)
    add = ssub.add_parser("add", help="create a schedule")
    _when_options(add, defaults=True)
    _job_options(add, required=False)
    add.add_argument("--workflow", metavar="FILE", help="each fire starts the workflow of this "
                     "JSON file (as POST /workflows takes it, without idempotency_key) instead "
                     "of a job")
    add.add_argument("--paused", action="store_true", help="create it paused")
    edit = ssub.add_parser("edit", help="change a schedule: only what is given changes; the "
                           "job is replaced whole (--preset and --content together)")
    edit.add_argument("id")
    _when_options(edit, defaults=False)
    _job_options(edit, required=False)
    ssub.add_parser("list", help="your schedules, newest first")
    for name, text in (("get", "show a schedule"), ("pause", "pause a schedule"),
                       ("resume", "resume it, planned from now (no catch-up of the pause)"),
                       ("delete", "delete a schedule"), ("events", "its fires and skips")):
        ssub.add_parser(name, help=text).add_argument("id")


def _template(args: argparse.Namespace) -> JobTemplate:
    return template(args.preset, args.content, metadata=metadata(args.metadata),
                    max_attempts=args.max_attempts, callback_url=args.callback_url,
                    priority=args.priority, limit_key=args.limit_key)


def _add_workflow(args: argparse.Namespace, api: JobsClient) -> Any:
    """A schedule whose fires start a workflow (the job's options do not apply)."""
    from jobs_client import ScheduleView

    from cli.workflows import read_workflow

    if args.preset is not None or args.content is not None:
        raise UsageError("give a job (--preset, --content) or --workflow FILE, not both")
    body: dict[str, Any] = {"cron": args.cron, "timezone": args.timezone,
                            "workflow": read_workflow(args.workflow)}
    body.update({k: v for k, v in (("overlap", args.overlap), ("catch_up", args.catch_up))
                 if v is not None})
    if args.paused:
        body["enabled"] = False
    return ScheduleView.model_validate(api.call("POST", "/schedules", body))


def run_schedule(args: argparse.Namespace, api: JobsClient) -> Any:
    """The command's answer: a model (shown as a summary or a table) or a plain value."""
    cmd = args.schedule_command
    if cmd == "add" and args.workflow:
        return _add_workflow(args, api)
    if cmd == "add":
        if args.preset is None or args.content is None:
            raise UsageError("give --preset and --content (a job), or --workflow FILE")
        return api.create_schedule(args.cron, _template(args), timezone=args.timezone,
                                   enabled=not args.paused, overlap=args.overlap,
                                   catch_up=args.catch_up)
    if cmd == "list":
        return api.schedules(limit=100)
    if cmd == "get":
        return api.schedule(args.id)
    if cmd == "events":
        return api.schedule_events(args.id)
    if cmd == "delete":
        api.delete_schedule(args.id)
        return {"deleted": args.id}
    if cmd == "edit":
        job = None
        if args.preset is not None or args.content is not None:
            if args.preset is None or args.content is None:
                raise UsageError("the job is replaced whole: give --preset and --content together"
                                 " (the API never shows a schedule's content, so it cannot be "
                                 "kept)")
            job = _template(args)
        elif any(getattr(args, name) is not None for name in _JOB_ONLY):
            raise UsageError("--metadata, --max-attempts, --callback-url, --priority and "
                             "--limit-key change the job: give --preset and --content with "
                             "them")
        return api.update_schedule(args.id, cron=args.cron, timezone=args.timezone, job=job,
                                   overlap=args.overlap, catch_up=args.catch_up)
    return api.update_schedule(args.id, enabled=cmd == "resume")
