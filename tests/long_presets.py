"""Long presets for tests/test_long_jobs.py, loaded by the execution child through
PRESET_MODULES. Each run of a handler is written to `chaos_runs` (job, attempt, 'started'), so a
test counts runs per attempt instead of timing anything."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from common.presets.base import Handler, JobContext
from common.store.engine import get_engine


def _started(ctx: JobContext) -> None:
    with get_engine().begin() as conn:
        conn.execute(text("INSERT INTO chaos_runs (job_id, attempt, outcome) "
                          "VALUES (CAST(:id AS uuid), :attempt, 'started')"),
                     {"id": ctx.job_id, "attempt": ctx.attempt})


def long_sleep(ctx: JobContext, content: str, options: Any) -> dict[str, Any]:
    """Sleeps `content` seconds in small steps, reporting progress, stopping when cancelled."""
    _started(ctx)
    total = float(content)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < total:
        if ctx.cancelled():
            return {"stopped": True}
        ctx.progress(elapsed / total, "sleeping")
        time.sleep(0.05)
    return {"attempt": ctx.attempt, "slept_s": total}


def stubborn(ctx: JobContext, content: str, options: Any) -> dict[str, Any]:
    """Never looks at ctx.cancelled(): only the execution's end stops it."""
    _started(ctx)
    ctx.progress(0.0, "ignoring everything")
    time.sleep(float(content))
    return {"attempt": ctx.attempt}


HANDLERS = [
    Handler("long-sleep", long_sleep, time_limit_s=600, long=True),
    Handler("long-stubborn", stubborn, time_limit_s=600, long=True),
]
