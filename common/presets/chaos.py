"""The `chaos` preset: a handler that misbehaves on request, for tests and benchmarks.

Its options (metadata `options`) say what to do: sleep (stopping early if the job is
cancelled), fail transiently on the first N attempts, fail permanently, hang (ignore
cancellation and the time limit, as a stuck library call would), or finish and then kill its
own instance on the first N attempts (the instance dies after the work is done but before the
result is written). Each run is recorded in the `chaos_runs` table, so a test can count real
executions, not messages. It is registered only when ENABLE_CHAOS_PRESET is on.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.presets.base import Handler, JobContext, PermanentError, TransientError
from common.presets.chaos_batch import kill_in_batch, meet

RunLog = Callable[[str, int, str], None]


class ChaosOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep_s: float = Field(default=0.0, ge=0, le=600)
    fail_times: int = Field(default=0, ge=0, le=100)
    fail_permanently: bool = False
    hang_s: float = Field(default=0.0, ge=0, le=3600)
    # SIGKILL of this very process (all its threads, every job it runs) after the work is done
    # and recorded, on attempts up to this number: a death between a handler's end and the
    # worker's final write, which only the lease and the sweep can recover from.
    kill_after_finish_times: int = Field(default=0, ge=0, le=100)
    # Workflows (issue 28): spawn this many chaos children first (keys child-0, child-1, ...),
    # each with these options; and `sum_parents`: return how many parents ended COMPLETED.
    spawn: int = Field(default=0, ge=0, le=1000)
    spawn_options: dict[str, Any] = Field(default_factory=dict)
    sum_parents: bool = False
    # Batches (issue 30; common/presets/chaos_batch.py), on attempt 1 only: `meet` the other
    # handlers of this group in this process (`meet_size` of them) before ending, so their exits
    # reach the instance's exit coalescer together; `kill_in_batch` kills the instance once
    # requests of that kind queue behind a running statement (this attempt writes nothing).
    meet: str = Field(default="", max_length=100)
    meet_size: int = Field(default=0, ge=0, le=64)
    kill_in_batch: Literal["", "claims", "exits"] = ""


def chaos_handler(record: RunLog) -> Handler:
    def chaos(ctx: JobContext, content: str, options: ChaosOptions) -> dict[str, Any]:
        if options.hang_s:
            record(ctx.job_id, ctx.attempt, "hung")  # first: the instance may die meanwhile
            time.sleep(options.hang_s)
            return {"hung_s": options.hang_s}
        for n in range(options.spawn):  # once per key, however often this attempt reruns
            ctx.spawn("chaos", f"child {n}", key=f"child-{n}",
                      metadata={"options": options.spawn_options})
        started = time.monotonic()
        deadline = started + options.sleep_s
        while time.monotonic() < deadline and not ctx.cancelled():
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
            slept = min(time.monotonic() - started, options.sleep_s)
            ctx.progress(slept / options.sleep_s, f"slept {slept:.1f} of {options.sleep_s:g} s")
        if ctx.cancelled():  # cancelled, or past the time limit: the worker has moved on
            record(ctx.job_id, ctx.attempt, "abandoned")
            return {"abandoned": True}
        if options.fail_permanently:
            record(ctx.job_id, ctx.attempt, "permanent")
            raise PermanentError("chaos: asked to fail permanently")
        if ctx.attempt <= options.fail_times:
            record(ctx.job_id, ctx.attempt, "transient")
            raise TransientError(f"chaos: failing attempt {ctx.attempt} of {options.fail_times}")
        if ctx.attempt <= options.kill_after_finish_times:
            record(ctx.job_id, ctx.attempt, "finished-then-killed")  # first: then no more code
            os.kill(os.getpid(), signal.SIGKILL)
        if options.kill_in_batch and ctx.attempt == 1:  # kills, recording first, in `process`
            if options.meet:
                meet(options.meet, options.meet_size)
            kill_in_batch(options.kill_in_batch, record, ctx.job_id, ctx.attempt)
        record(ctx.job_id, ctx.attempt, "succeeded")
        if options.meet and ctx.attempt == 1 and not options.kill_in_batch:
            meet(options.meet, options.meet_size)  # then the exit, with the group's
        out: dict[str, Any] = {"attempt": ctx.attempt, "slept_s": options.sleep_s,
                               "length": len(content)}
        if options.sum_parents:
            out["parents_completed"] = sum(1 for p in ctx.parents.values()
                                           if p.state == "COMPLETED")
        return out

    return Handler("chaos", chaos, ChaosOptions, time_limit_s=600)


def no_record(job_id: str, attempt: int, outcome: str) -> None:
    """For instances that validate chaos jobs but never run them (submit)."""
