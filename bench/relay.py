"""A push relay (localstack/push_relay.py, as `make dev` uses) in a process of its own, for the
benchmarks that must deliver as production does: several pushes at once into one instance
(Cloud Run at concurrency 8 takes 8), where the emulator's own push keeps about 2 in flight.

Its own process so that its threads (a streaming pull and N pushers) do not share an
interpreter lock with the benchmark's HTTP clients: that would slow delivery for whichever
pipeline runs, and the bench would measure the lock. Its CPU is not counted, as the emulator's
and Google's push are not.

    python -m bench.relay SUBSCRIPTION ENDPOINT CONCURRENCY ACK_DEADLINE_S

It prints `ready` once pulling, then relays until its stdin closes (the parent went away)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

from localstack.push_relay import PushRelay

ROOT = Path(__file__).resolve().parent.parent


class RelayProcess:
    """The relay as a child process, stopped by `close()` (closing its stdin)."""

    def __init__(self, subscription: str, endpoint: str, concurrency: int,
                 ack_deadline_s: int = 60) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.relay", subscription, endpoint, str(concurrency),
             str(ack_deadline_s)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        stdout: IO[str] | None = self.proc.stdout
        line = stdout.readline().strip() if stdout else ""
        if line != "ready":
            self.close()
            raise RuntimeError(f"relay to {endpoint} did not start: {line!r}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str]) -> int:
    subscription, endpoint, concurrency, deadline = argv
    relay = PushRelay(subscription, endpoint, concurrency=int(concurrency),
                      ack_deadline_s=float(deadline),
                      on_line=lambda line: print(line, file=sys.stderr, flush=True)).start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
