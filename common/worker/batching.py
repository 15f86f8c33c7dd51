"""The worker's claims and exits, batched across the deliveries one instance holds at once
(issue 30; the group commit is common/worker/coalescer.py, the statements
common/store/batch_moves.py).

A lone delivery's claim and exit are today's single-row statements. A batch's claim takes the
jobs under no limit in one statement and sends each other member back to claim alone (a limit's
rows and the owner's slot are locked per job, in the order the exits' triggers lock them).
A batch's exits are written in one statement; should the database refuse the batch for one
member's values (an output the checks let through), each member is written alone, so only that
one fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from common.store.errors import DatabaseUnavailable
from common.store.models import ClaimOutcome, JobMove
from common.worker.coalescer import ALONE, Alone, Coalescer

if TYPE_CHECKING:
    from common.settings import Settings
    from common.store.job_store import JobStore
    from common.store.worker_moves import ExitRequest

ClaimRequest = tuple[UUID | str, int]


class Batching:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.claims: Coalescer[ClaimRequest, ClaimOutcome] = Coalescer(
            self._claim_one, self._claim_many)
        self.exits: Coalescer[ExitRequest, JobMove] = Coalescer(store.exit, self._exit_many)

    def claim(self, job_id: object, attempts: int) -> ClaimOutcome:
        # Every owner under a limit (OWNER_MAX_RUNNING): no job is one a batch could claim.
        if not self.settings.worker_batching or self.settings.owner_max_running > 0:
            return self._claim_one((job_id, attempts))  # type: ignore[arg-type]
        return self.claims.submit((job_id, attempts))  # type: ignore[arg-type]

    def exit(self, request: ExitRequest) -> JobMove:
        if not self.settings.worker_batching:
            return self.store.exit(request)
        return self.exits.submit(request)

    def _claim_one(self, request: ClaimRequest) -> ClaimOutcome:
        job_id, attempts = request
        return self.store.claim(job_id, expected_attempts=attempts,
                                lease_s=self.settings.lease_seconds)

    def _claim_many(self, requests: Sequence[ClaimRequest]
                    ) -> Sequence[ClaimOutcome | BaseException | Alone]:
        try:
            outcomes = self.store.claim_many(requests, lease_s=self.settings.lease_seconds)
        except DatabaseUnavailable:
            raise  # every member would have met it alone: each answers 503, as alone
        except Exception:  # refused for one member's sake: each claims alone
            return [ALONE] * len(requests)
        return [ALONE if outcome is None else outcome for outcome in outcomes]

    def _exit_many(self, requests: Sequence[ExitRequest]
                   ) -> Sequence[JobMove | BaseException | Alone]:
        try:
            return self.store.exit_many(requests)
        except DatabaseUnavailable:
            raise  # every member would have met it alone: each retries, as alone
        except Exception:  # one member's values refused: each is written alone
            return [ALONE] * len(requests)
