"""A running handler's progress, held in memory between heartbeats.

A handler may report progress thousands of times a second; writing each report would turn a
progress bar into the busiest writer of the database. So a report only replaces the one held
here, and the worker's heartbeat (every HEARTBEAT_S) takes the latest, if it changed, into the
lease extension it writes anyway: at most one row update per heartbeat, and none extra.
"""

from __future__ import annotations

import math
import threading

from common.store.worker_moves import Progress


class ProgressBox:
    """Thread-safe: the handler's thread reports, the worker's thread takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._unsaved = False
        self.reports = 0

    def report(self, fraction: float, note: str | None = None) -> None:
        """Never raises into the handler: a value that is not a number is ignored, NaN is
        ignored, anything else is clamped to 0..1; a note that is not text is shown as text."""
        try:
            value = float(fraction)
        except (TypeError, ValueError, OverflowError):
            return
        if math.isnan(value):
            return
        try:
            text = None if note is None else str(note)
        except Exception:  # a user object's __str__: whatever it raises
            text = None
        with self._lock:
            self._latest = Progress(min(max(value, 0.0), 1.0), text)
            self._unsaved = True
            self.reports += 1

    def take(self) -> Progress | None:
        """The latest report if it was not taken yet (else None: nothing new to write)."""
        with self._lock:
            if not self._unsaved:
                return None
            self._unsaved = False
            return self._latest

    def untake(self, progress: Progress | None) -> None:
        """A write carrying `progress` failed: keep it for the next one, unless newer came."""
        if progress is None:
            return
        with self._lock:
            if not self._unsaved and self._latest is progress:
                self._unsaved = True
