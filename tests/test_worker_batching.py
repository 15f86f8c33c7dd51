"""The worker's batching (issue 30) through the real Worker and PostgreSQL: deliveries that
arrive while a claim statement runs share the next one, and each still ends once. The batch is
formed deterministically: the first claim is held on a row lock another connection keeps, so
the rest arrive while it runs (counted, never timed)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, create_engine, text

from common.store.states import JobState
from common.worker.outcomes import WorkOutcome
from common.worker.runner import Worker
from tests import test_worker
from tests.support.polling import wait_until
from tests.test_worker import message_for, reasons, submit

tuned, worker = test_worker.tuned, test_worker.worker  # the worker fixtures of test_worker


def _handle(worker: Worker, deliveries: list[Any], indexes: range,
            outcomes: dict[int, WorkOutcome]) -> list[threading.Thread]:
    def run(i: int) -> None:
        outcomes[i] = worker.handle(deliveries[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in indexes]
    for thread in threads:
        thread.start()
    return threads


def test_claims_arriving_while_one_runs_share_one_statement(worker: Worker,
                                                             engine: Engine) -> None:
    jobs = [submit(worker)[0] for _ in range(8)]
    duplicate = message_for(jobs[3], "m-dup")
    deliveries = [message_for(j, f"m-{i}") for i, j in enumerate(jobs)] + [duplicate]
    claims = worker.batching.claims
    outcomes: dict[int, WorkOutcome] = {}
    locking = create_engine(engine.url)  # not the store's autocommit engine: a transaction
    with locking.connect() as blocker:
        blocker.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"),
                        {"id": jobs[0].id})
        first = _handle(worker, deliveries, range(1), outcomes)
        wait_until(lambda: claims._busy, what="the first claim to run")
        rest = _handle(worker, deliveries, range(1, len(deliveries)), outcomes)
        wait_until(lambda: len(claims._queue) == len(deliveries) - 1,
                   what="the other claims to queue behind it")
        blocker.commit()
    locking.dispose()
    for thread in first + rest:
        thread.join(timeout=60)
    assert claims.stats.sizes == {1: 1, 8: 1}  # the lone claim, then one batch of 8
    actions = sorted(o.action for o in outcomes.values())
    assert actions == ["completed"] * 8 + ["skipped"]  # the duplicate claimed nothing
    for job in jobs:
        got = worker.store.get("alice", job.id)
        assert (got.state, got.attempts) == (JobState.COMPLETED, 1)
        assert reasons(worker, job) == ["created", "claimed", "completed"]


def test_without_batching_each_delivery_writes_alone(worker: Worker) -> None:
    worker.settings = worker.batching.settings = worker.settings.model_copy(
        update={"worker_batching": False})
    job, delivery = submit(worker)
    assert worker.handle(delivery).action == "completed"
    assert worker.batching.claims.stats.statements == 0
    assert worker.batching.exits.stats.statements == 0
    assert reasons(worker, job) == ["created", "claimed", "completed"]


def test_an_exit_that_gives_a_slot_back_is_never_batched(worker: Worker) -> None:
    """Its trigger locks the owner's counter: in a batch, counters would be locked in the
    batch's row order, against the order every single move takes them in (a deadlock)."""
    worker.store.set_owner_limit("alice", 2)
    job, delivery = submit(worker)
    assert worker.handle(delivery).action == "completed"
    assert worker.batching.exits.stats.statements == 0  # written alone, outside the coalescer
    worker.store.set_owner_limit("alice", None)
    _, plain = submit(worker)
    assert worker.handle(plain).action == "completed"
    assert worker.batching.exits.stats.statements == 1
    assert reasons(worker, job) == ["created", "claimed", "completed"]
