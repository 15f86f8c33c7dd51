"""Delivering completion webhooks from the outbox: at least once, signed, retried with backoff.

A delivery is sent by `process` right after its job ends (off the Pub/Sub push's path) and by
the sweep's webhook step for whatever is still due. Each attempt POSTs the snapshot the outbox
row holds, with the row's id as the stable `webhook-id` (a receiver that saw it already
acknowledges and ignores it), a fresh `webhook-timestamp` and signature, and the job's W3C
`traceparent`. A 2xx answer delivers it; anything else, or no complete answer within
WEBHOOK_TIMEOUT_S (one wall-clock deadline for the whole attempt), schedules the next attempt
(exponential backoff with jitter) until WEBHOOK_MAX_ATTEMPTS; a target that has become forbidden
is given up at once. Delivering or giving up adds an event to the job's trail and never changes
the job's state.

One owner never holds up another: sends run on `OwnerLanes` (SENDERS threads, at most PER_OWNER
of one owner's at once, owners in turn), a batch takes at most PER_OWNER of one owner's
deliveries (the rest are given back untried), and lookups are bounded per owner (see
resolver.py). An attempt that could not even start (the owner's lookups busy, the sweep's pass
out of time) is given back: it spends none of the owner's
attempts. A delivery whose owner has no signing secret is not taken: it waits, attempts
untouched, until the owner makes one; so does one whose secret the server's key cannot open
(WEBHOOK_SECRET_KEY was changed), with last_error saying so.

Logs name the job, the delivery, the host and the status: never the body, the secret or the
URL's path and query (which may hold the receiver's own token).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit
from uuid import UUID

from common.logs import bind_traceparent, log, unbind_trace
from common.messaging import callbacks
from common.messaging.lanes import OwnerLanes
from common.messaging.resolver import DEFAULT as DEFAULT_RESOLVER
from common.messaging.resolver import LookupBusy, Resolver
from common.messaging.signing import signature_header, unseal
from common.settings import Settings
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.store.webhooks import DueDelivery

MAX_RESPONSE_BYTES = 64 * 1024
SENDERS = 8  # sender threads per instance
PER_OWNER = 4  # of them, at most this many on one owner's deliveries at once
USER_AGENT = "jobs-pipeline-webhooks/1"
RELEASE_BUSY_S = 1.0  # given back because the owner's lookups are busy: due again after this
# Jobs of one owner waiting for process's lanes at most; past it the sweep sends the rest (their
# outbox rows are committed), so a flood of one owner's ends cannot grow an instance's memory.
MAX_WAITING_PER_OWNER = 100
Outcome = Literal["delivered", "pending", "given_up", "fenced", "released", "waiting"]
UNOPENABLE = ("signing secret cannot be opened with the server's key (WEBHOOK_SECRET_KEY "
              "changed?): waiting, no attempt spent, until the owner makes a new one "
              "(POST /webhook-secret/rotate)")


@dataclass
class DeliveryReport:
    taken: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    retry_in_s: float | None = None  # the soonest recorded retry of a pending outcome

    def add(self, outcome: Outcome, retry_in: float | None) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if retry_in is not None:
            self.retry_in_s = min(retry_in, self.retry_in_s or retry_in)


class WebhookDeliverer:
    def __init__(self, store: JobStore, settings: Settings, *, rng: random.Random | None = None,
                 resolver: Resolver | None = None) -> None:
        self.store = store
        self.settings = settings
        self.resolver = resolver or DEFAULT_RESOLVER
        self._rng = rng or random.Random()
        self.lanes = OwnerLanes(workers=SENDERS, per_owner=PER_OWNER, name="webhook")

    def take(self, limit: int, *, job_id: UUID | None = None,
             busy: Mapping[str, int] | None = None,
             exclude: Collection[UUID] = ()) -> list[DueDelivery]:
        """Take up to `limit` due deliveries (of one job, if given), at most PER_OWNER of one
        owner's counting the `busy` ones it has in flight. The lease covers one attempt that
        starts at once (a taken delivery always has a free lane: see take_due_deliveries)."""
        lease_s = self.settings.webhook_timeout_s * 3
        return self.store.take_due_deliveries(limit, lease_s=lease_s, job_id=job_id,
                                              per_owner=PER_OWNER, busy=busy, exclude=exclude)

    def send(self, item: DueDelivery, until: float | None = None
             ) -> Future[tuple[Outcome, float | None]]:
        """One attempt of a taken delivery on its owner's lane (see attempt)."""
        return self.lanes.submit(item.owner_id, lambda: self.attempt(item, until))

    def deliver_due(self, limit: int, *, job_id: UUID | None = None) -> DeliveryReport:
        """Take up to `limit` due deliveries (of one job, if given) and try each on this thread
        (process's: one of the owner's lanes already)."""
        taken = self.take(limit, job_id=job_id)
        report = DeliveryReport(taken=len(taken))
        for item in taken:
            report.add(*self.attempt(item))
        return report

    # -- process: right after a job ends, off the request's path -----------------------------

    def after_end(self, job_id: UUID, owner: str = "") -> None:
        """Send a just-ended job's deliveries soon, on the owner's lane: a few attempts with the
        usual backoff (waiting in a heap, not on a thread); later ones are the sweep's."""
        if self.settings.webhook_process_tries <= 0:
            return
        if self.lanes.waiting(owner) >= MAX_WAITING_PER_OWNER:
            log("INFO", "webhook left to the sweep: the owner's lane is full", job_id=str(job_id))
            return
        self.lanes.submit(owner, lambda: self._process_try(job_id, owner, 1, 0))

    def _process_try(self, job_id: UUID, owner: str, attempt: int, given_back: int) -> None:
        try:
            report = self.deliver_due(10, job_id=job_id)
        except Exception as exc:  # the sweep delivers what this instance could not
            log("WARNING", "webhook sender gave way to the sweep", job_id=str(job_id),
                error=type(exc).__name__)
            return
        if report.outcomes.get("released") and given_back < 3 * self.settings.webhook_process_tries:
            self.lanes.submit(owner, lambda: self._process_try(job_id, owner, attempt,
                                                               given_back + 1),
                              delay_s=RELEASE_BUSY_S + 0.05)
        elif report.retry_in_s is not None and attempt < self.settings.webhook_process_tries:
            self.lanes.submit(owner, lambda: self._process_try(job_id, owner, attempt + 1,
                                                               given_back),
                              delay_s=report.retry_in_s + 0.05)

    # -- one attempt ---------------------------------------------------------------------------

    def attempt(self, item: DueDelivery, until: float | None = None
                ) -> tuple[Outcome, float | None]:
        """One attempt of a taken delivery, within WEBHOOK_TIMEOUT_S. With `until` (the pass's
        end, time.monotonic()), it starts only if the whole deadline fits before it: an attempt
        is never cut short by the pass, which would spend one of the owner's attempts for our
        lack of time; otherwise it is given back untried."""
        unbind_trace()
        bind_traceparent(item.traceparent, self.settings.google_cloud_project)
        host = urlsplit(item.url).hostname or "?"
        fields = {"job_id": str(item.job_id), "webhook_id": self._msg_id(item),
                  "host": host, "delivery_attempt": item.attempt}
        timeout_s = self.settings.webhook_timeout_s
        try:
            if until is not None and until - time.monotonic() < timeout_s:
                return self._release(item, 0.0), None
            sent = self._send(item, timeout_s)
            if sent is None:  # nothing was tried
                log("INFO", "webhook not tried: the owner's lookups are busy", **fields)
                return self._release(item, RELEASE_BUSY_S), None
            outcome, status, error = sent
            if outcome == "unopenable":  # not the receiver's doing: wait, spending nothing
                log("WARNING", "webhook waits: the owner's signing secret cannot be opened "
                    "with WEBHOOK_SECRET_KEY", **fields)
                return self._park(item, error), None
            recorded, retry_in = self._record(item, outcome, status, error)
        except DatabaseUnavailable:
            log("WARNING", "webhook outcome not recorded; it will be sent again", **fields)
            return "fenced", None
        log("INFO" if recorded == "delivered" else "WARNING", f"webhook {recorded}",
            status=status, error=error or None, **fields)
        return recorded, retry_in

    def _release(self, item: DueDelivery, delay_s: float) -> Outcome:
        try:
            return "released" if self.store.release_delivery(
                item.id, item.attempt, delay_s=delay_s) else "fenced"
        except DatabaseUnavailable:  # the lease runs out and it is taken again
            return "fenced"

    def _park(self, item: DueDelivery, error: str) -> Outcome:
        try:
            return "waiting" if self.store.park_delivery(item.id, item.attempt,
                                                         error=error) else "fenced"
        except DatabaseUnavailable:  # the lease runs out and it is taken again
            return "fenced"

    def _send(self, item: DueDelivery, timeout_s: float) -> tuple[str, int | None, str] | None:
        s = self.settings
        if not item.secret:  # taken only with a secret; deleted since: wait for a new one
            return None
        try:
            secrets_ = [unseal(item.secret, item.owner_id, s.webhook_secret_key)]
        except ValueError:
            return "unopenable", None, UNOPENABLE
        if item.previous_secret:  # still valid after a rotation; one the key cannot open is
            with contextlib.suppress(ValueError):  # left out, the current one signs
                secrets_.append(unseal(item.previous_secret, item.owner_id,
                                       s.webhook_secret_key))
        msg_id = self._msg_id(item)
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(secrets_, msg_id, now, item.body),
        }
        if item.traceparent:
            headers["traceparent"] = item.traceparent  # the job's trace, from submit on
        try:
            answer = callbacks.post(
                item.url, item.body.encode(), headers,
                allow_loopback=s.webhook_allow_loopback, timeout_s=timeout_s,
                max_read=MAX_RESPONSE_BYTES, owner=item.owner_id, resolver=self.resolver,
            )
        except LookupBusy:
            return None
        except callbacks.ForbiddenTarget as exc:
            return "forbidden", None, f"target refused: {exc}"
        except callbacks.DeadlineExceeded as exc:
            return "failed", None, f"DeadlineExceeded: {exc}"
        except (OSError, ValueError) as exc:  # refused, reset, TLS, bad answer
            return "failed", None, f"{type(exc).__name__}: no answer"
        except Exception as exc:  # http.client's protocol errors
            return "failed", None, f"{type(exc).__name__}: bad answer"
        if 200 <= answer.status < 300:
            return "delivered", answer.status, ""
        return "failed", answer.status, f"answered {answer.status}"

    def _record(self, item: DueDelivery, outcome: str, status: int | None,
                error: str) -> tuple[Outcome, float | None]:
        if outcome == "delivered":
            assert status is not None
            done = self.store.delivery_succeeded(item.id, item.attempt, status)
            return ("delivered" if done else "fenced"), None
        delay_s = self._backoff(item.attempt)
        state = self.store.webhook_attempt_failed(
            item.id, item.attempt, status=status, error=error, delay_s=delay_s,
            max_attempts=self.settings.webhook_max_attempts, give_up=outcome == "forbidden",
        )
        if state is None:
            return "fenced", None
        return ("given_up", None) if state == "given_up" else ("pending", delay_s)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.webhook_retry_cap_s, s.webhook_retry_base_s * 2 ** min(attempt - 1, 30))
        return self._rng.uniform(ceiling / 2, ceiling)

    @staticmethod
    def _msg_id(item: DueDelivery) -> str:
        return f"msg_{item.id.hex}"

