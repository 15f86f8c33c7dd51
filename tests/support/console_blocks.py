"""The docs' console examples as tests: every ```console block of README.md and docs/*.md is a
session of `$ command` lines, each followed by the output the docs promise. A test runs each
command in a real terminal (a pseudo-terminal, as a person at a shell would: the CLI draws
tables and progress bars only there) against a running `make dev`, and compares what the
terminal shows with the documented output, line by line, after normalising what differs from
run to run:

- ids (UUIDs) and trace ids, dates, times of day, timestamps, durations and ages, rates, cursors;
- a progress bar's fill, its percentage and its "slept 1.9 of" count (the state stays);
- runs of spaces (column widths follow the values);
- `…` in the documented output stands for anything within its line.

And in the commands (and `hs256:dev` in the output too): `python main.py` runs with the test's
interpreter, `127.0.0.1:8080` is the stack's submit address, `token dev`, `hs256:dev` and the
CLI's own user are a user of the session's own (a file's blocks are one session, in order, so
each file starts with no jobs), and an id stands for the first id of the last output that
showed one.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
NORMALISE = [
    (UUID, "<id>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<trace>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z| UTC|\+00:00)?"), "<time>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b"), "<clock>"),
    (re.compile(r"\[[#.]+\]"), "[<bar>]"),
    (re.compile(r"\b\d+%"), "<n>%"),
    (re.compile(r"slept [\d.]+ of"), "slept <n> of"),
    (re.compile(r"\(\d+(?:\.\d+)?/min\)"), "(<rate>)"),
    (re.compile(r"[+-]?\b\d+(?:\.\d+)? ?(?:ms|s|m|h|d)\b"), "<dur>"),
    (re.compile(r"--cursor \S+"), "--cursor <cursor>"),
    (re.compile(r'"next_cursor":"[^"]*"'), '"next_cursor":"<cursor>"'),
    (re.compile(r"\s+"), " "),
]


@dataclass
class Step:
    command: str
    expected: list[str]


def console_blocks(path: Path) -> list[list[Step]]:
    """Each ```console block of a Markdown file, as its steps."""
    blocks = []
    for body in BLOCK.findall(path.read_text()):
        steps: list[Step] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:], []))
            else:
                assert steps, f"{path}: a console block must start with a `$ ` command"
                steps[-1].expected.append(line)
        blocks.append(steps)
    return blocks


def normalise(line: str) -> str:
    for pattern, replacement in NORMALISE:
        line = pattern.sub(replacement, line)
    return line.strip()


def screen(raw: str) -> list[str]:
    """What a terminal shows of `raw`: a carriage return redraws its line in place."""
    lines = raw.replace("\r\n", "\n").split("\n")
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown


def mismatch(expected: list[str], actual: list[str]) -> str | None:
    """Why `actual` is not what `expected` documents, or None if it is."""
    want = [normalise(line) for line in expected]
    got = [normalise(line) for line in actual]
    if len(want) != len(got):
        return f"{len(got)} lines shown, {len(want)} documented"
    for n, (w, g) in enumerate(zip(want, got, strict=True), 1):
        pattern = ".*".join(re.escape(part) for part in w.split("…"))
        if not re.fullmatch(pattern, g):
            return f"line {n}: documented {w!r}, shown {g!r}"
    return None


def in_terminal(command: str, env: dict[str, str], cwd: Path, timeout_s: float = 120) -> str:
    """Run `command` with bash, its stdin, stdout and stderr a pseudo-terminal; what it wrote."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(["bash", "-c", command], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, cwd=cwd, start_new_session=True)
    os.close(terminal)
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{command!r} still ran after {timeout_s:g} s")
    finally:
        os.close(controller)
        proc.wait(timeout=10)
    return out.decode(errors="replace")
