"""A pass's time budget: steps work in batches and stop taking new ones once it is spent."""

from __future__ import annotations

import time
from collections.abc import Callable
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

    def in_batches(self, batch_size: int, step: Callable[[], int]) -> tuple[int, bool]:
        """Run `step` (one batch; it returns how many rows it handled) until a batch comes back
        short or the budget is spent. Returns (rows handled, whether work may be left)."""
        total = 0
        while not self.spent():
            count = step()
            total += count
            if count < batch_size:
                return total, False
        return total, True
