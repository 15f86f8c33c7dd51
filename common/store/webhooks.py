"""Webhook queries: the owners' signing secrets and the delivery outbox.

Outbox rows are inserted by the trigger of migration 0008 inside the statement that ends a job,
so they are never lost; these statements take them, record each attempt and end them. Taking is
SKIP LOCKED and pushes `next_attempt_at` ahead as a lease, so `process` and the sweep never send
one delivery at the same time; each outcome is fenced by the delivery's attempt number, so a
late answer never overwrites a newer attempt's record. Nothing here touches the job's state:
a delivery only adds an event to the job's trail when it is delivered or given up.

A delivery whose owner has no signing secret is not taken: the first take that meets it moves
it out of the due range (`next_attempt_at` = PARKED_AT), so no later take reads it
again, and the statement that creates or rotates the owner's secret makes it due at once. One
whose secret the server's key cannot open waits the same way (see park_delivery). It spends no
attempt while it waits. A taken delivery that could not even be tried (the
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

# Far ahead of any take: a delivery waiting for its owner's signing secret. Migration 0019's
# partial index ix_webhook_deliveries_waiting repeats this literal.
PARKED_AT = "TIMESTAMPTZ '9999-01-01 00:00:00+00'"


def _take_sql(for_job: bool) -> str:
    only = " AND d.job_id = :job_id" if for_job else ""
    return f"""
WITH due AS (
    SELECT d.id, d.owner_id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.owner_id ORDER BY d.next_attempt_at, d.id) AS n,
           EXISTS (SELECT 1 FROM webhook_secrets s WHERE s.owner_id = d.owner_id) AS signed
    FROM webhook_deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now(){only}
      AND d.id NOT IN (SELECT unnest(CAST(:exclude AS uuid[])))
), picked AS (
    SELECT d.id FROM webhook_deliveries d JOIN due ON due.id = d.id
    WHERE due.n <= :per_owner - coalesce(CAST(CAST(:busy AS jsonb) ->> due.owner_id AS integer), 0)
      AND due.signed
    ORDER BY due.n, due.next_attempt_at LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
), waiting AS (
    UPDATE webhook_deliveries d SET next_attempt_at = {PARKED_AT}
    FROM due WHERE d.id = due.id AND NOT due.signed
      AND d.state = 'pending' AND d.next_attempt_at <= now()
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

# Give a taken attempt back and wait for a secret the server's key can open (see park_delivery).
SQL_PARK = f"""
UPDATE webhook_deliveries SET attempts = attempts - 1, next_attempt_at = {PARKED_AT},
    last_status = NULL, last_error = CAST(:error AS text)
WHERE id = :id AND state = 'pending' AND attempts = :attempt
RETURNING id"""

# Due again: the owner's waiting deliveries, once it has a secret (the rotation's own statement
# does this for its owner; this catches one a take moved just as the secret was being made).
SQL_WAKE_ROTATED = f"""
UPDATE webhook_deliveries d SET next_attempt_at = now()
FROM webhook_secrets s
WHERE s.rotated_at > now() - make_interval(secs => :within_s) AND d.owner_id = s.owner_id
  AND d.state = 'pending' AND d.next_attempt_at = {PARKED_AT}
RETURNING d.id"""

# What the job's owner sees of its latest delivery (GET /jobs/{id}).
SQL_STATE = f"""
SELECT d.id, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error,
       d.delivered_at, s.owner_id IS NOT NULL AS has_secret,
       coalesce(d.next_attempt_at = {PARKED_AT}, false) AS waiting_for_secret
FROM jobs j
LEFT JOIN LATERAL (SELECT * FROM webhook_deliveries w WHERE w.job_id = j.id
                   AND w.workflow_id IS NULL
                   ORDER BY w.created_at DESC, w.id DESC LIMIT 1) d ON true
LEFT JOIN webhook_secrets s ON s.owner_id = j.owner_id
WHERE j.id = :job_id AND j.owner_id = :owner_id"""

# The new secret, and the owner's deliveries that waited for one due at once, in one statement.
SQL_ROTATE = f"""
WITH rotated AS (
    INSERT INTO webhook_secrets AS s (owner_id, secret) VALUES (:owner_id, :secret)
    ON CONFLICT (owner_id) DO UPDATE SET
        previous_secret = s.secret, previous_until = now() + make_interval(secs => :grace_s),
        secret = EXCLUDED.secret, rotated_at = now()
    RETURNING rotated_at, previous_until
), woken AS (
    UPDATE webhook_deliveries SET next_attempt_at = now()
    WHERE owner_id = :owner_id AND state = 'pending' AND next_attempt_at = {PARKED_AT}
)
SELECT rotated_at, previous_until FROM rotated"""

SQL_DELIVERIES = """
SELECT id, job_id, state, attempts, last_status, last_error, delivered_at
FROM webhook_deliveries WHERE job_id = :job_id AND workflow_id IS NULL
ORDER BY created_at, id"""

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

    def park_delivery(self, delivery_id: UUID, attempt: int, *, error: str) -> bool:
        """Give back a taken attempt whose owner's secret cannot be used (the server's key
        cannot open it) and let it wait, like one with no secret, until the owner makes a new
        one; `error` says why, for the owner's view. False if a newer attempt owns it."""
        return bool(self._rows(SQL_PARK, id=delivery_id, attempt=attempt,
                               error=storable_text(error, MAX_DELIVERY_ERROR)))

    def wake_rotated(self, within_s: float) -> int:
        """Make due the waiting deliveries of owners whose secret was made or rotated in the
        last `within_s`; how many."""
        return len(self._rows(SQL_WAKE_ROTATED, within_s=within_s))

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
