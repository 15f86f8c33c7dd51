"""The chaos run at full size: 1,000 jobs through the real local stack while faults are injected
(see tests/support/chaos_run.py; CI runs the same with 200). Prints the counts; exits 1 if any
job broke the promise, or if a fault missed what it is there for (the kill -9 caught no running
job, no lost attempt was rescued, no handler's instance died after it finished).

    .venv/bin/python -m bench.chaos        # BENCH_CHAOS_JOBS (default 1000)
"""

from __future__ import annotations

import json
import os
import time

from bench.results import record
from bench.services import services
from tests.support import chaos_run

MUST_HAPPEN = ("running_jobs_caught_by_kill", "caught_jobs_rescued",
               "attempts_rescued_after_lost_lease", "handler_finished_then_instance_died")


def main() -> int:
    n = int(os.environ.get("BENCH_CHAOS_JOBS", "1000"))
    with services("jobs_chaos") as (url, emulator):
        started = time.perf_counter()
        result = chaos_run.run(url, emulator, n=n, quiesce_s=1200)
        took = time.perf_counter() - started
    print(f"chaos run, {n} jobs, {took:.0f} s: " + json.dumps(result.counts, sort_keys=True))
    for problem in result.problems[:50]:
        print("PROBLEM:", problem)
    print("promise held" if not result.problems else f"{len(result.problems)} problems")
    missed = [name for name in MUST_HAPPEN if not result.counts.get(name)]
    if missed:
        print("faults that missed:", ", ".join(missed))
    record("chaos", jobs=n, seconds=took, counts=result.counts, problems=len(result.problems),
           missed=missed)
    return 0 if not result.problems and not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
