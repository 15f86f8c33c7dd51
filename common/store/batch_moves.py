"""The worker's hot statements for many deliveries at once (issue 30): the claims, and the
exits, of the deliveries one `process` instance holds at the same moment, each batch in one
statement, as River's batch completer writes its completions.

Each row keeps the guard it has alone: state and attempt (the fencing token), the lease, the
owner's slot and the delivery-failure reset. A batch only shares the round trip, the plan and the
commit; an outcome is reported to its delivery after that commit, never before. What a batch
cannot settle by itself (a job under a limit, a row that moved under the statement, a refused
exit) is settled the way it is alone, so a batch member gets the answer it would get alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from common.store.claim_sql import SQL_CLAIM_MANY
from common.store.errors import JobStoreError
from common.store.exit_sql import EXIT_COLUMNS, SQL_EXIT_MANY
from common.store.fragments import as_uuid, job_from_row
from common.store.models import ClaimOutcome, JobMove
from common.store.worker_moves import ExitRequest, WorkerMoves, skipped


class BatchMoves(WorkerMoves):
    """Claims and exits of many jobs, one statement a batch."""

    def claim_many(
        self, requests: Sequence[tuple[UUID | str, int]], *, lease_s: float | None = None,
    ) -> list[ClaimOutcome | None]:
        """Claim each (job, attempt its message was published for). An outcome per request, in
        order; None where the single claim must decide (a job under a limit, one a concurrent
        write moved, a job asked for twice in the batch: only its first request is claimed
        here, so one message's duplicates can never both take the job)."""
        asked = [(as_uuid(job_id), attempts) for job_id, attempts in requests]
        first: dict[UUID, int] = {}
        for index, (job_id, _) in enumerate(asked):
            first.setdefault(job_id, index)
        batch = [asked[i] for i in sorted(first.values())]
        rows = self._rows(
            SQL_CLAIM_MANY, ids=[str(job_id) for job_id, _ in batch],
            expected=[attempts for _, attempts in batch],
            lease_s=lease_s or self._settings.lease_seconds,
            default_limit=self._settings.owner_max_running)
        by_id = {row["r_id"]: row for row in rows}
        settled = {job_id: _claim_outcome(by_id[job_id], expected) for job_id, expected in batch}
        return [settled[job_id] if first[job_id] == index else None
                for index, (job_id, _) in enumerate(asked)]

    def exit_many(self, requests: Sequence[ExitRequest]) -> list[JobMove | JobStoreError]:
        """Write each exit, fenced by its attempt. A move per request, in order, or the refusal
        the exit alone would raise (read after the batch committed, for the refused only). A
        job with two exits in one batch (never in practice: an attempt ends once) has its
        later ones written alone, after."""
        seen: set[UUID] = set()
        batch: list[ExitRequest] = []
        later: list[int] = []
        for index, request in enumerate(requests):
            if request.job_id in seen:
                later.append(index)
            else:
                seen.add(request.job_id)
                batch.append(request)
        exits = [{f"r_{name}": value for name, value in {
            **request.values, "id": str(request.job_id), "attempt": request.attempt,
            "move": request.move.value}.items() if name in EXIT_COLUMNS} for request in batch]
        moved = {row["id"]: JobMove.model_validate(row)
                 for row in self._rows(SQL_EXIT_MANY, exits=json.dumps(exits))}
        results: list[JobMove | JobStoreError] = []
        for index, request in enumerate(requests):
            if request.job_id in moved and index not in later:
                results.append(moved[request.job_id])
                continue
            try:  # each member's own answer: an error here is this member's alone
                if index in later:
                    results.append(self.exit(request))
                else:
                    results.append(self._explain_refusal(request.job_id, request.move,
                                                         request.attempt))
            except JobStoreError as error:
                results.append(error)
        return results


def _claim_outcome(row: dict[str, Any], expected: int) -> ClaimOutcome | None:
    """Claimed, or why not as the statement's snapshot saw the row; None (claimable, under a
    limit, or not due) for the single claim to decide and say why."""
    state, attempts = row.pop("p_state"), row.pop("p_attempts")
    row.pop("r_id")
    if row.get("id") is not None:
        return ClaimOutcome(job=job_from_row(row), reason="claimed")
    return skipped(state, attempts, expected)
