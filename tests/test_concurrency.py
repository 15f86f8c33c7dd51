"""Real threads on real connections: claims, completions and rescues racing each other."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from sqlalchemy import Engine, text

from common.store.errors import IllegalTransition
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import new_job

WORKERS = 8


def test_concurrent_claimers_never_double_claim(store: JobStore, engine: Engine) -> None:
    ids = [store.create("alice", new_job(content=str(i)))[0].id for i in range(150)]
    wins: list[list[UUID]] = [[] for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)

    def worker(n: int) -> None:
        start.wait()
        order = ids if n % 2 else list(reversed(ids))  # collide from both ends
        for job_id in order:
            if store.claim(job_id).reason == "claimed":
                wins[n].append(job_id)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(worker, range(WORKERS)))
    claimed = Counter(j for w in wins for j in w)
    assert set(claimed) == set(ids)
    assert max(claimed.values()) == 1
    with engine.connect() as conn:
        per_job = conn.execute(
            text("SELECT count(*) FROM job_trail WHERE reason = 'claimed' GROUP BY job_id")
        ).scalars()
        assert set(per_job) == {1}
    assert sum(len(w) for w in wins) == len(ids)


def test_concurrent_idempotent_creates_make_one_job(store: JobStore) -> None:
    start = threading.Barrier(WORKERS)

    def create(_: int) -> tuple[UUID, bool]:
        start.wait()
        job, created = store.create("alice", new_job(idempotency_key="same"))
        return job.id, created

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(create, range(WORKERS)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_complete_racing_rescue_has_exactly_one_winner(store: JobStore, engine: Engine) -> None:
    """The race that made other queues run jobs twice: a worker finishing just as its lease
    expires. Whoever commits first wins; the loser changes nothing."""
    rounds = 60
    ids = []
    for i in range(rounds):
        job, _ = store.create("alice", new_job(content=str(i)))
        store.claim(job.id, lease_s=0.05)
        ids.append(job.id)
    time.sleep(0.1)  # every lease has lapsed; both sides now see a rescuable job
    outcomes: dict[UUID, str] = {}
    go = threading.Barrier(2)

    def completer() -> None:
        go.wait()
        for job_id in ids:
            try:
                store.complete(job_id, 1, {"done": True})
                outcomes[job_id] = "completed"
            except IllegalTransition:
                pass

    def rescuer() -> None:
        go.wait()
        for _ in range(rounds):
            store.rescue_expired(1)

    threads = [threading.Thread(target=completer), threading.Thread(target=rescuer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.rescue_expired(rounds)  # whatever the rescuer did not reach
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT j.id, j.state, "
                "(SELECT count(*) FROM job_results r WHERE r.job_id = j.id) AS results, "
                "(SELECT count(*) FROM job_trail e WHERE e.job_id = j.id "
                " AND e.from_state = 'PROCESSING') AS exits "
                "FROM jobs j"
            )
        ).all()
    for job_id, state, results, exits in rows:
        assert exits == 1, job_id  # one exit from the attempt, never two
        if outcomes.get(job_id) == "completed":
            assert (state, results) == (JobState.COMPLETED, 1)
        else:
            assert (state, results) == (JobState.PENDING, 0)
    assert Counter(r[1] for r in rows).keys() <= {"COMPLETED", "PENDING"}


def test_two_rescuers_share_work_without_overlap(store: JobStore, engine: Engine) -> None:
    for i in range(100):
        job, _ = store.create("alice", new_job(content=str(i)))
        store.claim(job.id, lease_s=0.05)
    time.sleep(0.1)
    got: list[list[UUID]] = [[], []]
    go = threading.Barrier(2)

    def rescuer(n: int) -> None:
        go.wait()
        while moved := store.rescue_expired(7):
            got[n] += [r.id for r in moved]

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(rescuer, range(2)))
    assert len(got[0]) + len(got[1]) == 100
    assert not set(got[0]) & set(got[1])
