"""Batch submit: up to MAX_BATCH_ITEMS new jobs of one owner in one statement.

One INSERT … SELECT over the batch, sent as one JSON parameter (`jsonb_to_recordset`), is one
round trip and one transaction: every job of the batch is committed, or none is. Each item keeps
its own idempotency key: a key already used by this owner is skipped by ON CONFLICT and answered
from the stored row in the same statement (a replay, or a conflict when the request differs).
The new ids come from a materialised CTE (`uuid_v7()`, as a single insert's default), so the
statement can tell each item which row it became.

Items the store refuses (a lone surrogate, unknown preset, content or metadata over the limit,
run_at too far ahead) are answered one by one and never reach the statement; the caller (the
API) refuses batch-level faults (too many items, duplicate keys) before calling.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.store.callers import CallerOperations
from common.store.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidInput,
    JobStoreError,
    PendingLimitReached,
)
from common.store.fragments import (
    COLS,
    J_COLS,
    RESULT_COLS,
    P,
    checked_owner,
    job_from_row,
    lit,
    request_hash,
    target,
)
from common.store.models import DEFAULT_PRIORITY, Job, NewJob
from common.store.states import Move
from common.store.timing import resolve_not_before

# Pub/Sub takes at most 1,000 messages in one Publish call: a batch is one publish.
MAX_BATCH_ITEMS = 1000

_NOT_BEFORE = (
    "CASE WHEN t.delay_s > 0 THEN now() + make_interval(secs => t.delay_s) "
    "WHEN t.not_before > now() THEN t.not_before END"
)

# `input` is materialised (it calls a volatile function and is read twice), so the ids the
# INSERT writes are the ids the final SELECT joins on. With the owner's PENDING quota (issue 27,
# the door), the batch is one request of as many jobs as it would create: `fresh` counts the
# items whose key this owner has not used (a replay adds nothing), `room` the owner's PENDING
# jobs (at most :max_pending index entries, as a single create counts them), and every job of
# the batch is written only if all of them fit.
def _create_many_sql(quota: bool) -> str:
    counts = f"""
), room AS (
    SELECT count(*) AS pending_seen FROM (
        SELECT 1 FROM jobs WHERE owner_id = :owner_id AND state = {lit(P)}
        LIMIT CAST(:max_pending AS integer)) q
), fresh AS (
    SELECT count(*) AS n FROM input t
    WHERE t.idempotency_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs j WHERE j.owner_id = :owner_id
                               AND j.idempotency_key = t.idempotency_key)""" if quota else ""
    fits = ("\n    WHERE (SELECT pending_seen FROM room) + (SELECT n FROM fresh) "
            "<= CAST(:max_pending AS integer)") if quota else ""
    return f"""
WITH input AS MATERIALIZED (
    SELECT t.*, uuid_v7() AS new_id
    FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS t(
        i integer, preset text, content text, metadata jsonb, max_attempts integer,
        idempotency_key text, request_hash text, callback_url text,
        not_before timestamptz, delay_s double precision, priority smallint,
        limit_key text){counts}
), ins AS (
    INSERT INTO jobs AS j (id, owner_id, preset, content, metadata, max_attempts, attempt_limit,
                      idempotency_key, request_hash, state, callback_url, trace,
                      not_before, dispatched_at, priority, limit_key)
    SELECT t.new_id, :owner_id, t.preset, t.content, t.metadata, t.max_attempts,
           t.max_attempts, t.idempotency_key, t.request_hash, {target(Move.CREATE)},
           t.callback_url, traceparent_bytes(CAST(:traceparent AS text)), {_NOT_BEFORE},
           CASE WHEN ({_NOT_BEFORE}) IS NULL THEN now() END, t.priority, t.limit_key
    FROM input t{fits} ORDER BY t.i
    ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {COLS}, {RESULT_COLS}
)
SELECT t.i AS batch_index, true AS batch_created, CAST(NULL AS text) AS request_hash, ins.*
FROM input t JOIN ins ON ins.id = t.new_id
UNION ALL
SELECT t.i, false, j.request_hash, {J_COLS}, {RESULT_COLS}
FROM input t JOIN jobs j ON j.owner_id = :owner_id AND j.idempotency_key = t.idempotency_key
WHERE t.idempotency_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = t.new_id)"""


SQL_CREATE_MANY = {quota: _create_many_sql(quota) for quota in (False, True)}

# Keys whose row the statement could not see (inserted by a concurrent request that committed
# after the statement's snapshot): read again, as a single create does.
SQL_BY_KEYS = f"""
SELECT {J_COLS}, j.request_hash, {RESULT_COLS} FROM jobs j
WHERE j.owner_id = :owner_id AND j.idempotency_key = ANY(CAST(:keys AS text[]))"""


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one item: created, replayed (created False), or refused (`error`)."""

    job: Job | None
    created: bool
    error: JobStoreError | None = None


class BatchQueries(CallerOperations):
    """Batch create for one owner."""

    def create_many(
        self, owner_id: str, items: Sequence[NewJob], *, traceparent: str | None = None,
        max_pending: int = 0,
    ) -> list[BatchOutcome]:
        """Create the batch's jobs in one statement; one outcome per item, in order. A due job
        is stamped dispatched as it is created (see JobService.submit_many, which publishes the
        batch and releases what fails). Idempotency keys must be distinct within the batch.
        With `max_pending` above 0, the batch's new jobs are written only if the owner's
        PENDING jobs and they together stay within it; else PendingLimitReached, and nothing
        is written."""
        owner = checked_owner(owner_id)
        if len(items) > MAX_BATCH_ITEMS:
            raise InvalidInput("jobs", f"at most {MAX_BATCH_ITEMS} items")
        keys = [n.idempotency_key for n in items if n.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise InvalidInput("jobs", "idempotency keys must be distinct within a batch")
        outcomes: list[BatchOutcome | None] = [None] * len(items)
        rows: list[dict[str, Any]] = []
        hashes: dict[int, str | None] = {}
        now = datetime.now(UTC)
        for index, new in enumerate(items):
            try:
                rows.append(self._batch_row(index, new, now))
                hashes[index] = rows[-1]["request_hash"]
            except InvalidInput as exc:
                outcomes[index] = BatchOutcome(None, False, exc)
        if rows:
            quota = {"max_pending": max_pending} if max_pending > 0 else {}
            found = self._rows(SQL_CREATE_MANY[max_pending > 0], owner_id=owner,
                               traceparent=traceparent, **quota,
                               items=json.dumps(rows, ensure_ascii=False, allow_nan=False,
                                                separators=(",", ":")))
            for row in found:
                index = int(row.pop("batch_index"))
                created = bool(row.pop("batch_created"))
                outcomes[index] = _outcome(row, created, hashes[index])
            missing = [i for i in hashes if outcomes[i] is None]
            keyed = [i for i in missing if items[i].idempotency_key is not None]
            if keyed:
                self._settle_races(owner, items, keyed, hashes, outcomes)
            if max_pending > 0 and any(outcomes[i] is None for i in missing):
                raise PendingLimitReached(max_pending)  # the quota kept every new job out
        return [o if o is not None else BatchOutcome(None, False, DatabaseUnavailable("race"))
                for o in outcomes]

    def _batch_row(self, index: int, new: NewJob, now: datetime) -> dict[str, Any]:
        self._check_new_job(new)
        max_attempts = new.max_attempts or self._settings.default_max_attempts
        not_before, delay_s = resolve_not_before(
            new.run_at, new.delay_s, max_days=self._settings.max_run_ahead_days, now=now)
        return {
            "i": index, "preset": new.preset, "content": new.content,
            "metadata": new.metadata,  # checked storable by _check_new_job
            "max_attempts": max_attempts, "idempotency_key": new.idempotency_key,
            "request_hash": (request_hash(new, max_attempts)
                             if new.idempotency_key is not None else None),
            "callback_url": new.callback_url,
            "priority": new.priority if new.priority is not None else DEFAULT_PRIORITY,
            "limit_key": new.limit_key,
            "not_before": not_before.isoformat() if not_before is not None else None,
            "delay_s": delay_s,
        }

    def _settle_races(
        self, owner: str, items: Sequence[NewJob], missing: list[int],
        hashes: dict[int, str | None], outcomes: list[BatchOutcome | None],
    ) -> None:
        by_key = {items[i].idempotency_key: i for i in missing}
        for row in self._rows(SQL_BY_KEYS, owner_id=owner, keys=list(by_key)):
            index = by_key[row["idempotency_key"]]
            outcomes[index] = _outcome(row, False, hashes[index])


def _outcome(row: dict[str, Any], created: bool, digest: str | None) -> BatchOutcome:
    stored_hash = row.pop("request_hash", None)
    if not created and stored_hash != digest:
        return BatchOutcome(None, False, IdempotencyConflict(row["id"]))
    return BatchOutcome(job_from_row(row), created)

