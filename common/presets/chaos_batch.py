"""The chaos preset's batch faults (issue 30): an instance killed with a half-formed batch in
flight.

`process` shares its claims and its exits across the deliveries one instance holds at once
(common/worker/coalescer.py): while one statement runs, the requests that arrive meanwhile
queue for the next. A kill at that moment loses a statement whose commit may or may not have
happened and a queue that was never sent. The run must not care: every job still ends once,
rescued after its lease where its write was lost.

To hit that moment rather than hope for it:
- `meet`: handlers of one group wait for each other in this process (a barrier), so their
  exits reach the exit coalescer together;
- `kill_in_batch`: the handler watches the instance's own coalescer (the live Worker's, read
  through `functions.process`) until requests queue behind a running statement, then takes the
  coalescer's lock, so nothing queued can go out, records how many were queued (and the batch
  sizes the instance had formed so far) in the run log, and SIGKILLs its process.

The lock freezes the coalescer at what was observed, so the record is true when the process
dies; it is only ever taken by a handler about to kill its own instance. Outside `process`
(no live Worker: a long job's execution, a test's in-process worker) nothing is killed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Literal

Kind = Literal["claims", "exits"]
# How long a handler waits for the rest of its group, and a killer for a queue: well inside the
# chaos run's 3 s handler time limit.
MEET_WAIT_S = 2.0
QUEUE_WAIT_S = 2.0

_gates: dict[str, list[Any]] = {}  # group -> [Condition, arrivals]
_gates_lock = threading.Lock()


def meet(group: str, size: int, wait_s: float = MEET_WAIT_S) -> int:
    """Wait until `size` handlers of `group` have arrived in this process, or `wait_s` passed;
    returns how many had arrived."""
    with _gates_lock:
        gate = _gates.setdefault(group, [threading.Condition(), 0])
    condition: threading.Condition = gate[0]
    with condition:
        gate[1] += 1
        condition.notify_all()
        condition.wait_for(lambda: gate[1] >= size, timeout=wait_s)
        return int(gate[1])


def _coalescer(kind: Kind) -> Any | None:
    """The live Worker's coalescer of this kind, if this process is a `process` instance that
    built its Worker (it has: a handler of it is running)."""
    module = sys.modules.get("functions.process")
    if module is None:
        return None
    return getattr(module.get_worker().batching, kind)


def kill_in_batch(kind: Kind, record: Any, job_id: str, attempt: int,
                  wait_s: float = QUEUE_WAIT_S) -> bool:
    """SIGKILL this process once `kind` requests queue behind a running statement (or after
    `wait_s`, whatever is queued then). Returns False, killing nothing, outside `process`."""
    coalescer = _coalescer(kind)
    if coalescer is None:
        return False
    deadline = time.monotonic() + wait_s
    while True:
        coalescer._lock.acquire()  # held until the process dies, once the queue is seen
        queued, busy = len(coalescer._queue), coalescer._busy
        if queued or time.monotonic() > deadline:
            break
        coalescer._lock.release()
        time.sleep(0.0002)
    sizes = ",".join(f"{k}x{v}" for k, v in sorted(coalescer.stats.sizes.items()))
    # Two rows: what was caught, then the outcome the run checks (the attempt wrote nothing).
    record(job_id, attempt, f"killed-with-{kind}-queued:{queued} busy:{int(busy)} "
                            f"sizes:{sizes}")
    record(job_id, attempt, "finished-then-killed")
    os.kill(os.getpid(), signal.SIGKILL)
    return True  # not reached
