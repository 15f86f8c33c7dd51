"""A long job's execution (issue 29): `python -m common.worker.execute JOB_ID ATTEMPT`.

The same entry point runs in a Cloud Run job execution and, locally, as a child process of
`process` (common/messaging/executions.py). It takes its attempt first (store.record_execution:
PROCESSING at that attempt, and no other execution named for it), then runs the handler
through the Worker's own path: the same JobContext, heartbeats that extend the lease and read
the cancel flag, the preset's time limit, the outcome written once fenced by the attempt, and
the releases, notification and webhook that follow. It then exits, so a handler that ignored a
cancel or its time limit stops with it.

Maintenance events: Cloud Run sends SIGTSTP about 10 s before migrating a task and SIGCONT
after it; connections may break across one. On SIGTSTP the heartbeats stop using the network
(the handler runs on); on SIGCONT the pool's connections are dropped (the next heartbeat opens
a fresh one) and heartbeats resume. The lease (LEASE_SECONDS) must outlast a migration.

Exit status: 0 when the attempt was run and its outcome written (or was not ours to run), 1
when the database could not be reached to take it or to write it (the lease then lapses and
the sweep rescues the job), 2 for bad arguments.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from uuid import UUID

from sqlalchemy import Engine

from common.logs import log
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.presets.registry import load_registry
from common.settings import get_settings
from common.store.engine import get_engine
from common.store.errors import DatabaseUnavailable
from common.store.job_store import JobStore
from common.worker.runner import Worker


class Maintenance:
    """SIGTSTP / SIGCONT as a gate on the heartbeat's network use (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._paused = threading.Event()
        self._reconnect = threading.Event()
        self.pauses = 0

    def install(self) -> None:
        signal.signal(signal.SIGTSTP, self._pause)
        signal.signal(signal.SIGCONT, self._resume)

    def _pause(self, signum: int, frame: FrameType | None) -> None:
        self.pauses += 1
        self._paused.set()
        log("WARNING", "maintenance event: heartbeats paused until SIGCONT")

    def _resume(self, signum: int, frame: FrameType | None) -> None:
        if self._paused.is_set():
            self._reconnect.set()
            self._paused.clear()
            log("INFO", "maintenance event over: heartbeats resume on fresh connections")

    def ready(self) -> bool:
        """Whether a heartbeat may go out now; the first after a pause drops pooled
        connections first (they may have broken across the migration)."""
        if self._paused.is_set():
            return False
        if self._reconnect.is_set():
            self._reconnect.clear()
            self.engine.dispose()
        return True


def _arguments(argv: list[str]) -> tuple[UUID, int] | None:
    try:
        job_id, attempt = argv
        return UUID(job_id), int(attempt)
    except ValueError:
        return None


def execution_name() -> str:
    """Cloud Run gives each execution's tasks its name; a local child is named by its pid,
    as its parent named it (common/messaging/executions.py: LocalExecutor)."""
    return os.environ.get("CLOUD_RUN_EXECUTION") or f"local-{os.getpid()}"


def main(argv: list[str]) -> int:
    parsed = _arguments(argv)
    if parsed is None:
        log("ERROR", "usage: python -m common.worker.execute JOB_ID ATTEMPT", args=argv)
        return 2
    job_id, attempt = parsed
    name = execution_name()
    settings = get_settings()
    engine = get_engine()
    maintenance = Maintenance(engine)
    maintenance.install()
    store = JobStore(engine, settings)
    try:
        taken = store.record_execution(job_id, attempt, name)
    except DatabaseUnavailable:
        log("ERROR", "execution could not take its attempt: database unavailable",
            job_id=str(job_id), attempt=attempt, execution=name)
        return 1
    if taken is None:
        log("INFO", "execution runs nothing: the attempt is no longer its to run",
            job_id=str(job_id), attempt=attempt, execution=name)
        return 0
    from common.messaging.webhooks import WebhookDeliverer

    registry = load_registry(settings, chaos_log=store.record_chaos_run)
    notifier = Notifier(settings)
    worker = Worker(store, registry, notifier, settings,
                    webhooks=WebhookDeliverer(store, settings), dispatcher=Dispatcher(settings))
    worker.heartbeat_ready = maintenance.ready
    try:
        outcome = worker.run_execution(taken, name)
    except DatabaseUnavailable:
        return 1
    finally:
        notifier.flush()  # the results notification goes out before the execution ends
    log("INFO", "execution finished", job_id=str(job_id), attempt=attempt, execution=name,
        outcome=outcome.action, maintenance_events=maintenance.pauses)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Not a normal interpreter exit: a handler that ignored its cancel or time limit is still
    # running on its thread, and must stop with the execution.
    os._exit(code)
