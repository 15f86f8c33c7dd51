"""Each benchmark records its figures here (bench/out/NAME.json, not committed); bench.report
turns them into bench/RESULTS.md and bench/results.png."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def record(name: str, **figures: Any) -> None:
    OUT.mkdir(exist_ok=True)
    figures["recorded_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (OUT / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))


def load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
