"""`GET /jobs/{id}?wait=N`: answer as soon as the job is terminal, or after N seconds.

Measured choice (docs/live-jobs.md, "Waiting instead of polling"): bounded polling with
backoff, not LISTEN/NOTIFY.
A waiting request holds its own request thread either way; polling adds no thread, no
connection held between reads (each read checks a pooled connection out for one primary-key
statement), and about 1 + ceil(log2(cap/first)) + (N - warm-up)/cap reads per wait; LISTEN
would hold one more connection per instance for its whole life (outside the pool, against the
connection budget), one more thread, and put a global lock on every job's end in the database.

The reads in between are a state-only probe (no content, no result); the full job is read once
at the start and once at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from common.store.job_store import JobStore
from common.store.models import Job

MAX_WAIT_S = 30.0  # the API's ceiling; WAIT_MAX_S may lower it per instance
FIRST_POLL_S = 0.1
# A JSON number, as the OpenAPI document's `number` type: no sign, no inf/nan, no blanks.
WAIT_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def parse_wait(raw: str, max_s: float = MAX_WAIT_S) -> float | None:
    """Seconds to wait, or None if `raw` is not a number in (0, max_s]."""
    if not WAIT_PATTERN.fullmatch(raw):
        return None
    value = float(raw)
    return value if 0 < value <= min(max_s, MAX_WAIT_S) else None


def wait_for_end(
    store: JobStore,
    owner: str,
    job_id: str,
    wait_s: float,
    *,
    max_poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Job:
    """The job once terminal, or as it is when `wait_s` has passed. Owner-scoped throughout:
    a foreign or missing job raises JobNotFound at the first read, before any wait."""
    job = store.get(owner, job_id)
    deadline = clock() + wait_s
    delay = FIRST_POLL_S
    while not job.state.terminal:
        remaining = deadline - clock()
        if remaining <= 0:
            return job
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_poll_s)
        state = store.job_state(owner, job_id)
        if state is None or state.terminal or clock() >= deadline:
            return store.get(owner, job_id)
    return job
