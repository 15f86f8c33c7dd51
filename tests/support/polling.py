"""Waiting in tests for something another thread or process does: poll a condition until it
holds, and fail naming what never happened. A bound, never a timing assertion."""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20,
               pause: float = 0.05) -> None:
    """Return once `condition()` is true; raise AssertionError after `timeout` seconds."""
    deadline = monotonic() + timeout
    sleeper = threading.Event()
    while not condition():
        if monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what} in vain")
        sleeper.wait(pause)
