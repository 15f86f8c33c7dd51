"""Webhook queries: the owners' signing secrets and the delivery outbox.

Outbox rows are inserted by the trigger of migration 0008 inside the statement that ends a job,
so they are never lost; these statements take them, record each attempt and end them. Taking is
SKIP LOCKED and pushes `next_attempt_at` ahead as a lease, so `process` and the sweep never send
one delivery at the same time; each outcome is fenced by the delivery's attempt number, so a
late answer never overwrites a newer attempt's record. Nothing here touches the job's state:
a delivery only adds an event to the job's trail when it is delivered or given up.

A delivery whose owner has no signing secret is not taken at all: it waits, spending no attempt,
and is due as soon as the owner makes one. A taken delivery that could not even be tried (the
owner's share of lookups in use, the pass out of time) is released: its attempt is given back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from common.store.base import StoreBase
from common.store.fragments import as_uuid, checked_owner, storable_text


def _take_sql(for_job: bool) -> str:
    only = " AND d.job_id = :job_id" if for_job else ""
    return f"""
WITH due AS (
    SELECT d.id, d.owner_id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.owner_id ORDER BY d.next_attempt_at, d.id) AS n
    FROM webhook_deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now(){only}
      AND d.id NOT IN (SELECT unnest(CAST(:exclude AS uuid[])))
), picked AS (
    SELECT d.id FROM webhook_deliveries d JOIN due ON due.id = d.id
    WHERE due.n <= :per_owner - coalesce(CAST(CAST(:busy AS jsonb) ->> due.owner_id AS integer), 0)
      AND EXISTS (SELECT 1 FROM webhook_secrets s WHERE s.owner_id = due.owner_id)
    ORDER BY due.n, due.next_attempt_at LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
), taken AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease_s)
    WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) AND d.state = 'pending'
    RETURNING d.id, d.job_id, d.owner_id, d.url, d.traceparent, d.attempts,
              CAST(d.payload AS text) AS body
)
SELECT t.*, s.secret,
       CASE WHEN s.previous_until > now() THEN s.previous_secret END AS previous_secret
FROM taken t LEFT JOIN webhook_secrets s ON s.owner_id = t.owner_id"""


SQL_TAKE = {flag: _take_sql(flag) for flag in (False, True)}


def _event(reason: str, where: str = "") -> str:
    return f"""ev AS (
    INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT j.id, j.state, j.state, '{reason}', j.attempts,
           jsonb_build_object('webhook_id', 'msg_' || replace(CAST(done.id AS text), '-', ''),
                              'delivery_attempts', done.attempts,
                              'status', done.last_status, 'error', done.last_error)
    FROM done JOIN jobs j ON j.id = done.job_id{where}
)"""


SQL_DELIVERED = f"""
WITH done AS (
    UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(),
        last_status = :status, last_error = NULL
    WHERE id = :id AND state = 'pending' AND attempts = :attempt
    RETURNING id, job_id, attempts, last_status, last_error
), {_event("webhook-delivered")}
SELECT id FROM done"""

SQL_FAILED = f"""
WITH done AS (
    UPDATE webhook_deliveries SET
        state = CASE WHEN :give_up OR attempts >= :max_attempts THEN 'given_up'
                     ELSE 'pending' END,
        next_attempt_at = now() + make_interval(secs => :delay_s),
        last_status = CAST(:status AS integer), last_error = CAST(:error AS text)
    WHERE id = :id AND state = 'pending' AND attempts = :attempt
    RETURNING id, job_id, attempts, state, last_status, last_error
), {_event("webhook-given-up", " WHERE done.state = 'given_up'")}
SELECT id, state FROM done"""

# Give a taken attempt back: it was never tried (see WebhookQueries.release_delivery).
SQL_RELEASE = """
UPDATE webhook_deliveries SET attempts = attempts - 1,
    next_attempt_at = now() + make_interval(secs => :delay_s)
WHERE id = :id AND state = 'pending' AND attempts = :attempt
RETURNING id"""

# What the job's owner sees of its latest delivery (GET /jobs/{id}).
SQL_STATE = """
SELECT d.id, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error,
       d.delivered_at, s.owner_id IS NOT NULL AS has_secret
FROM jobs j
LEFT JOIN LATERAL (SELECT * FROM webhook_deliveries w WHERE w.job_id = j.id
                   ORDER BY w.created_at DESC, w.id DESC LIMIT 1) d ON true
LEFT JOIN webhook_secrets s ON s.owner_id = j.owner_id
WHERE j.id = :job_id AND j.owner_id = :owner_id"""

SQL_ROTATE = """
INSERT INTO webhook_secrets AS s (owner_id, secret) VALUES (:owner_id, :secret)
ON CONFLICT (owner_id) DO UPDATE SET
    previous_secret = s.secret, previous_until = now() + make_interval(secs => :grace_s),
    secret = EXCLUDED.secret, rotated_at = now()
RETURNING rotated_at, previous_until"""

SQL_DELIVERIES = """
SELECT id, job_id, state, attempts, last_status, last_error, delivered_at
FROM webhook_deliveries WHERE job_id = :job_id ORDER BY created_at, id"""

MAX_DELIVERY_ERROR = 500


class DueDelivery(NamedTuple):
    """A taken delivery: the stable id (the `webhook-id`), where, what, and the secrets."""

    id: UUID
    job_id: UUID
    owner_id: str
    url: str
    traceparent: str | None
    attempt: int
    body: str
    secret: str | None  # sealed, as stored
    previous_secret: str | None


class Rotation(NamedTuple):
    rotated_at: datetime
    previous_valid_until: datetime | None


class WebhookQueries(StoreBase):
    """The outbox and the secrets; no method here changes a job."""

    def take_due_deliveries(
        self, limit: int, *, lease_s: float, job_id: UUID | None = None, per_owner: int = 4,
        busy: Mapping[str, int] | None = None, exclude: Collection[UUID] = (),
    ) -> list[DueDelivery]:
        """Take up to `limit` due deliveries, at most `per_owner` of one owner's less what
        `busy` says that owner has in flight already, each owner's first ones before anyone's
        second: one owner's backlog is never taken ahead of another owner's first delivery,
        and nothing is taken only to be given back. `exclude`: ids not to take again (already
        tried in this pass)."""
        params: dict[str, Any] = {
            "limit": limit, "lease_s": lease_s, "per_owner": per_owner,
            "busy": json.dumps(dict(busy or {})),
            "exclude": "{" + ",".join(str(as_uuid(i)) for i in exclude) + "}",
        }
        if job_id is not None:
            params["job_id"] = as_uuid(job_id)
        rows = self._rows(SQL_TAKE[job_id is not None], **params)
        return [
            DueDelivery(r["id"], r["job_id"], r["owner_id"], r["url"], r["traceparent"],
                        r["attempts"], r["body"], r["secret"], r["previous_secret"])
            for r in rows
        ]

    def delivery_succeeded(self, delivery_id: UUID, attempt: int, status: int) -> bool:
        return bool(self._rows(SQL_DELIVERED, id=delivery_id, attempt=attempt, status=status))

    def webhook_attempt_failed(
        self, delivery_id: UUID, attempt: int, *, status: int | None, error: str,
        delay_s: float, max_attempts: int, give_up: bool = False,
    ) -> str | None:
        """Record a failed attempt: 'pending' (due again after `delay_s`) or 'given_up' (the
        budget is spent, or `give_up`); None if a newer attempt owns the delivery."""
        rows = self._rows(
            SQL_FAILED, id=delivery_id, attempt=attempt, status=status,
            error=storable_text(error, MAX_DELIVERY_ERROR), delay_s=max(delay_s, 0.0),
            max_attempts=max_attempts, give_up=give_up,
        )
        return str(rows[0]["state"]) if rows else None

    def release_delivery(self, delivery_id: UUID, attempt: int, *, delay_s: float) -> bool:
        """Give back a taken attempt that was never tried, due again after `delay_s`. False if
        a newer attempt owns the delivery."""
        return bool(self._rows(SQL_RELEASE, id=delivery_id, attempt=attempt,
                               delay_s=max(delay_s, 0.0)))

    def webhook_state(self, owner_id: str, job_id: UUID | str) -> dict[str, Any] | None:
        """The job's latest delivery (its columns are None before the job has ended) and
        whether the owner has a signing secret; None if the owner has no such job."""
        rows = self._rows(SQL_STATE, owner_id=checked_owner(owner_id), job_id=as_uuid(job_id))
        return rows[0] if rows else None

    def deliveries(self, job_id: UUID | str) -> list[dict[str, Any]]:
        """A job's deliveries, oldest first (for tests and operators; never shown to callers
        with the URL's secrets, which these rows do not include)."""
        return self._rows(SQL_DELIVERIES, job_id=as_uuid(job_id))

    def rotate_webhook_secret(self, owner_id: str, sealed: str, grace_s: float) -> Rotation:
        """Make `sealed` the owner's secret; the one it replaces stays valid for `grace_s`."""
        rows = self._rows(SQL_ROTATE, owner_id=checked_owner(owner_id), secret=sealed,
                          grace_s=grace_s)
        return Rotation(rows[0]["rotated_at"], rows[0]["previous_until"])
