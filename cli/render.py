"""How the CLI shows things to a person: aligned tables, short summaries, a timeline.

Kept apart from the commands so it can be tested without a terminal: every function takes the data,
the time to measure ages from, and a `Paint` that says whether to colour (only on a TTY, never
with NO_COLOR). Scripts never see any of this: without a TTY the CLI prints JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from jobs_client import (
    History,
    JobEvent,
    JobState,
    JobView,
    ScheduleEvent,
    ScheduleView,
    Stats,
)
from jobs_client.models import TemplateView

DEFAULT_PRIORITY = 5  # the API's; a job without a priority of its own has it
_STATE_COLOUR = {
    JobState.PENDING: "34",  # blue
    JobState.PROCESSING: "36",  # cyan
    JobState.COMPLETED: "32",  # green
    JobState.FAILED: "31",  # red
    JobState.CANCELLED: "33",  # yellow
}


class Paint:
    """ANSI colour, or plain text when colour is off."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    @classmethod
    def for_stream(cls, stream: IO[str], env: Mapping[str, str] | None = None) -> Paint:
        """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
        env = os.environ if env is None else env
        return cls(stream.isatty() and not env.get("NO_COLOR"))

    def code(self, text: str, sgr: str) -> str:
        return f"\033[{sgr}m{text}\033[0m" if self.colour and sgr and text else text

    def state(self, state: JobState | str, width: int = 0) -> str:
        """The state padded to `width` before colouring, so columns stay aligned."""
        return self.code(str(state).ljust(width), _STATE_COLOUR.get(JobState(state), ""))

    def dim(self, text: str) -> str:
        return self.code(text, "2")

    def bold(self, text: str) -> str:
        return self.code(text, "1")


def age(seconds: float) -> str:
    """12s, 5m, 3h, 2d: how long ago, to a person's precision."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def duration(seconds: float) -> str:
    """4 ms, 1.2 s: a run time, in the unit that shows it."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], paint: Paint,
          colour_column: int | None = None) -> str:
    """Columns as wide as their widest cell; the state column coloured after padding."""
    body = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = [paint.bold("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
                        .rstrip())]
    for row in body:
        cells = [paint.state(c, w) if i == colour_column else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def job_table(jobs: Sequence[JobView], next_cursor: str | None, now: datetime,
              paint: Paint) -> str:
    """One row per job; DUE says when a job for later (or a retry's backoff) comes up."""
    if not jobs:
        return "no jobs"
    rows = [(str(j.id), str(j.state), j.preset, age((now - j.created_at).total_seconds()),
             f"{j.attempts}/{j.attempt_limit or j.max_attempts}", _due(j, now)) for j in jobs]
    text = table(("ID", "STATE", "PRESET", "AGE", "ATTEMPTS", "DUE"), rows, paint,
                 colour_column=1)
    more = f"; more with --cursor {next_cursor}" if next_cursor else ""
    return text + "\n" + paint.dim(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}{more}")


def _due(job: JobView, now: datetime) -> str:
    if job.not_before is None or job.state.terminal or job.not_before <= now:
        return "-" if job.state.terminal or job.state == JobState.PROCESSING else "now"
    return "in " + age((job.not_before - now).total_seconds())


def job_summary(job: JobView, now: datetime, paint: Paint) -> str:
    """One job, field by field, with its result pretty-printed."""
    limit = job.attempt_limit or job.max_attempts
    retried = f", {job.max_attempts} a run" if limit != job.max_attempts else ""
    state = paint.state(job.state) + f"  (attempt {job.attempts} of {limit}{retried})"
    if job.cancel_requested and not job.state.terminal:
        state += ", cancel requested"
    lines = [("job", str(job.id)), ("state", state), ("preset", job.preset),
             ("created", f"{age((now - job.created_at).total_seconds())} ago "
                         f"({_clock(job.created_at, seconds=True)})")]
    if job.priority != DEFAULT_PRIORITY:  # shown when chosen, as metadata and callback are
        lines.append(("priority", str(job.priority)))
    if job.limit_key:
        lines.append(("key", job.limit_key))
    if job.waiting is not None and job.state == JobState.PENDING:
        lines.append(("waiting", waiting_text(job, now)))
    if job.not_before and not job.state.terminal and job.not_before > now:
        # Never run: a job for later, due then; else a retry's backoff.
        label = "due" if job.attempts == 0 else "next try"
        lines.append((label, f"in {age((job.not_before - now).total_seconds())} "
                             f"({_clock(job.not_before, seconds=True)})"))
    if job.progress is not None and not job.state.terminal:
        note = f" {job.progress.note}" if job.progress.note else ""
        lines.append(("progress", f"{job.progress.fraction:.0%}{note} "
                                  f"({age((now - job.progress.at).total_seconds())} ago)"))
    if job.execution is not None:  # a long job's (issue 29), with its logs in the console
        lines.append(("run in", f"{job.execution.name} (attempt {job.execution.attempt})"))
        if job.execution.logs_url:
            lines.append(("logs", job.execution.logs_url))
    if job.started_at and job.finished_at:
        lines.append(("ran", duration((job.finished_at - job.started_at).total_seconds())))
    if job.metadata:
        lines.append(("metadata", json.dumps(job.metadata, sort_keys=True)))
    if job.callback_url:
        lines.append(("callback", job.callback_url))
    lines += _webhook_fields(job, now)
    if job.trace_id:
        lines.append(("trace", job.trace_id))
    out = [f"{paint.dim(k.ljust(8))}  {v}" for k, v in lines]
    result = job.result
    if result is not None:
        took = f" in {result.duration_ms} ms" if result.duration_ms is not None else ""
        if result.status == "succeeded":
            out.append(f"{paint.dim('result'.ljust(8))}  succeeded{took}")
            out += ["  " + line for line in pretty(result.output).splitlines()]
        else:
            out.append(f"{paint.dim('result'.ljust(8))}  "
                       + paint.code(f"failed{took}: {result.error_type}: {result.error_message}",
                                    "31"))
    return "\n".join(out)


_WAITS = {
    "running:owner": "your limit on running jobs is full",
    "running:preset": "its preset's limit on running jobs is full",
    "running:key": "its key's limit on running jobs is full",
    "rate:preset": "its preset's rate has no start slot near",
    "rate:key": "its key's rate has no start slot near",
    "rate-reserved": "a start slot is booked",
}


def waiting_text(job: JobView, now: datetime) -> str:
    """Why a PENDING job waits on a flow limit, which limit, and until when."""
    wait = job.waiting
    assert wait is not None
    text = f"{wait.reason} ({wait.limit}): {_WAITS.get(wait.reason, 'on a limit')}"
    if wait.until is not None:
        when = "now" if wait.until <= now else "in " + age((wait.until - now).total_seconds())
        verb = "starts" if wait.reason == "rate-reserved" else "next slot"
        return f"{text}; {verb} {when} ({_clock(wait.until, seconds=True)})"
    if wait.reason.startswith("running:"):
        return f"{text}; starts when a job under it ends"
    return text


def _webhook_fields(job: JobView, now: datetime) -> list[tuple[str, str]]:
    """The webhook's delivery state: what it waits for, or how its last attempt went."""
    hook = job.webhook
    if hook is None:
        return []
    text: str = hook.state
    if hook.attempts:
        text += f", {hook.attempts} attempt{'s' if hook.attempts != 1 else ''}"
    if hook.last_status is not None:
        text += f", last answer {hook.last_status}"
    if hook.next_attempt_at is not None and hook.waiting_for != "signing-secret":
        text += f", next in {age((hook.next_attempt_at - now).total_seconds())}"
    if hook.delivered_at is not None:
        text += f" at {_clock(hook.delivered_at, seconds=True)}"
    lines: list[tuple[str, str]] = [("webhook", text)]
    if hook.note:
        lines.append(("", hook.note))
    if hook.last_error:
        lines.append(("", f"last error: {hook.last_error}"))
    if hook.webhook_id:
        lines.append(("", f"id {hook.webhook_id}"))
    return lines


def timeline(events: Sequence[JobEvent], paint: Paint) -> str:
    """The audit trail as a timeline: when, how long after the first event, what moved."""
    if not events:
        return "no events"
    first = events[0].at
    rows = []
    for e in events:
        moved = f"{e.from_state} -> {e.to_state}" if e.from_state else f"-> {e.to_state}"
        details = json.dumps(e.details, sort_keys=True) if e.details else ""
        rows.append((_clock(e.at), f"+{(e.at - first).total_seconds():.3f}s", e.reason, moved,
                     f"attempt {e.attempt}" if e.attempt else "", details))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        state_at = r[3].rfind(" ") + 1  # colour the state the event moved to
        moved = r[3][:state_at] + paint.state(r[3][state_at:]) + " " * (widths[3] - len(r[3]))
        cells = [paint.dim(r[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), moved,
                 r[4].ljust(widths[4]), paint.dim(r[5])]
        lines.append("  ".join(cells).rstrip())
    return paint.dim(f"times in UTC, from {first.astimezone(UTC):%Y-%m-%d}") + "\n" + \
        "\n".join(lines)


def stats_summary(stats: Stats, paint: Paint) -> str:
    rows = [(str(s), str(stats.depth.get(s, 0))) for s in JobState]
    widths = (max(len(r[0]) for r in rows), max(4, *(len(r[1]) for r in rows)))
    lines = [paint.bold(f"{'STATE'.ljust(widths[0])}  {'JOBS'.rjust(widths[1])}")]
    lines += [f"{paint.state(s, widths[0])}  {n.rjust(widths[1])}" for s, n in rows]
    oldest = stats.oldest_pending_age_s
    lines.append(
        f"oldest due: {age(oldest) if oldest is not None else 'none'} "
        f"({stats.pending_due} due, {stats.pending_parked} parked); "
        f"finished in the last 5 min: {stats.finished_last_5_min} "
        f"({stats.throughput_per_min:g}/min)"
    )
    return "\n".join(lines)


def state_change(event: JobEvent, since: datetime, paint: Paint) -> str:
    """One line of `submit --wait`'s progress: when after `since`, the state, and why."""
    why = event.reason + (f", attempt {event.attempt}" if event.attempt else "")
    return (f"{(event.at - since).total_seconds():6.1f} s  "
            f"{paint.state(event.to_state, 10)}  {paint.dim(why)}").rstrip()


def pretty(value: Any, width: int = 88, indent: int = 0) -> str:
    """Indented JSON, except that a list or object that fits on one line stays on one line:
    a result's small records read as rows rather than as a column of braces."""
    flat = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if indent + len(flat) <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: "
                 f"{pretty(v, width, indent + 2).lstrip()}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + pretty(v, width, indent + 2).lstrip() for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _clock(at: datetime, seconds: bool = False) -> str:
    utc = at.astimezone(UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{utc:%H:%M:%S}.{utc:%f}"[:12]


def schedule_table(schedules: Sequence[ScheduleView], now: datetime, paint: Paint) -> str:
    if not schedules:
        return "no schedules"
    rows = [(s.id, s.cron, s.timezone, s.job.preset if s.job else "(workflow)",
             "on" if s.enabled else "paused",
             _clock(s.next_fire_at, seconds=True) if s.next_fire_at and s.enabled else "-")
            for s in schedules]
    return table(("ID", "CRON", "ZONE", "PRESET", "STATE", "NEXT FIRE"), rows, paint)


def schedule_summary(s: ScheduleView, now: datetime, paint: Paint) -> str:
    lines = [("schedule", s.id), ("cron", f"{s.cron}  ({s.timezone})"),
             ("state", "on" if s.enabled else "paused")]
    if s.job is None:  # each fire starts a workflow
        steps = (s.workflow or {}).get("steps", [])
        lines.append(("workflow", f"{(s.workflow or {}).get('name') or '-'}: {len(steps)} "
                      f"steps ({', '.join(st['name'] for st in steps)})"))
    lines += [("overlap", s.overlap), ("catch up", s.catch_up)]
    if s.job is not None:
        _job_lines(s.job, lines)
    if s.next_fire_at and s.enabled:
        lines.append(("next", f"in {age((s.next_fire_at - now).total_seconds())} "
                              f"({_clock(s.next_fire_at, seconds=True)})"))
    if s.last_fire_at:
        last = f" -> job {s.last_job_id}" if s.last_job_id else ""
        if s.last_workflow_id:
            last = f" -> workflow {s.last_workflow_id}"
        lines.append(("last", f"{_clock(s.last_fire_at, seconds=True)}{last}"))
    return "\n".join(f"{paint.dim(k.ljust(8))}  {v}" for k, v in lines)


def _job_lines(job: TemplateView, lines: list[tuple[str, str]]) -> None:
    s = job
    lines.insert(3, ("preset", s.preset))
    if s.max_attempts is not None:
        lines.append(("attempts", str(s.max_attempts)))
    if s.priority != DEFAULT_PRIORITY:
        lines.append(("priority", str(s.priority)))
    if s.limit_key:
        lines.append(("key", s.limit_key))
    if s.metadata:
        lines.append(("metadata", json.dumps(s.metadata, sort_keys=True)))
    if s.callback_url:
        lines.append(("callback", s.callback_url))


def schedule_timeline(events: Sequence[ScheduleEvent], paint: Paint) -> str:
    if not events:
        return "no fires yet"
    rows = [(_clock(e.fire_time, seconds=True), e.kind, e.job_id or "",
             json.dumps(e.details, sort_keys=True) if e.details else "") for e in events]
    return table(("FIRE TIME", "KIND", "JOB", "DETAILS"), rows, paint)


def history_table(history: History, paint: Paint) -> str:
    """The buckets in which some job ended, oldest first, one column per end state."""
    states = ("COMPLETED", "FAILED", "CANCELLED")
    rows = [(_clock(b.at, seconds=True), *(str(b.counts.get(JobState(s), 0)) for s in states))
            for b in history.buckets if any(b.counts.values())]
    per = "minute" if history.bucket_s == 60 else f"{history.bucket_s // 60} minutes"
    head = paint.dim(f"jobs ended per {per}, last {history.window}")
    if not rows:
        return head + "\nnone"
    return head + "\n" + table(("FROM", *states), rows, paint)
