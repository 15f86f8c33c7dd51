"""The presets bench.workflows registers in its own `process` servers (PRESET_MODULES):

- `fan`: spawns as many `echo` children as its content says (keys c-0, c-1, ...), as a split
  step would before its chunks are transcoded;
- `gather`: the fan-in, reads every parent (one statement) and counts those that COMPLETED, as
  a stitch step would before it joins the chunks.

The chain and the single jobs use the built-in `echo`: the quickest step there is, so what is
measured is the pipeline's own hop from one job to the next."""

from __future__ import annotations

from typing import Any

from common.presets.base import Handler, JobContext


def fan(ctx: JobContext, content: str, options: Any) -> dict[str, int]:
    n = int(content)
    for i in range(n):  # each spawn is one statement and one publish
        ctx.spawn("echo", f"chunk {i}", key=f"c-{i}")
    return {"children": n}


def gather(ctx: JobContext, content: str, options: Any) -> dict[str, int]:
    states = [p.state for p in ctx.parents.values()]
    return {"parents": len(states), "completed": sum(1 for s in states if s == "COMPLETED")}


# Spawning a thousand children with a publish each takes seconds on a busy 2-core machine:
# the handler's own limit is not what is measured (the ack deadline still caps it).
HANDLERS = [Handler("fan", fan, time_limit_s=600), Handler("gather", gather)]
