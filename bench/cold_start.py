"""Benchmark: cold import of main.py against the bare imports any such function pays
(functions_framework, sqlalchemy, pg8000, pydantic), measured in the same run.

    .venv/bin/python -m bench.cold_start     # BENCH_REPEATS (default 15) alternating runs each

Target: median(import main) <= 1.25 x median(bare imports).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from tests.support.paths import ROOT

TARGET = 1.25
BARE = "import functions_framework, sqlalchemy, pg8000, pydantic"
OURS = "import main"


def _once(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> int:
    repeats = int(os.environ.get("BENCH_REPEATS", "15"))
    _once(OURS), _once(BARE)  # warm the OS file cache for both
    bare, ours = [], []
    for _ in range(repeats):  # alternate, so machine noise hits both alike
        bare.append(_once(BARE))
        ours.append(_once(OURS))
    b, o = statistics.median(bare), statistics.median(ours)
    ratio = o / b
    print(
        f"cold import: main {o * 1000:.0f} ms  bare {b * 1000:.0f} ms  ratio {ratio:.2f} "
        f"(target <= {TARGET}) {'OK' if ratio <= TARGET else 'ABOVE'}"
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
