"""The `demo` preset: a job that takes as long as you ask, to try progress, cancellation, fair
share and long polls by hand. `make dev` turns it on (ENABLE_DEMO_PRESET); it is off elsewhere
unless that setting is.

`demo-long` is the same handler as a long preset (issue 29): its content is up to three hours
(`"1200"`), and it runs in an execution of its own, not inside the push (docs/worker.md).

Its content is a number of seconds, 0 to 30 (up to three decimals: `"2.5"`), so a job fits the
ack deadline of `make dev`'s push subscription and a `?wait=30` can see one end. It sleeps that
long in steps of a tenth of a second, reporting its progress at each (the worker keeps only the
latest report and the next heartbeat stores it, so this costs no write), and stops at once,
keeping nothing, when the job is cancelled or its time limit passes. Options ask it to fail:
`fail` (a permanent failure once the sleep is over) and `fail_attempts` (the first N attempts
fail transiently, so the job is retried with backoff and then succeeds). As a workflow step it
also returns the states of the steps it waited for (`ctx.parents`), to show it read them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from common.presets.base import Handler, JobContext, PermanentError, TransientError

MAX_SECONDS = 30
# 0 to 30 with up to three decimals; 30 only as 30, 30.0, 30.00 or 30.000.
SECONDS = r"^(?:(?:[0-9]|[12][0-9])(?:\.[0-9]{1,3})?|30(?:\.0{1,3})?)$"
STEP_S = 0.1


def _not_bool_or_text(value: object) -> object:
    """JSON's integers only: `false` and `"2"` are no count (pydantic's lax int would take
    them), while `2.0` is one, as JSON Schema's `integer` says."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail: StrictBool = Field(default=False, description="fail permanently once the sleep is over")
    fail_attempts: Annotated[int, BeforeValidator(_not_bool_or_text)] = Field(
        default=0, ge=0, le=10,
        description="the first N attempts fail transiently after their sleep (then it succeeds)",
    )


def demo(ctx: JobContext, content: str, options: DemoOptions) -> dict[str, Any]:
    total = float(content)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < total:
        if ctx.cancelled():  # cancelled or past the time limit: nothing returned is kept
            return {"stopped_after_s": round(elapsed, 1)}
        ctx.progress(elapsed / total, f"slept {elapsed:.1f} of {total:g} s")
        time.sleep(min(STEP_S, total - elapsed))
    ctx.progress(1.0, f"slept {total:g} of {total:g} s")
    if options.fail:
        raise PermanentError("demo: asked to fail")
    if ctx.attempt <= options.fail_attempts:
        raise TransientError(
            f"demo: attempt {ctx.attempt} fails, as asked ({options.fail_attempts})"
        )
    out: dict[str, Any] = {"slept_s": total, "attempt": ctx.attempt}
    if ctx.parents:  # a workflow step: what it read of the steps before it
        out["parents"] = {name: p.state for name, p in sorted(ctx.parents.items())}
    return out


DEMO_HANDLER = Handler(
    "demo", demo, DemoOptions, time_limit_s=MAX_SECONDS + 15,
    content_pattern=SECONDS,
    content_description=f"a number of seconds to sleep, 0 to {MAX_SECONDS}, e.g. 2.5",
)


LONG_MAX_SECONDS = 3 * 3600
# 0 to 10800 with up to three decimals.
LONG_SECONDS = r"^(?:(?:[0-9]{1,4}|10[0-7][0-9]{2})(?:\.[0-9]{1,3})?|10800(?:\.0{1,3})?)$"

DEMO_LONG_HANDLER = Handler(
    "demo-long", demo, DemoOptions, time_limit_s=LONG_MAX_SECONDS + 60, long=True,
    content_pattern=LONG_SECONDS,
    content_description=f"a number of seconds to sleep, 0 to {LONG_MAX_SECONDS}, e.g. 1200",
)
