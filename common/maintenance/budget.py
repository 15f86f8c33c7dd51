"""A pass's time budget: steps work in batches and stop taking new ones once it is spent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def spent(self) -> bool:
        return self.remaining() <= 0

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)
