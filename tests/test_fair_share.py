"""Fair share between owners (issue 15): per-owner limits on PROCESSING jobs, enforced by the
claim on the real stack. Counted from the database, never from the clock."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.maintenance import parked
from common.maintenance.budget import Budget
from common.messaging.dispatch import Dispatcher
from common.store.errors import InvalidInput
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import new_job
from tests.process_fixtures import Pipeline


class Recorder(Dispatcher):
    """A dispatcher that accepts every message and keeps it, instead of publishing."""

    def __init__(self) -> None:  # no Pub/Sub client: nothing is sent
        self.sent: list[Any] = []

    def publish(self, items: Any) -> list[Any]:
        batch = list(items)
        self.sent += batch
        return batch


def _deferred_events(engine: Engine, job_id: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM job_trail WHERE job_id = :id AND reason = 'deferred'"),
            {"id": job_id}).scalar_one())


def test_a_claim_over_the_limit_is_deferred_once_without_spending_an_attempt(
    store: JobStore, engine: Engine
) -> None:
    store.set_owner_limit("alice", 2)
    jobs = [store.create("alice", new_job())[0] for _ in range(3)]
    first, second = (store.claim(j.id) for j in jobs[:2])
    assert first.reason == second.reason == "claimed"
    for _ in range(3):  # a message delivered again and again: one event, no attempt
        assert store.claim(jobs[2].id).reason == "deferred"
    parked_job = store.get("alice", jobs[2].id)
    assert parked_job.state is JobState.PENDING and parked_job.attempts == 0
    assert _deferred_events(engine, jobs[2].id) == 1
    assert store.take_parked("alice") == []  # no free slot yet
    assert store.claim(store.create("bob", new_job())[0].id).reason == "claimed"  # bob: no limit
    assert first.job is not None
    store.complete(first.job.id, first.job.attempts, {"ok": True})
    taken = store.take_parked("alice")
    assert [t.id for t in taken] == [jobs[2].id]
    assert store.take_parked("alice") == []  # taken once: a second worker finds nothing
    claimed = store.claim(jobs[2].id)
    assert claimed.reason == "claimed" and claimed.job is not None
    assert claimed.job.attempts == 1


def test_concurrent_claims_for_one_owner_never_pass_the_limit(store: JobStore,
                                                              engine: Engine) -> None:
    limit, workers, total = 3, 12, 60
    store.set_owner_limit("alice", limit)
    for _ in range(total):
        store.create("alice", new_job())
    samples: list[int] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    go = threading.Barrier(workers)

    def running() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM jobs WHERE owner_id = 'alice' AND state = 'PROCESSING'"
            )).scalar_one())

    def work(seed: int) -> None:
        rng = random.Random(seed)
        go.wait()
        for _ in range(400):
            with engine.connect() as conn:
                pending = [r[0] for r in conn.execute(text(
                    "SELECT id FROM jobs WHERE owner_id = 'alice' AND state = 'PENDING'"))]
            if not pending:
                return
            claim = store.claim(rng.choice(pending))
            with lock:
                outcomes[claim.reason] += 1
            if claim.job is not None:
                seen = running()  # a consistent snapshot, taken while this job holds a slot
                with lock:
                    samples.append(seen)
                time.sleep(0.005)  # hold the slot a moment, so that other claims meet the limit
                store.complete(claim.job.id, claim.job.attempts, {"ok": True})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["claimed"] == total and len(samples) == total
    assert outcomes["deferred"] > 0  # the limit was actually contended
    assert max(samples) <= limit, Counter(samples)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT running FROM owner_running WHERE owner_id = 'alice'")
                            ).scalar_one() == 0


def test_the_sweep_releases_parked_jobs_of_owners_with_room(store: JobStore) -> None:
    from common.service import JobService

    store.set_owner_limit("alice", 1)
    a, b = (store.create("alice", new_job())[0] for _ in range(2))
    held = store.claim(a.id).job
    assert held is not None and store.claim(b.id).reason == "deferred"
    recorder = Recorder()
    service = JobService(store, recorder)
    assert parked.release(service, Budget(60), 100)["published"] == 0  # still no room
    store.set_owner_limit("alice", 2)  # an operator raises the limit
    assert parked.release(service, Budget(60), 100)["published"] == 1
    assert [i.id for i in recorder.sent] == [b.id]


def test_a_parked_job_is_never_taken_for_stranded_but_a_released_one_is(
    store: JobStore, engine: Engine
) -> None:
    """Stall detection republishes a message sent into a silent worker. A parked job is PENDING
    with its dispatch stamped and never claimed, by design: waiting for its owner's slot is not
    a stall, however long and however quiet the worker. Once released (published again after
    the deferral) it is an ordinary outstanding message, and a silent worker strands it."""
    store.set_owner_limit("alice", 1)
    held_job, waiting = (store.create("alice", new_job())[0] for _ in range(2))
    held = store.claim(held_job.id).job
    assert held is not None and store.claim(waiting.id).reason == "deferred"

    def age(assignments: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE jobs SET {assignments} WHERE id = :id"),
                         {"id": waiting.id})

    # Published and deferred ten minutes ago; the running job's last heartbeat came before.
    age("dispatched_at = now() - interval '11 minutes', "
        "deferred_at = now() - interval '10 minutes'")
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET started_at = now() - interval '1 hour', "
                          "lease_expires_at = now() - interval '30 minutes' WHERE id = :id"),
                     {"id": held.id})
    assert store.take_stranded(10, 60) == []
    age("dispatched_at = now() - interval '5 minutes'")  # released after the deferral...
    assert [t.id for t in store.take_stranded(10, 60)] == [waiting.id]  # ...and never claimed


def test_limits_refuse_bad_values(store: JobStore) -> None:
    for bad in (-1, 100_001, True):
        with pytest.raises(InvalidInput):
            store.set_owner_limit("alice", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.set_owner_limit("\ud800", 1)


def _counter(engine: Engine, owner: str) -> int | None:
    with engine.connect() as conn:
        value = conn.execute(text("SELECT running FROM owner_running WHERE owner_id = :o"),
                             {"o": owner}).scalar()
    return None if value is None else int(value)


def test_an_owner_without_a_limit_keeps_no_counter(store: JobStore, engine: Engine) -> None:
    """Counting is for limits: an unlimited owner's claims and exits write no counter row
    (migration 0011), and its jobs hold no slot."""
    jobs = [store.create("bob", new_job())[0] for _ in range(3)]
    for job in jobs:
        claimed = store.claim(job.id).job
        assert claimed is not None
    assert _counter(engine, "bob") is None
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT holds_slot FROM jobs")).scalars()) == {False}
    for job in jobs:
        store.complete(job.id, 1, {"ok": True})
    assert _counter(engine, "bob") is None


def test_a_new_limit_adopts_the_jobs_already_running(store: JobStore, engine: Engine) -> None:
    """Jobs claimed while the owner had no limit are counted the moment a limit is set, so the
    limit holds at once; each gives its slot back on exit, and the counter ends at zero."""
    running = [store.create("alice", new_job())[0] for _ in range(2)]
    for job in running:
        assert store.claim(job.id).reason == "claimed"
    store.set_owner_limit("alice", 2)
    assert _counter(engine, "alice") == 2
    late = store.create("alice", new_job())[0]
    assert store.claim(late.id).reason == "deferred"  # two running: the limit is met
    store.set_owner_limit("alice", 2)  # setting it again adopts nothing twice
    assert _counter(engine, "alice") == 2
    store.complete(running[0].id, 1, {"ok": True})
    assert _counter(engine, "alice") == 1
    assert store.claim(late.id).reason == "claimed"
    store.set_owner_limit("alice", 0)  # unlimited again: slot holders still give theirs back
    for job in (running[1], late):
        store.complete(job.id, 1, {"ok": True})
    assert _counter(engine, "alice") == 0


def test_a_job_claimed_before_the_migration_still_gives_its_slot_back(
    store: JobStore, engine: Engine
) -> None:
    """Code older than migration 0011 counted every claim and left `holds_slot` NULL: the
    trigger treats NULL as holding a slot, so a rolling deploy leaves the counter right."""
    store.set_owner_limit("alice", 3)
    job = store.create("alice", new_job())[0]
    assert store.claim(job.id).reason == "claimed"
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET holds_slot = NULL WHERE id = :id"), {"id": job.id})
    assert _counter(engine, "alice") == 1
    store.complete(job.id, 1, {"ok": True})
    assert _counter(engine, "alice") == 0


def test_the_worker_looks_for_parked_jobs_only_when_a_slot_holder_exits(
    store: JobStore, settings: Any
) -> None:
    """Releasing parked jobs costs a query; only an owner with a limit can have parked jobs,
    so a job that held no slot skips it (one statement less per job for everyone else)."""
    from common.messaging.notify import Notifier
    from common.presets.registry import load_registry
    from common.worker.runner import Worker
    from tests.test_worker import message_for

    class CountingStore(JobStore):
        looked_for: list[str] = []

        def take_parked(self, owner_id: str, batch: int = 10) -> list[Any]:
            self.looked_for.append(owner_id)
            return super().take_parked(owner_id, batch)

    quiet = settings.model_copy(update={"results_topic": ""})
    counting = CountingStore(store._engine, quiet)
    recorder = Recorder()
    worker = Worker(counting, load_registry(quiet), Notifier(quiet), quiet, dispatcher=recorder)
    free = counting.create("bob", new_job())[0]
    assert worker.handle(message_for(free)).action == "completed"
    assert counting.looked_for == []  # bob has no limit: nothing to look for
    counting.set_owner_limit("alice", 1)
    first, second = (counting.create("alice", new_job())[0] for _ in range(2))
    held = counting.claim(first.id)
    assert held.holds_slot and counting.claim(second.id).reason == "deferred"
    counting.complete(first.id, 1, {"ok": True})  # frees the slot; the sweep would release
    third = counting.create("alice", new_job())[0]
    assert worker.handle(message_for(third)).action == "completed"
    assert counting.looked_for == ["alice"]  # a slot holder exited: its parked job goes out
    assert [i.id for i in recorder.sent] == [second.id]


def test_a_flooding_owner_waits_its_turn_on_the_real_stack(pipeline: Pipeline,
                                                           engine: Engine) -> None:
    """Owner A floods 300 jobs with a limit of 2; owner B submits 10 (limit 5), after A. B's all
    finish while A's are still queued; neither ever runs more than its limit; every A job completes
    on its first attempt, parked jobs released by the worker (no sweep runs here)."""
    store = pipeline.store
    limits = {"hs256:flood": 2, "hs256:small": 5}
    for owner, n in limits.items():
        store.set_owner_limit(owner, n)
    samples: Counter[str] = Counter()
    peak: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                for owner, n in conn.execute(text(
                    "SELECT owner_id, count(*) FROM jobs WHERE state = 'PROCESSING' "
                    "GROUP BY owner_id")):
                    samples[owner] += 1
                    peak[owner] = max(peak.get(owner, 0), int(n))

    # The emulator pushes about two messages at a time per subscription, which a limit of 2
    # would never feel. Two more push subscriptions deliver every message three times, with
    # six pushes in flight: at-least-once duplicates that the claim must absorb anyway.
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    extra = [pipeline.push_sub + f"-more{n}" for n in range(2)]
    for name in extra:
        subscriber.create_subscription(request={
            "name": name, "topic": pipeline.api.topic, "ack_deadline_seconds": 60,
            "push_config": {"push_endpoint": pipeline.process.url + "/"}})
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # A's jobs take 0.2 s each (the chaos preset sleeping), B's are instant echoes.
        flood = [pipeline.chaos(owner="flood", sleep_s=0.2) for _ in range(300)]
        small = [pipeline.submit("echo", f"b{i}", owner="small") for i in range(10)]
        for job_id in small:
            pipeline.wait(job_id, JobState.COMPLETED, timeout=120)
        with engine.connect() as conn:
            b_done = conn.execute(text("SELECT max(finished_at) FROM jobs WHERE owner_id = "
                                       "'hs256:small'")).scalar_one()
            a_after = conn.execute(text(
                "SELECT count(*) FROM jobs WHERE owner_id = 'hs256:flood' "
                "AND (started_at IS NULL OR started_at > :t)"), {"t": b_done}).scalar_one()
        deadline = time.monotonic() + 600
        for job_id in flood:
            pipeline.wait(job_id, JobState.COMPLETED, timeout=max(deadline - time.monotonic(), 1))
    finally:
        stop.set()
        sampler.join()
        for name in extra:
            subscriber.delete_subscription(request={"subscription": name})
        subscriber.close()
    with engine.connect() as conn:
        dev = conn.execute(text("SELECT j.owner_id, count(*) FROM job_trail e JOIN jobs j ON "
                                "j.id = e.job_id WHERE reason = 'deferred' GROUP BY 1")).all()
    print("fair share:", {"a_not_started_when_b_done": a_after, "peak": peak,
                          "samples": dict(samples), "deferred_events": dict(dev)})
    assert a_after >= 100, a_after  # most of A's jobs had not even started when B was done
    assert peak["hs256:flood"] <= 2 and peak["hs256:small"] <= 5, peak
    assert peak["hs256:flood"] == 2  # the limit was used, not just respected
    assert samples["hs256:flood"] >= 50, samples
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.attempts, count(e.id) FILTER (WHERE e.reason = 'deferred') AS deferred, "
            "count(e.id) FILTER (WHERE e.reason IN ('failed', 'retry-scheduled', "
            "'attempts-exhausted')) AS failures "
            "FROM jobs j JOIN job_trail e ON e.job_id = j.id "
            "WHERE j.owner_id = 'hs256:flood' GROUP BY j.id, j.attempts")).all()
    assert len(rows) == 300
    assert {r.attempts for r in rows} == {1} and {r.failures for r in rows} == {0}
    assert max(r.deferred for r in rows) == 1 and sum(r.deferred for r in rows) >= 200


def _limit_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT owner_id, max_running, max_submits_per_s, max_pending FROM owner_limits "
            "ORDER BY owner_id"))]


def test_quota_overrides_live_beside_the_running_limit(store: JobStore, engine: Engine) -> None:
    """One row per owner holds every override (migration 0015); clearing one leaves the others,
    and the row goes with the last."""
    store.set_owner_limit("alice", 2)
    store.set_owner_quota("alice", "max_pending", 10)
    store.set_owner_quota("bob", "max_submits_per_s", 5)
    assert _limit_rows(engine) == [("alice", 2, None, 10), ("bob", None, 5, None)]
    assert store.owner_quota("alice") == (None, 10) and store.owner_quota("bob") == (5, None)
    assert store.owner_quota("carol") == (None, None)
    store.set_owner_limit("alice", None)  # the running limit goes, the quota stays
    assert _limit_rows(engine) == [("alice", None, None, 10), ("bob", None, 5, None)]
    store.set_owner_quota("alice", "max_pending", None)
    store.set_owner_quota("bob", "max_submits_per_s", None)
    assert _limit_rows(engine) == []
    rows = store.owner_limits()
    assert rows == []


def test_quotas_refuse_bad_values_and_names(store: JobStore, engine: Engine) -> None:
    for quota, bad in (("max_pending", -1), ("max_pending", 10_000_001),
                       ("max_submits_per_s", 100_001), ("max_submits_per_s", True)):
        with pytest.raises(InvalidInput) as err:
            store.set_owner_quota("alice", quota, bad)  # type: ignore[arg-type]
        assert err.value.field == quota
    with pytest.raises(InvalidInput) as err:
        store.set_owner_quota("alice", "max_running; DROP TABLE jobs", 1)
    assert err.value.field == "quota"
    assert _limit_rows(engine) == []


def test_a_pending_quota_refuses_new_jobs_but_answers_replays(store: JobStore) -> None:
    """The count is in the INSERT: at the quota nothing is written; a keyed replay still gets
    its job; another owner is not counted; a job that leaves PENDING makes room."""
    from common.store.errors import PendingLimitReached

    first, _ = store.create("alice", new_job(idempotency_key="k1"), max_pending=2)
    store.create("alice", new_job(), max_pending=2)
    store.create("bob", new_job(), max_pending=2)
    for job in (new_job(), new_job(idempotency_key="k2")):
        with pytest.raises(PendingLimitReached) as err:
            store.create("alice", job, max_pending=2)
        assert err.value.limit == 2
    replay, created = store.create("alice", new_job(idempotency_key="k1"), max_pending=2)
    assert replay.id == first.id and not created
    assert store.owner_stats("alice")["depth"]["PENDING"] == 2
    store.cancel("alice", first.id)
    assert store.create("alice", new_job(), max_pending=2)[1]


# -- the delivery clock of a parked job (issue #25, bug 3) ------------------------------------


def _age(engine: Engine, job_id: Any, assignments: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE jobs SET {assignments} WHERE id = :id"), {"id": job_id})


def _parked_for_seven_hours(store: JobStore, engine: Engine) -> tuple[Any, Any]:
    """Alice (limit 1) has one job running and one that was published, delivered and parked
    seven hours ago: longer than the delivery budget (six hours)."""
    from common.store.models import DispatchItem

    store.set_owner_limit("alice", 1)
    running, waiting = (store.create("alice", new_job())[0] for _ in range(2))
    held = store.claim(running.id).job
    assert held is not None
    assert store.mark_dispatched([DispatchItem(id=waiting.id, attempts=0)]) == 1
    assert store.claim(waiting.id).reason == "deferred"
    _age(engine, waiting.id, "created_at = now() - interval '7 hours 1 minute', "
                             "updated_at = now() - interval '7 hours 1 minute', "
                             "dispatched_at = now() - interval '7 hours 1 minute', "
                             "deferred_at = now() - interval '7 hours'")
    return held, waiting


@pytest.mark.parametrize("released_by", ["worker", "sweep"])
def test_time_parked_is_not_delivery_time(store: JobStore, engine: Engine,
                                          released_by: str) -> None:
    """A parked job was delivered (parking proves it). Released when its owner's slot frees,
    by the worker (take_parked) or the sweep's `parked` step, its delivery clock starts at
    the release: one dead letter then sends it back to the dispatch queue. Before the fix,
    the budget counted from the job's creation and the first dead letter failed it
    'Undeliverable'."""
    from common.service import JobService

    held, waiting = _parked_for_seven_hours(store, engine)
    store.complete(held.id, held.attempts, {"ok": True})
    if released_by == "worker":
        assert [t.id for t in store.take_parked("alice")] == [waiting.id]
    else:
        recorder = Recorder()
        assert parked.release(JobService(store, recorder), Budget(60), 100)["published"] == 1
        assert [i.id for i in recorder.sent] == [waiting.id]
    moved = store.delivery_failed(waiting.id, 0, message_id="dead-1")
    assert moved is not None and moved.state is JobState.PENDING, moved
    event = store.events("alice", waiting.id)[-1]
    assert event.reason == "delivery-failed"
    # The budget still holds, counted from the release: six hours after it, the next dead
    # letter gives up.
    _age(engine, waiting.id, "undelivered_since = undelivered_since - interval '6 hours 1 second',"
                             " dispatched_at = now(), not_before = now()")
    final = store.delivery_failed(waiting.id, 0, message_id="dead-2")
    assert final is not None and final.state is JobState.FAILED
    assert store.get("alice", waiting.id).result.error_type == "Undeliverable"  # type: ignore[union-attr]


def test_a_run_later_job_counts_delivery_from_when_it_became_due(
    store: JobStore, engine: Engine
) -> None:
    """Submitted with delay_s seven hours ago and due a moment ago: waiting for its time was
    not delivery time, so its first dead letter sends it back rather than failing it."""
    job, _ = store.create("alice", new_job(delay_s=3600))
    _age(engine, job.id, "created_at = now() - interval '7 hours', "
                         "updated_at = now() - interval '7 hours', "
                         "not_before = now() - interval '1 second'")
    assert [t.id for t in store.take_due_for_dispatch(10)] == [job.id]  # the sweep publishes it
    moved = store.delivery_failed(job.id, 0, message_id="dead-1")
    assert moved is not None and moved.state is JobState.PENDING, moved


def test_a_parked_job_counts_delivery_from_its_last_deferral(
    store: JobStore, engine: Engine
) -> None:
    """Still parked, its message published again by the sweep's stale re-dispatch: the clock
    runs from the last time a message reached a worker (its last deferral), not from its
    creation seven hours ago."""
    _, waiting = _parked_for_seven_hours(store, engine)
    _age(engine, waiting.id, "deferred_at = now() - interval '5 minutes', "
                             "dispatched_at = now() - interval '6 minutes'")
    taken = store.take_due_for_dispatch(10, redispatch_after=timedelta(minutes=1))
    assert [t.id for t in taken] == [waiting.id]
    moved = store.delivery_failed(waiting.id, 0, message_id="dead-1")
    assert moved is not None and moved.state is JobState.PENDING, moved
