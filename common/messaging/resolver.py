"""Name lookups for callback URLs, bounded per owner so that one owner's names cannot take
another owner's lookups.

`socket.getaddrinfo` cannot be cancelled: a name whose DNS never answers holds its thread for
the system resolver's whole timeout (about 10 s with glibc's defaults), whatever our deadline
says. With a shared pool of a few threads, a handful of such names in one owner's jobs made
every other owner's lookups wait, time out and spend delivery attempts. So each lookup runs on
a thread of its own, and at most PER_OWNER of one owner's lookups (including those still
running after their caller gave up) and TOTAL in all exist at once. A lookup that cannot start
raises `LookupBusy`: the caller did not try, so it is no attempt of the owner's (the deliverer
releases the delivery without spending one). The caller waits at most until its deadline.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

PER_OWNER = 4  # as many as one owner's sends at once (webhooks.PER_OWNER)
TOTAL = 64

Lookup = Callable[[str, int], list[Any]]  # getaddrinfo's shape: (host, port) -> infos


class LookupBusy(Exception):
    """No lookup could start now (this owner's share, or the instance's, is in use)."""


def system_lookup(host: str, port: int) -> list[Any]:
    """The system resolver (looked up at call time, so a test's stand-in is seen)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class Resolver:
    def __init__(self, *, per_owner: int = PER_OWNER, total: int = TOTAL,
                 lookup: Lookup = system_lookup) -> None:
        self.per_owner = per_owner
        self.total = total
        self._lookup = lookup
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()

    def running(self, owner: str) -> int:
        with self._lock:
            return self._running[owner]

    def lookup(self, host: str, port: int, *, owner: str, timeout_s: float) -> list[Any]:
        """getaddrinfo's answer within `timeout_s`. Raises LookupBusy if it could not start,
        TimeoutError if it did not answer in time (it goes on, holding the owner's share, until
        the system resolver gives up), or what the lookup raised (socket.gaierror, ...)."""
        with self._lock:
            if self._running[owner] >= self.per_owner or sum(self._running.values()) >= self.total:
                raise LookupBusy(f"{self._running[owner]} lookups of this owner running")
            self._running[owner] += 1
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["infos"] = self._lookup(host, port)
            except BaseException as exc:  # handed to the waiting caller, if it still waits
                outcome["error"] = exc
            finally:
                with self._lock:
                    self._running[owner] -= 1
                    if self._running[owner] <= 0:
                        del self._running[owner]
                done.set()

        try:
            threading.Thread(target=run, daemon=True, name="resolve").start()
        except RuntimeError:  # no thread to be had: nothing was tried
            with self._lock:
                self._running[owner] -= 1
            raise LookupBusy("no thread for a lookup") from None
        if not done.wait(max(timeout_s, 0.0)):
            raise TimeoutError(f"{host} did not resolve within {timeout_s:.3g}s")
        if "error" in outcome:
            raise outcome["error"]
        infos: list[Any] = outcome["infos"]
        return infos


DEFAULT = Resolver()
