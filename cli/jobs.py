"""The job commands, on the typed client: submit (and wait), get, list, events, cancel, retry,
stats, history and the webhook secret. (The caller's limits: cli/limits.py.)

On a terminal they print tables and summaries (cli/render.py); otherwise, or with --json, the
API's JSON, exactly as the client received it (fields a newer server adds included).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobs_client import JobsClient, JobState, JobView, WaitTimeout

from cli import render as r
from cli import schedules
from cli.schedules import UsageError


def add_commands(sub: Any) -> None:
    s = sub.add_parser("submit", help="create a job")
    s.add_argument("--preset", required=True)
    s.add_argument("--content", required=True)
    s.add_argument("--metadata", help="JSON object; a preset's options go under 'options'")
    s.add_argument("--max-attempts", type=int, help="1 to 100 (default: the preset's)")
    s.add_argument("--idempotency-key", help="default: a new one for this call")
    s.add_argument("--callback-url", help="POST the job's end here, signed (Standard Webhooks; "
                   "see `webhook-secret rotate`)")
    schedules.add_flow_options(s)
    schedules.add_submit_options(s)
    s.add_argument("--wait", action="store_true", help="show its states until it ends; "
                   "exit 1 unless COMPLETED")
    s.add_argument("--timeout", type=float, default=300)
    g = sub.add_parser("get", help="show a job: state, progress, due time, priority, why it "
                       "waits, callback, trace")
    g.add_argument("id")
    g.add_argument("--wait", type=float, metavar="S", help="let the server hold the answer up "
                   "to S seconds (at most 30), answering as soon as the job ends")
    for name, text in (("events", "a job's audit trail, as a timeline"),
                       ("cancel", "cancel a job"), ("retry", "retry a FAILED job")):
        sub.add_parser(name, help=text).add_argument("id")
    ls = sub.add_parser("list", help="your jobs, newest first, with when each is due")
    ls.add_argument("--state", choices=[s.value for s in JobState])
    ls.add_argument("--preset")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--cursor", help="the next page, as the previous one named it")
    sub.add_parser("stats", help="your jobs per state, oldest due, due and parked, throughput")
    hist = sub.add_parser("history", help="your jobs that ended per minute (last hour) or per "
                          "quarter hour (last day), by end state")
    hist.add_argument("--window", choices=["hour", "day"], default="hour")
    sub.add_parser("health", help="whether the API answers and reaches its database "
                   "(exit 1 if not)")
    ws = sub.add_parser("webhook-secret", help="your webhooks' signing secret")
    ws.add_subparsers(dest="webhook_command", required=True).add_parser(
        "rotate", help="a new secret, printed once; the previous one keeps signing for the "
        "grace period")


def emit(value: Any, as_json: bool, human: Callable[[], str]) -> None:
    if as_json:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
        print(json.dumps(value, indent=2, sort_keys=True))
    else:
        print(human())


def progress_line(job: JobView, tty: bool, width: int = 30) -> str:
    """The job's state and its last progress: a bar on a terminal, plain text otherwise."""
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


def wait(api: JobsClient, job_id: str, timeout_s: float) -> JobView:
    """Wait for the job to end (the server holds each poll up to a second and answers at once
    when the job ends), showing on stderr every state it passed through and its progress: each
    state change fetches the audit trail, so a change between two polls is shown too; progress
    is a bar redrawn in place on a terminal, a line per change otherwise."""
    paint, shown, tty = r.Paint.for_stream(sys.stderr), 0, sys.stderr.isatty()
    bar = ""

    def show(job: JobView) -> None:
        nonlocal shown, bar
        events = api.events(job.id)
        if events[shown:] and bar and tty:
            sys.stderr.write("\n")
            bar = ""
        for event in events[shown:]:
            sys.stderr.write(r.state_change(event, job.created_at, paint) + "\n")
        shown = len(events)
        # The trail may be newer than `job`: once it shows the end, no bar follows it.
        ended = bool(events) and events[-1].to_state.terminal
        if job.progress is not None and not job.state.terminal and not ended:
            line = progress_line(job, tty)
            if line != bar:
                sys.stderr.write("\r" + line.ljust(len(bar)) if tty else line + "\n")
                bar = line
        sys.stderr.flush()

    try:
        return api.wait(job_id, timeout_s, poll_s=0.1, server_wait_s=1.0, on_change=show)
    except WaitTimeout as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar and tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace, api: JobsClient, as_json: bool) -> int:
    paint, now = r.Paint.for_stream(sys.stdout), datetime.now(UTC)
    command = args.command
    if command == "submit":
        job = api.submit(args.preset, args.content, metadata=schedules.metadata(args.metadata),
                         max_attempts=args.max_attempts, idempotency_key=args.idempotency_key,
                         callback_url=args.callback_url, priority=args.priority,
                         limit_key=args.limit_key, **schedules.submit_fields(args))
        if args.wait:
            job = wait(api, str(job.id), args.timeout)
        emit(job, as_json, lambda: r.job_summary(job, datetime.now(UTC), paint))
        return 0 if not args.wait or job.state == "COMPLETED" else 1
    if command == "schedule":
        answer = schedules.run_schedule(args, api)
        emit(answer, as_json, lambda: _schedule_text(answer, now, paint))
    elif command == "list":
        page = api.page(state=args.state, limit=args.limit, cursor=args.cursor,
                        preset=args.preset)
        emit(page, as_json, lambda: r.job_table(page.jobs, page.next_cursor, now, paint))
    elif command == "events":
        events = api.events(args.id)
        emit({"events": [e.model_dump(mode="json") for e in events]}, as_json,
             lambda: r.timeline(events, paint))
    elif command == "stats":
        stats = api.stats()
        emit(stats, as_json, lambda: r.stats_summary(stats, paint))
    elif command == "history":
        history = api.history(args.window)
        emit(history, as_json, lambda: r.history_table(history, paint))
    elif command == "health":
        health = api.health()
        emit(health, as_json, lambda: f"{health.status}; database {health.database}")
        return 0 if health.status == "ok" else 1
    elif command == "get":
        job = api.get(args.id, wait_s=args.wait)
        emit(job, as_json, lambda: r.job_summary(job, datetime.now(UTC), paint))
    elif command == "webhook-secret":
        secret = api.rotate_webhook_secret()
        emit(secret, as_json, lambda: r.pretty(secret.model_dump(mode="json")))
    else:
        action = {"cancel": api.cancel, "retry": api.retry}[command]
        job = action(args.id)
        emit(job, as_json, lambda: r.job_summary(job, now, paint))
    return 0


def _schedule_text(answer: Any, now: datetime, paint: r.Paint) -> str:
    from jobs_client import ScheduleList, ScheduleView

    if isinstance(answer, ScheduleView):
        return r.schedule_summary(answer, now, paint)
    if isinstance(answer, ScheduleList):
        return r.schedule_table(answer.schedules, now, paint)
    if isinstance(answer, list):
        return r.schedule_timeline(answer, paint)
    return r.pretty(answer)
