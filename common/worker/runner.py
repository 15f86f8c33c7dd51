"""The worker: what `process` does with one Pub/Sub message.

Pub/Sub delivers at least once, so any message may arrive twice, late or out of order. The
worker therefore trusts nothing in the message but the job id and the attempt count it was
published for, and lets the database decide: the claim is a guarded compare-and-set that
succeeds for exactly one delivery, and every later write is fenced by the attempt it claimed.

Acknowledge (return normally) whenever redelivering cannot help: a duplicate, a stale message,
a poison message, an outcome the database refused because the job moved on. Raise
`DatabaseUnavailable` when the job could not be claimed or its outcome recorded, so that Pub/Sub
delivers again (and, after its max delivery attempts, dead-letters the message).

An outcome whose write cannot reach the database is retried until the message's answer is due
(the ack deadline less a margin), then kept in the instance (common/worker/kept.py) and the
message is not acknowledged: the redelivery writes the kept outcome without running the handler
again. A handler that succeeded therefore never turns into a FAILED job because our database
was briefly unreachable: its result is written once the database is back, or (the instance gone,
the redelivery elsewhere) its lease lapses and the sweep runs it again, on its last attempt too.

A long preset's job (issue 29) is claimed the same way, then handed off to an execution of its
own (common/worker/long_jobs.py), which runs the handler through this same code.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from common.logs import bind_traceparent, current_traceparent, log, unbind_trace
from common.messaging.dispatch import Dispatcher
from common.messaging.executions import Executor
from common.messaging.job_message import PoisonMessage, backoff, decode_message
from common.messaging.notify import Notifier
from common.presets.base import Handler, JobContext, PermanentError
from common.presets.registry import Registry
from common.settings import Settings
from common.store.errors import (
    DatabaseUnavailable,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    JobStoreError,
)
from common.store.executions import Taken
from common.store.job_store import JobStore
from common.store.models import Job, JobMove
from common.store.states import Move
from common.store.worker_moves import Progress
from common.worker.batching import Batching
from common.worker.flow_gate import FlowGate
from common.worker.handler_threads import HandlerThreads, describe, run_traced
from common.worker.kept import KeptOutcomes
from common.worker.long_jobs import LongJobs
from common.worker.outcomes import Action, Delivery, WorkOutcome
from common.worker.progress import ProgressBox
from common.worker.workflow_steps import WorkflowSteps

if TYPE_CHECKING:  # built by functions/process on first use: not on the cold path
    from common.messaging.webhooks import WebhookDeliverer

# Waits between tries of the final write when the database blips: growing to a cap, so that a
# write lands within WRITE_RETRY_CAP_S of the database coming back. They go on until the
# message's answer is due: the ack deadline less ANSWER_MARGIN_S (or half the ACK_MARGIN_S the
# handler's time limit leaves, if less), and at least the first four.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
WRITE_RETRY_CAP_S = 2.0
ANSWER_MARGIN_S = 5.0


@dataclass(frozen=True)
class _Run:
    """How a handler's run ended, before anything is written."""

    kind: Literal["ok", "permanent", "transient", "timeout", "cancelled", "lease-lost"]
    output: Any = None
    error_type: str = ""
    error_message: str = ""
    duration_ms: int = 0
    progress: Progress | None = None  # the last report no heartbeat stored: the exit does


@dataclass(frozen=True)
class _Kept:
    """An outcome not yet written: the job as claimed (its attempt fences the write), its run,
    and whether its claim took one of its owner's slots."""

    job: Job
    run: _Run
    holds_slot: bool
    flow_held: bool = False  # its claim took a running slot of a preset or key limit


class Worker:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        notifier: Notifier,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        webhooks: WebhookDeliverer | None = None,
        dispatcher: Dispatcher | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.notifier = notifier
        self.settings = settings
        self.webhooks = webhooks
        self._rng = rng or random.Random()
        # Publishes an owner's parked jobs when one of its jobs ends (fair share); without
        # one, the sweep's `parked` step does it.
        self.dispatcher = dispatcher
        self._threads = HandlerThreads()
        self.flow = FlowGate(store, settings, dispatcher)
        # Claims and exits of the deliveries this instance holds at once share statements
        # (issue 30, common/worker/batching.py).
        self.batching = Batching(store, settings)
        self.flow.first_claim = self.batching.claim
        self.workflow = WorkflowSteps(store, dispatcher)
        self.kept: KeptOutcomes[_Kept] = KeptOutcomes()
        # Long jobs (issue 29); inside an execution, whether a heartbeat may use the network
        # now (not between a maintenance event's SIGTSTP and SIGCONT: common/worker/execute.py).
        self.long_jobs = LongJobs(self, executor)
        self.heartbeat_ready: Callable[[], bool] = _always

    def time_limit(self, handler: Handler) -> float:
        """The handler's own limit, cut to end before the ack deadline (less the margin for
        claiming and writing): past it, Pub/Sub would push the message again. A long handler
        runs in an execution of its own, which no ack deadline bounds: LONG_JOB_MAX_S does."""
        if handler.long:
            return min(handler.time_limit_s, self.settings.long_job_max_s)
        return min(handler.time_limit_s, self.settings.ack_deadline_s - self.settings.ack_margin_s)

    def handle(self, delivery: Delivery) -> WorkOutcome:
        """One message. The job's trace (the `traceparent` attribute) is bound first, so every
        line this delivery logs joins the trace of the request that submitted the job."""
        unbind_trace()
        answer_by = time.monotonic() + max(
            self.settings.ack_deadline_s - min(ANSWER_MARGIN_S, self.settings.ack_margin_s / 2),
            sum(WRITE_RETRY_DELAYS))
        traced = bind_traceparent(delivery.attributes.get("traceparent"),
                                  self.settings.google_cloud_project)
        message_id = delivery.message_id or f"unknown-{uuid.uuid4()}"
        try:
            item = decode_message(delivery.data)
        except PoisonMessage as poison:
            first = self.store.record_poison(message_id, poison.reason, poison.excerpt)
            log(
                "WARNING",
                "poison message acknowledged",
                message_id=message_id,
                reason=poison.reason,
                excerpt=poison.excerpt,
                first_delivery=first,
            )
            return WorkOutcome("poison", detail=poison.reason)
        kept = self.kept.take(item.id)
        if kept is not None:  # this instance ran it; the database refused to hear of it then
            written = self._finish(kept, answer_by, message_id)
            if written.action != "fenced":
                return written
            # The job moved on meanwhile (rescued): this message is handled as any other.
        claim = self.flow.claim(item.id, item.attempts, answer_by)
        if claim.reason == "deferred":
            log("INFO", "job deferred: a limit on it is full", job_id=str(item.id),
                message_id=message_id)
            return WorkOutcome("deferred", item.id, claim.reason)
        if claim.job is None:
            log("INFO", "message skipped", job_id=str(item.id), reason=claim.reason,
                message_id=message_id, published_for_attempts=item.attempts)
            return WorkOutcome("skipped", item.id, claim.reason)
        job = claim.job
        if not traced:  # a message published before traces travelled: the row has it
            bind_traceparent(job.traceparent, self.settings.google_cloud_project)
        if claim.rated:  # its start used a rate slot: the next parked jobs may book theirs
            self.flow.release(job)
        handler = self.registry.get(job.preset)
        if handler is not None and handler.long:  # issue 29: run in an execution of its own
            return self.long_jobs.hand_off(job, claim.holds_slot, claim.flow_held, message_id)
        run = self._run(job)
        return self._finish(_Kept(job, run, claim.holds_slot, claim.flow_held), answer_by,
                            message_id)

    def run_execution(self, taken: Taken, name: str) -> WorkOutcome:
        """Inside a long job's execution that took its attempt: the same `_run` and `_finish`
        as a push, the write retried while the lease would hold (common/worker/long_jobs.py)."""
        bind_traceparent(taken.job.traceparent, self.settings.google_cloud_project)
        run = self._run(taken.job)
        return self._finish(_Kept(taken.job, run, taken.holds_slot, taken.flow_held),
                            time.monotonic() + self.settings.lease_seconds, f"execution:{name}")

    def _finish(self, kept: _Kept, answer_by: float, message_id: str) -> WorkOutcome:
        """Write a run's outcome, retrying until `answer_by` while the database is away; past
        it, keep the outcome for the redelivery and raise DatabaseUnavailable (not acked)."""
        job, run = kept.job, kept.run
        try:
            outcome = self._record(job, run, answer_by, shared=_holds_nothing(kept))
        except DatabaseUnavailable:
            self.kept.keep(job.id, kept)
            log("ERROR", "could not record the outcome; kept for the redelivery",
                job_id=str(job.id), attempt=job.attempts, run=run.kind, message_id=message_id)
            raise
        if outcome.action in ("completed", "failed", "retry-scheduled", "cancelled"):
            if kept.holds_slot:
                self._release_parked(job.owner_id)
            if kept.flow_held:
                self.flow.release(job)
        log(
            "INFO" if outcome.action in ("completed", "cancelled") else "WARNING",
            "job attempt finished",
            job_id=str(job.id),
            preset=job.preset,
            attempt=job.attempts,
            outcome=outcome.action,
            run=run.kind,
            error_type=run.error_type or None,
            duration_ms=run.duration_ms,
            message_id=message_id,
        )
        return outcome

    def _release_parked(self, owner_id: str) -> None:
        """This job's slot is free: publish its owner's oldest parked jobs now, after the exit
        was written (the sweep's `parked` step is the safety net). Only a job that held a slot
        gets here: an owner without a limit has nothing parked, and its jobs skip this query.
        Never fails the delivery."""
        if self.dispatcher is None:
            return
        try:
            self.dispatcher.publish_taken(self.store.take_parked(owner_id),
                                          self.store.release_dispatch)
        except JobStoreError as exc:
            log("WARNING", "parked jobs not released; the sweep will", error=type(exc).__name__)

    # -- running the handler -----------------------------------------------------------------

    def _run(self, job: Job) -> _Run:
        handler = self.registry.get(job.preset)
        if handler is None:  # the preset was removed after the job was accepted
            return _Run("permanent", error_type="UnknownPreset",
                        error_message=f"no handler for preset {job.preset!r} on this worker")
        try:
            options = handler.parse(job.content, job.metadata)
        except Exception as exc:  # PermanentError, or a surprise in the preset's options model
            return _Run("permanent", error_type="InvalidJob", error_message=describe(exc)[1])
        stop = threading.Event()
        box = ProgressBox()
        ctx = JobContext(job_id=str(job.id), attempt=job.attempts, cancelled=stop.is_set,
                         progress=box.report, parents=self.workflow.parents(job),
                         spawn=self.workflow.spawner(job))
        started = time.monotonic()
        future = self._threads.start(
            run_traced, current_traceparent(), self.settings.google_cloud_project,
            handler.run, ctx, job.content, options,
        )
        try:
            run = self._supervise(job, handler, future, stop, started, box)
        finally:
            stop.set()  # whatever happened, a handler still running must know it is abandoned
        return replace(run, progress=box.take())

    def _supervise(
        self, job: Job, handler: Handler, future: Future[Any], stop: threading.Event,
        started: float, box: ProgressBox,
    ) -> _Run:
        """Wait for the handler, extending the lease every heartbeat, until it returns, its
        time limit passes, the owner cancels, or the lease turns out to be lost. Each heartbeat
        carries the handler's latest progress, if it reported any since the last one."""
        deadline = started + self.time_limit(handler)

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _Run("timeout", error_type="TimeLimitExceeded",
                            error_message=f"ran past its time limit of "
                                          f"{self.time_limit(handler):g} s",
                            duration_ms=took())
            try:
                value = future.result(timeout=min(self.settings.heartbeat_s, remaining))
            except FutureTimeout:
                pass
            except PermanentError as exc:
                return _Run("permanent", error_type="PermanentError",
                            error_message=describe(exc)[1], duration_ms=took())
            except Exception as exc:  # TransientError, and any surprise, may pass next time
                error_type, message = describe(exc)
                return _Run("transient", error_type=error_type, error_message=message,
                            duration_ms=took())
            else:
                return _Run("ok", output=value, duration_ms=took())
            if not self.heartbeat_ready():  # a maintenance event: no network until it ends
                continue
            progress = box.take()
            try:
                cancel = self.store.extend_lease(
                    job.id, job.attempts, lease_s=self.settings.lease_seconds, progress=progress
                )
            except (IllegalTransition, JobNotFound):
                return _Run("lease-lost", duration_ms=took())
            except DatabaseUnavailable:
                box.untake(progress)
                continue  # the lease may still hold; the final write is fenced either way
            if cancel:
                return _Run("cancelled", duration_ms=took())

    # -- recording the outcome -----------------------------------------------------------------

    def _record(self, job: Job, run: _Run, answer_by: float, *, shared: bool) -> WorkOutcome:
        """Write the outcome. DatabaseUnavailable if the database stayed away until
        `answer_by` (the caller keeps the outcome and does not acknowledge)."""
        if run.kind == "lease-lost":  # another attempt owns the job now: write nothing
            return WorkOutcome("lease-lost", job.id)
        try:
            move = self._with_retries(lambda: self._write(job, run, shared), answer_by)
        except (IllegalTransition, JobNotFound) as exc:
            return WorkOutcome("fenced", job.id, type(exc).__name__)
        if move.state.terminal:
            self.notifier.terminal([(job.id, job.owner_id, move.state)])
            if move.has_children:  # a workflow step: publish the steps its end made due
                self.workflow.release_unblocked(job)
            # A workflow step's end may end its workflow, whose own webhook goes out with it.
            if (job.callback_url or move.workflow_hook) and self.webhooks is not None:
                self.webhooks.after_end(job.id, job.owner_id)  # its outbox row is committed
        action: Action = {
            "COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled",
            "PENDING": "retry-scheduled",
        }[move.state.value]  # type: ignore[assignment]
        return WorkOutcome(action, job.id, move.state.value)

    def _write(self, job: Job, run: _Run, shared: bool) -> JobMove:
        """The exit for this run: `shared` (a job that holds no slot, no flow row, in no
        workflow) through the instance's batching of exits, else alone."""
        store = self.store
        write = self.batching.exit if shared else store.exit
        if run.kind == "ok":
            try:
                return write(store.complete_request(job.id, job.attempts, run.output,
                                                    duration_ms=run.duration_ms,
                                                    progress=run.progress))
            except InvalidInput as exc:  # unstorable output: no retry can fix the handler's code
                reason = f"output cannot be stored: {exc.message}"
            except JobStoreError:
                raise  # unavailable (retried) or fenced (acknowledged): decided by the caller
            except Exception as exc:  # refused by the database in a way the check did not foresee
                reason = f"output cannot be stored: the database refused it ({type(exc).__name__})"
            return write(store.fail_request(job.id, job.attempts, "InvalidOutput", reason,
                                            duration_ms=run.duration_ms, progress=run.progress))
        if run.kind == "cancelled":
            return write(store.exit_request(Move.CONFIRM_CANCEL, job.id, job.attempts,
                                            run.progress))
        if run.kind == "permanent":
            return write(store.fail_request(job.id, job.attempts, run.error_type,
                                            run.error_message, duration_ms=run.duration_ms,
                                            progress=run.progress))
        delay = backoff(job.attempts, base_s=self.settings.retry_base_s,
                        cap_s=self.settings.retry_cap_s, rng=self._rng)
        return write(store.retry_later_request(
            job.id, job.attempts, run.error_type, run.error_message, delay=delay,
            duration_ms=run.duration_ms, progress=run.progress))

    @staticmethod
    def _with_retries(write: Callable[[], JobMove], answer_by: float) -> JobMove:
        """`write` until it is not refused for the database's absence, waiting a growing,
        capped delay between tries, the last try before `answer_by`."""
        delays = iter(WRITE_RETRY_DELAYS)
        while True:
            try:
                return write()
            except DatabaseUnavailable:
                delay = next(delays, WRITE_RETRY_CAP_S)
                if time.monotonic() + delay >= answer_by:
                    raise
                time.sleep(delay)


def _holds_nothing(kept: _Kept) -> bool:
    """Whether this exit locks nothing but its own job row: no owner slot, no flow row, no
    workflow step. Only such exits share a statement: the triggers of the others lock counters,
    flow rows and workflows, which a batch would take in its rows' order, against the one
    order every single move takes them in (common/store/flow_sql.py), and so could deadlock."""
    return not kept.holds_slot and not kept.flow_held and kept.job.workflow_id is None


def _always() -> bool:
    return True
