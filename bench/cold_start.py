"""Benchmark: what a cold instance of each function imports (`import main` and the lookup of
its target, as functions-framework does) against the bare imports any such function pays
(functions_framework, sqlalchemy, pg8000, pydantic's BaseModel), measured in the same run.

    .venv/bin/python -m bench.cold_start     # BENCH_REPEATS (default 15) alternating runs each

Target, for each function: median(its imports) <= 1.15 x median(bare imports).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from bench.results import record
from localstack.paths import ROOT

TARGET = 1.15
# `import pydantic` alone is lazy and nearly free; any function with a model pays for BaseModel.
BARE = "import functions_framework, sqlalchemy, pg8000; from pydantic import BaseModel"
TARGETS = ("submit", "process", "sweep")


def _once(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> int:
    repeats = int(os.environ.get("BENCH_REPEATS", "15"))
    code = {t: f"import main; main.{t}" for t in TARGETS}
    for c in (BARE, *code.values()):
        _once(c)  # warm the OS file cache
    bare: list[float] = []
    ours: dict[str, list[float]] = {t: [] for t in TARGETS}
    for _ in range(repeats):  # alternate, so machine noise hits all alike
        bare.append(_once(BARE))
        for target in TARGETS:
            ours[target].append(_once(code[target]))
    b = statistics.median(bare)
    ok = True
    figures = {}
    for target in TARGETS:
        o = statistics.median(ours[target])
        ratio = o / b
        ok &= ratio <= TARGET
        figures[target] = {"ours_ms": o * 1000, "ratio": ratio}
        print(
            f"cold import, {target:<7}: {o * 1000:.0f} ms  bare {b * 1000:.0f} ms  "
            f"ratio {ratio:.2f} (target <= {TARGET}) {'OK' if ratio <= TARGET else 'ABOVE'}"
        )
    record("cold_start", bare_ms=b * 1000, targets=figures, target=TARGET, repeats=repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
