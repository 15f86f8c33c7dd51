"""Delivering completion webhooks from the outbox: at least once, signed, retried with backoff.

A delivery is sent by `process` right after its job ends (a background thread: the Pub/Sub push
is answered first) and by the sweep's webhook step for whatever is still due. Each attempt
POSTs the snapshot the outbox row holds, with the row's id as the stable `webhook-id` (a
receiver that saw it already acknowledges and ignores it) and a fresh `webhook-timestamp` and
signature. A 2xx answer delivers it; anything else, or no answer, schedules the next attempt
(exponential backoff with jitter) until WEBHOOK_MAX_ATTEMPTS; a target that has become
forbidden is given up at once. Delivering or giving up adds an event to the job's trail and
never changes the job's state.

Logs name the job, the delivery, the host and the status: never the body, the secret or the
URL's path and query (which may hold the receiver's own token).
"""

from __future__ import annotations

import queue
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit
from uuid import UUID

from common.logs import bind_traceparent, log, unbind_trace
from common.messaging import callbacks
from common.messaging.signing import signature_header, unseal
from common.settings import Settings
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.store.webhooks import DueDelivery

MAX_RESPONSE_BYTES = 64 * 1024
SENDERS = 8  # concurrent POSTs in one batch: a slow receiver must not stall the sweep
USER_AGENT = "jobs-pipeline-webhooks/1"
Outcome = Literal["delivered", "pending", "given_up", "fenced"]


@dataclass
class DeliveryReport:
    taken: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class WebhookDeliverer:
    def __init__(self, store: JobStore, settings: Settings,
                 *, rng: random.Random | None = None) -> None:
        self.store = store
        self.settings = settings
        self._rng = rng or random.Random()
        self._queue: queue.SimpleQueue[UUID] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def deliver_due(self, limit: int, *, job_id: UUID | None = None) -> DeliveryReport:
        """Take up to `limit` due deliveries (of one job, if given) and send them."""
        s = self.settings
        lease_s = s.webhook_timeout_s * (limit // SENDERS + 2)
        taken = self.store.take_due_deliveries(limit, lease_s=lease_s, job_id=job_id)
        report = DeliveryReport(taken=len(taken))
        if not taken:
            return report
        with ThreadPoolExecutor(max_workers=min(SENDERS, len(taken)),
                                thread_name_prefix="webhook") as pool:
            for outcome in pool.map(self._attempt, taken):
                report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        return report

    # -- process: right after a job ends, off the request's path -----------------------------

    def after_end(self, job_id: UUID) -> None:
        """Queue a just-ended job's deliveries for the background sender."""
        if self.settings.webhook_process_tries <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, daemon=True,
                                                name="webhook-sender")
                self._thread.start()
        self._queue.put(job_id)

    def _drain(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self._deliver_soon(job_id)
            except Exception as exc:  # the sweep delivers what this thread could not
                log("WARNING", "webhook sender gave way to the sweep", job_id=str(job_id),
                    error=type(exc).__name__)

    def _deliver_soon(self, job_id: UUID) -> None:
        """A few attempts with the usual backoff; later ones are the sweep's."""
        stop = threading.Event()
        for attempt in range(1, self.settings.webhook_process_tries + 1):
            report = self.deliver_due(10, job_id=job_id)
            if report.outcomes.get("pending", 0) == 0 and report.taken:
                return
            if attempt < self.settings.webhook_process_tries:
                stop.wait(self._backoff(attempt) + 0.05)

    # -- one attempt ---------------------------------------------------------------------------

    def _attempt(self, item: DueDelivery) -> Outcome:
        unbind_trace()
        bind_traceparent(item.traceparent, self.settings.google_cloud_project)
        host = urlsplit(item.url).hostname or "?"
        fields = {"job_id": str(item.job_id), "webhook_id": self._msg_id(item),
                  "host": host, "delivery_attempt": item.attempt}
        try:
            outcome, status, error = self._send(item)
            recorded = self._record(item, outcome, status, error)
        except DatabaseUnavailable:
            log("WARNING", "webhook outcome not recorded; it will be sent again", **fields)
            return "fenced"
        log("INFO" if recorded == "delivered" else "WARNING", f"webhook {recorded}",
            status=status, error=error or None, **fields)
        return recorded

    def _send(self, item: DueDelivery) -> tuple[str, int | None, str]:
        s = self.settings
        keys = [item.secret, item.previous_secret]
        try:
            secrets_ = [unseal(k, item.owner_id, s.webhook_secret_key) for k in keys if k]
        except ValueError as exc:
            return "failed", None, f"signing secret unusable: {exc}"
        if not secrets_:
            return "failed", None, "no signing secret: POST /webhook-secret/rotate to create one"
        msg_id = self._msg_id(item)
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(secrets_, msg_id, now, item.body),
        }
        try:
            answer = callbacks.post(
                item.url, item.body.encode(), headers,
                allow_loopback=s.webhook_allow_loopback, timeout_s=s.webhook_timeout_s,
                max_read=MAX_RESPONSE_BYTES,
            )
        except callbacks.ForbiddenTarget as exc:
            return "forbidden", None, f"target refused: {exc}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out, TLS, bad answer
            return "failed", None, f"{type(exc).__name__}: no answer"
        except Exception as exc:  # http.client's protocol errors
            return "failed", None, f"{type(exc).__name__}: bad answer"
        if 200 <= answer.status < 300:
            return "delivered", answer.status, ""
        return "failed", answer.status, f"answered {answer.status}"

    def _record(self, item: DueDelivery, outcome: str, status: int | None,
                error: str) -> Outcome:
        if outcome == "delivered":
            assert status is not None
            done = self.store.delivery_succeeded(item.id, item.attempt, status)
            return "delivered" if done else "fenced"
        state = self.store.webhook_attempt_failed(
            item.id, item.attempt, status=status, error=error,
            delay_s=self._backoff(item.attempt),
            max_attempts=self.settings.webhook_max_attempts, give_up=outcome == "forbidden",
        )
        return "fenced" if state is None else "given_up" if state == "given_up" else "pending"

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.webhook_retry_cap_s, s.webhook_retry_base_s * 2 ** min(attempt - 1, 30))
        return self._rng.uniform(ceiling / 2, ceiling)

    @staticmethod
    def _msg_id(item: DueDelivery) -> str:
        return f"msg_{item.id.hex}"
