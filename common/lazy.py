"""One instance-wide object, built on first use: how every client and service here is made.

Cloud Run bills cold starts, so nothing is built at import; and an instance serves requests on
several threads, so the first users must not build it twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    def reset(self) -> None:
        """Forget the object (tests: as a new instance would start)."""
        with self._lock:
            self._value = None
