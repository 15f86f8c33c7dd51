"""What a server's processes cost, read from /proc: CPU seconds (user + system) and peak RSS.

A functions-framework server runs in its own process group (the launcher, gunicorn's arbiter
and its worker), so its cost is the sum over the group's processes."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (field 3), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5 of stat, pgrp
            pids.append(int(entry.name))
    return pids


def _read_all(pgid: int, name: str) -> list[str]:
    """/proc/PID/NAME of each process in the group that is still there to read."""
    texts = []
    for pid in _group(pgid):
        try:
            texts.append(Path(f"/proc/{pid}/{name}").read_text())
        except OSError:
            continue
    return texts


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the group, including children it has reaped."""
    total = 0
    for stat in _read_all(pgid, "stat"):
        fields = stat[stat.rindex(")") + 2:].split()
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICK


def peak_rss_mib(pgid: int) -> float:
    """The largest peak resident set (VmHWM) among the group's processes: the gunicorn worker,
    which is where the function runs."""
    peak = 0
    for status in _read_all(pgid, "status"):
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024
