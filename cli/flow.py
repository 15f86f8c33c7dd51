"""Flow control commands: `submit-many FILE` (JSON Lines, one job per line, sent in batches of
up to 1,000) and `bulk-cancel` / `bulk-retry` (every job of yours matching a filter, after a
count and a confirmation).

A file is read whole and checked line by line before anything is sent: a line that is not a
JSON object stops the command, naming the line, with nothing submitted. Each batch of 1,000
lines is one transaction on the server; what the server refuses is reported per line. Without
`--key-prefix` each line without an idempotency_key gets a new key, so the command is safe to
retry but running the file again submits it again; with `--key-prefix P` line N's key is `P-N`,
so running the same file again replays instead (keys are per owner).

A bulk action first asks the server how many jobs match (`dry_run`), then asks you to confirm
that count, and acts on the jobs created before the count's `as_of` only; `--yes` confirms
without asking, and without a terminal it is required.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from jobs_client import BulkOutcome, JobsClient, JobState

from cli.schedules import UsageError

BATCH = 1000


def add_commands(sub: Any) -> None:
    m = sub.add_parser("submit-many", help="create the jobs of a JSON Lines file (one job per "
                       "line, as POST /jobs takes it), 1,000 per request")
    m.add_argument("file", help="the file, or - for standard input")
    m.add_argument("--key-prefix", help="line N without an idempotency_key gets the key "
                   "PREFIX-N, so running the same file again replays instead of duplicating")
    for action, text in (("cancel", "cancel your jobs that match (PENDING ones end, "
                          "PROCESSING ones are asked to stop)"),
                         ("retry", "retry your FAILED jobs that match")):
        b = sub.add_parser(f"bulk-{action}", help=text)
        states = ["WAITING", "PENDING", "PROCESSING"] if action == "cancel" else ["FAILED"]
        b.add_argument("--state", choices=states)
        b.add_argument("--preset")
        b.add_argument("--created-before", metavar="TIME", help="RFC 3339 with an offset, "
                       "e.g. 2026-12-01T08:30:00Z")
        b.add_argument("--limit-key", metavar="KEY", help="only jobs submitted with this "
                       "limit key")
        b.add_argument("--all", action="store_true", help="required when no other filter is "
                       "given: every job of yours the action can move")
        b.add_argument("--dry-run", action="store_true", help="only count the matching jobs")
        b.add_argument("--yes", "-y", action="store_true", help="do not ask to confirm")


def read_lines(stream: TextIO) -> list[tuple[int, dict[str, Any]]]:
    """(line number, job) for each non-blank line; UsageError naming the first bad line."""
    jobs = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            raise UsageError(f"line {number}: not JSON; nothing was submitted") from None
        if not isinstance(item, dict):
            raise UsageError(f"line {number}: not a JSON object (a job, as POST /jobs takes "
                             "it); nothing was submitted")
        jobs.append((number, item))
    if not jobs:
        raise UsageError("the file holds no jobs")
    return jobs


def submit_many(api: JobsClient, path: str, key_prefix: str | None) -> dict[str, Any]:
    """Every line's outcome, in order, each with its line number; the counts summed."""
    if path == "-":
        jobs = read_lines(sys.stdin)
    else:
        try:
            with open(path, encoding="utf-8") as stream:
                jobs = read_lines(stream)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
    if key_prefix:
        jobs = [(n, item if item.get("idempotency_key") is not None
                 else {**item, "idempotency_key": f"{key_prefix}-{n}"}) for n, item in jobs]
    total: dict[str, Any] = {"created": 0, "replayed": 0, "refused": 0, "results": []}
    for start in range(0, len(jobs), BATCH):
        chunk = jobs[start:start + BATCH]
        answer = api.submit_many([item for _, item in chunk])
        for kind in ("created", "replayed", "refused"):
            total[kind] += getattr(answer, kind)
        for (number, _), result in zip(chunk, answer.results, strict=True):
            total["results"].append({"line": number, **result.model_dump(mode="json")})
    return total


def summary(total: dict[str, Any]) -> str:
    lines = [f"created {total['created']}, replayed {total['replayed']}, "
             f"refused {total['refused']}"]
    for result in total["results"]:
        if result["outcome"] == "refused":
            problem = result["problem"] or {}
            why = "; ".join(f"{p['name']}: {p['reason']}"
                            for p in problem.get("invalid_params") or [])
            detail = why or problem.get("detail") or ""
            lines.append(f"  line {result['line']}: {problem.get('title')}"
                         + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


def bulk(args: argparse.Namespace, api: JobsClient, as_json: bool,
         ask: Callable[[str], str] = input) -> tuple[BulkOutcome, str]:
    """Count, confirm, act. Returns the answer and its one-line summary."""
    action = "cancel" if args.command == "bulk-cancel" else "retry"
    filter_: dict[str, Any] = {
        "state": JobState(args.state) if args.state else None, "preset": args.preset,
        "created_before": args.created_before, "limit_key": args.limit_key, "all": args.all,
    }
    counted = api.bulk(action, **filter_, dry_run=True)  # type: ignore[arg-type]
    if args.dry_run:
        return counted, f"{counted.matched} job(s) would be {_done(action)}"
    if counted.matched == 0:
        return counted, f"no job matches: nothing to {action}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{counted.matched} job(s) match; pass --yes to {action} them")
        reply = ask(f"{action.capitalize()} {counted.matched} job(s)? [y/N] ")
        if reply.strip().lower() not in ("y", "yes"):
            raise UsageError("not confirmed: nothing was changed")
    # Bounded by the count's instant: a job submitted while you read the question is left alone.
    done = api.bulk(action, **{**filter_, "created_before": counted.as_of})  # type: ignore[arg-type]
    if action == "cancel":
        text = f"cancelled {done.cancelled}, asked {done.cancel_requested} running to stop"
    else:
        text = f"retried {done.retried}"
    return done, text


def _done(action: str) -> str:
    return "cancelled (or asked to stop)" if action == "cancel" else "retried"
