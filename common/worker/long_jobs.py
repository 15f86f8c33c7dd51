"""The push path's side of a long job (issue 29): after the claim, start one execution for the
attempt and name it on the job; or, when it cannot start, give the attempt back.

The push is acknowledged either way. A second push for the same attempt never gets here (its
claim finds the job PROCESSING), and a second execution of one attempt runs nothing (the
execution's own record of its name is refused: common/store/executions.py). The execution
(common/worker/execute.py) runs the handler through the Worker's `run_execution`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.logs import log
from common.messaging.executions import Executor, StartFailed, executor_for
from common.store.errors import DatabaseUnavailable
from common.worker.outcomes import WorkOutcome

if TYPE_CHECKING:
    from common.store.models import Job
    from common.worker.runner import Worker


class LongJobs:
    def __init__(self, worker: Worker, executor: Executor | None = None) -> None:
        self.worker = worker
        self._executor = executor

    @property
    def executor(self) -> Executor:
        """Built on the first long job, so a deployment without any never builds one."""
        if self._executor is None:
            self._executor = executor_for(self.worker.settings)
        return self._executor

    def hand_off(self, job: Job, holds_slot: bool, flow_held: bool,
                 message_id: str) -> WorkOutcome:
        """Start the attempt's execution and name it (the execution names itself too, so a
        record lost to a database blip loses nothing)."""
        try:
            name = self.executor.start(job.id, job.attempts)
        except StartFailed as exc:
            return self._start_failed(job, holds_slot, flow_held, str(exc), message_id)
        try:
            taken = self.worker.store.record_execution(job.id, job.attempts, name)
        except DatabaseUnavailable:
            taken = None
        log("INFO", "job handed off to an execution", job_id=str(job.id), preset=job.preset,
            attempt=job.attempts, execution=name, recorded=taken is not None,
            message_id=message_id)
        return WorkOutcome("handed-off", job.id, name)

    def _start_failed(self, job: Job, holds_slot: bool, flow_held: bool, error: str,
                      message_id: str) -> WorkOutcome:
        """A delivery failure, not the job's: the attempt is given back and the job waits
        (store.start_failed), and what its claim held is released. DatabaseUnavailable
        propagates: the push is not acknowledged, and if no redelivery can help, the lease
        lapses and the sweep rescues the job."""
        w = self.worker
        failure = w.store.start_failed(job.id, job.attempts, error)
        log("ERROR", "could not start the job's execution", job_id=str(job.id),
            attempt=job.attempts, error=error, message_id=message_id,
            state=failure.state.value if failure else None,
            start_failures=failure.failures if failure else None)
        if failure is None:  # an execution took the attempt after all (a start that timed out)
            return WorkOutcome("handed-off", job.id, "started after all")
        if holds_slot:
            w._release_parked(job.owner_id)
        if flow_held:
            w.flow.release(job)
        if failure.state.terminal:
            w.notifier.terminal([(job.id, job.owner_id, failure.state)])
            w.workflow.release_unblocked(job)
            if (job.callback_url or job.workflow_id) and w.webhooks is not None:
                w.webhooks.after_end(job.id, job.owner_id)
        return WorkOutcome("start-failed", job.id, failure.state.value)
