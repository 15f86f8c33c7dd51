"""The worker's side of flow control (issue 27): holding a reserved rate slot, releasing the
parked jobs a start or an exit makes room for, and writing the preset limits of settings.

A claim under a rate limit whose next slot is near books it (common/store/flow_sql.py) and
answers `held`: the delivery waits for the slot, on the database's clock (the wait is computed
there, so an instance whose clock is off waits the right time), and claims again. The wait
is bounded by FLOW_HOLD_S and by the push's answer deadline; past the deadline the job is left
PENDING and undispatched with its slot as `not_before`, for the sweep to publish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.logs import log
from common.store.errors import JobStoreError
from common.store.models import ClaimOutcome

if TYPE_CHECKING:
    from common.messaging.dispatch import Dispatcher
    from common.settings import Settings
    from common.store.job_store import JobStore
    from common.store.models import Job

# A held delivery claims again until its slot is free or its answer deadline comes. A re-claim
# normally starts the job; it is held again when an earlier start ran late and another
# reservation took the instant it was held to, and under load that repeats: bench.flow_control
# saw a job held 36 times in a row at 5 starts/s over 2 servers. Giving up (after 20, before)
# left the job reserved and unpublished until the sweep's next pass. The count only guards
# against a loop that would not sleep.
MAX_HOLDS = 10_000


class FlowGate:
    """Claims that honour flow limits, and the releases that follow starts and exits."""

    def __init__(self, store: JobStore, settings: Settings,
                 dispatcher: Dispatcher | None) -> None:
        self.store = store
        self.settings = settings
        self.dispatcher = dispatcher
        self._synced = False
        self._lock = threading.Lock()
        # The first claim of a delivery: the worker's batched one (common/worker/batching.py);
        # a held delivery's re-claims go alone.
        self.first_claim: Callable[[object, int], ClaimOutcome] = self._claim_alone

    def claim(self, job_id: object, attempts: int, answer_by: float) -> ClaimOutcome:
        """Claim, holding a booked rate slot until it is due, while `answer_by` allows."""
        self._sync_preset_limits()
        claim = self.first_claim(job_id, attempts)
        for _ in range(MAX_HOLDS):
            if claim.reason != "held":
                return claim
            wait = min(claim.hold_s, self.settings.flow_hold_s)
            if time.monotonic() + wait >= answer_by:
                return claim  # the sweep publishes it when its slot is due
            time.sleep(wait)
            claim = self._claim_alone(job_id, attempts)
        return claim

    def _claim_alone(self, job_id: object, attempts: int) -> ClaimOutcome:
        return self.store.claim(job_id,  # type: ignore[arg-type]
                                expected_attempts=attempts, lease_s=self.settings.lease_seconds)

    def release(self, job: Job) -> None:
        """Publish the parked jobs the limits over this job have room for now (after a start
        under a rate, or an exit that gave a running slot back). Never fails the delivery: the
        sweep's `flow` step is the safety net."""
        if self.dispatcher is None:
            return
        try:
            taken = self.store.take_flow_parked(job.owner_id, job.preset, job.limit_key)
            self.dispatcher.publish_taken(taken, self.store.release_dispatch)
        except JobStoreError as exc:
            log("WARNING", "flow-parked jobs not released; the sweep will",
                error=type(exc).__name__)

    def _sync_preset_limits(self) -> None:
        """Write PRESET_LIMITS to the database once per instance (rows that agree are not
        written); a failure is retried on the next claim."""
        if self._synced:
            return
        with self._lock:
            if self._synced:
                return
            try:
                self.store.sync_preset_limits(dict(self.settings.preset_limits))
            except JobStoreError as exc:
                log("WARNING", "preset limits not written yet", error=type(exc).__name__)
                return
            self._synced = True
