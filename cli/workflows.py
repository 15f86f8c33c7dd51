"""The command line's workflow commands (docs/workflows.md), on the typed client:

    python main.py workflow submit FILE.json        # or - for standard input
    python main.py workflow get ID                  # its steps, their states, its progress
    python main.py workflow list
    python main.py workflow cancel ID
    python main.py workflow retry ID [--step NAME]

A file holds one workflow as POST /workflows takes it ({"name": ..., "steps": [...]}); the
server checks it whole and names the step it refuses (`steps[3].after: a cycle: a -> b -> a`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from jobs_client import JobsClient, WorkflowView

from cli.schedules import UsageError


def add_commands(sub: Any) -> None:
    w = sub.add_parser("workflow", help="submit, show, cancel or retry a workflow")
    ws = w.add_subparsers(dest="workflow_command", required=True)
    s = ws.add_parser("submit", help="create the workflow of a JSON file")
    s.add_argument("file", help="the file, or - for standard input")
    s.add_argument("--key", help="its idempotency key: submitting again replays")
    for name, text in (("get", "a workflow's steps, their states and its progress"),
                       ("cancel", "end every step not yet ended"),
                       ("retry", "retry the FAILED steps (or --step NAME)")):
        c = ws.add_parser(name, help=text)
        c.add_argument("id")
        if name == "retry":
            c.add_argument("--step", help="only this FAILED step")
        if name == "get":
            c.add_argument("--wait", type=float, metavar="S",
                           help="first wait up to S seconds for the workflow to end")
    ws.add_parser("list", help="your workflows, newest first")


def read_workflow(path: str) -> dict[str, Any]:
    """The file's JSON object; UsageError when it is not one (nothing is sent)."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise UsageError(f"{path}: not JSON; nothing was submitted") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path}: not a JSON object (a workflow, as POST /workflows takes "
                         "it); nothing was submitted")
    return body


def run(args: argparse.Namespace, api: JobsClient) -> WorkflowView | list[WorkflowView]:
    command = args.workflow_command
    if command == "submit":
        body = read_workflow(args.file)
        if args.key:
            body["idempotency_key"] = args.key
        return api.submit_workflow(body)
    if command == "list":
        return api.workflows().workflows
    if command == "get":
        if args.wait:
            return api.wait_workflow(args.id, timeout_s=args.wait, poll_s=0.5)
        return api.get_workflow(args.id)
    if command == "cancel":
        return api.cancel_workflow(args.id)
    return api.retry_workflow(args.id, step=args.step)


def _when(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at else "-"


def show(answer: WorkflowView | list[WorkflowView]) -> str:
    """A workflow as a table of its steps (parents first), or a list as one line each."""
    if isinstance(answer, list):
        if not answer:
            return "no workflows"
        return "\n".join(f"{w.id}  {w.state:<9}  {w.steps_done}/{w.steps_total} steps  "
                         f"{w.name or ''}" for w in answer)
    wf = answer
    head = [f"workflow {wf.id}" + (f"  ({wf.name})" if wf.name else ""),
            f"state    {wf.state}, {wf.steps_done}/{wf.steps_total} steps"]
    if wf.broken_step:
        head.append(f"broken   {wf.broken_step}")
    rows = [("STEP", "STATE", "TRIES", "AFTER", "STARTED", "ENDED", "ERROR")]
    for s in wf.steps or []:
        error = f"{s.error_type}: {s.error_message}" if s.error_type else ""
        after = ", ".join(s.after) + (" (run)" if s.on_upstream_failure == "run" else "")
        rows.append((s.name, str(s.state), str(s.attempts), after or "-",
                     _when(s.started_at), _when(s.finished_at), error[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    return "\n".join([*head, "", *table])
