"""Does a sweep pass cost what there is to do, or what the table holds?

One pass (all steps) with 10,000 and with 1,000,000 terminal jobs in the table, each time with
the same 1,000 expired leases and 1,000 undispatched jobs; the ratio time(1M) / time(10k)
should stay <= 1.5. Then the 1,000,000 jobs are aged past retention and deleted over successive
passes: every batch is its own transaction, and the longest one is reported (target < 1 s).
Also prints which index each of the pass's statements uses on the full table (EXPLAIN).

Durable throwaway PostgreSQL (fsync on) and the Pub/Sub emulator (the pass publishes 2,000
messages: the rescued and the undispatched jobs). `BENCH_BIG` changes the 1,000,000.
"""

from __future__ import annotations

import os
import re
import statistics
import time

from sqlalchemy import Engine, text

from bench.results import record
from bench.services import services
from common.maintenance.sweep import Sweeper, SweepRequest
from common.messaging.dispatch import Dispatcher
from common.messaging.notify import Notifier
from common.service import JobService
from common.settings import load_settings
from common.store import maintenance_queries as repo
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore

WORK = 1000
TARGET_RATIO = 1.5
ROUNDS = 3


def fill_terminal(engine: Engine, n: int, finished: str) -> None:
    """n COMPLETED jobs with a result each, as if processed (finished `finished` ago)."""
    while n > 0:
        _fill(engine, min(n, 200_000), finished)
        n -= 200_000


def _fill(engine: Engine, n: int, finished: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"""
            INSERT INTO jobs (owner_id, preset, content, state, attempts, max_attempts,
                              attempt_limit, created_at, updated_at, started_at, finished_at,
                              result_output, result_duration_ms)
            SELECT 'owner-' || mod(g, 1000), 'echo', 'content ' || g, 'COMPLETED', 1, 5, 5,
                   now() - interval '{finished}' - interval '1 minute',
                   now() - interval '{finished}', now() - interval '{finished}',
                   now() - interval '{finished}' + mod(g, 1000) * interval '1 ms',
                   '{{"ok": true}}'::jsonb, 3
            FROM generate_series(1, :n) g
        """), {"n": n})


def add_work(engine: Engine, auto: Engine) -> None:
    """The same work for every pass: WORK expired leases and WORK never-published jobs."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM job_events WHERE job_id IN "
                          "(SELECT id FROM jobs WHERE owner_id = 'work')"))  # no cascade
        conn.execute(text("DELETE FROM jobs WHERE owner_id = 'work'"))
        conn.execute(text("""
            INSERT INTO jobs (owner_id, preset, content, state, attempts, max_attempts,
                              attempt_limit, lease_expires_at, started_at)
            SELECT 'work', 'echo', 'stuck ' || g, 'PROCESSING', 1, 5, 5,
                   now() - interval '1 minute', now() - interval '6 minutes'
            FROM generate_series(1, :n) g
        """), {"n": WORK})
        conn.execute(text("""
            INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit)
            SELECT 'work', 'echo', 'new ' || g, 5, 5 FROM generate_series(1, :n) g
        """), {"n": WORK})
    vacuum(auto)


def vacuum(auto: Engine) -> None:
    with auto.connect() as conn:  # VACUUM needs autocommit
        conn.execute(text("VACUUM ANALYZE jobs"))


def timed_pass(engine: Engine, auto: Engine, sweeper: Sweeper) -> float:
    timings = []
    for _ in range(ROUNDS):
        add_work(engine, auto)
        started = time.perf_counter()
        summary = sweeper.run(SweepRequest(batch_size=500))
        timings.append(time.perf_counter() - started)
        steps = summary["steps"]
        assert steps["rescue"]["rescued"] == WORK, steps
        assert steps["redispatch"]["published"] == 2 * WORK, steps
    return statistics.median(timings)


def plans(engine: Engine) -> dict[str, str]:
    queries = {
        "rescue": (repo.SQL_RESCUE, {"limit": 500}),
        "re-dispatch (new)": (repo.SQL_TAKE_DISPATCH[False], {"limit": 500}),
        "re-dispatch (stale)": (repo.SQL_TAKE_DISPATCH[True], {"limit": 500, "stale_s": 1800}),
        "retention": (repo.SQL_PURGE, {"days": 30, "batch": 500}),
        "queue report": (repo.SQL_QUEUE_REPORT, {}),
    }
    found = {}
    with engine.connect() as conn:
        for name, (sql, params) in queries.items():
            plan = "\n".join(conn.execute(text("EXPLAIN " + sql), params).scalars())
            used = sorted(set(re.findall(r"(ix_jobs_\w+)", plan)))
            seq = " + SEQ SCAN on jobs" if re.search(r"Seq Scan on jobs", plan) else ""
            found[name] = (", ".join(used) or "no index") + seq
    return found


def main() -> int:
    big = int(os.environ.get("BENCH_BIG", "1000000"))
    with services("jobs_sweep") as (url, emulator):
        from google.cloud import pubsub_v1

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        for topic in ("jobs", "job-results", "jobs-dead"):
            publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/{topic}"})
        subscriber.create_subscription(request={
            "name": f"projects/{emulator.project}/subscriptions/jobs-dead-letters",
            "topic": f"projects/{emulator.project}/topics/jobs-dead",
        })
        settings = load_settings(database_url=url, google_cloud_project=emulator.project)
        engine = create_engine_from_settings(settings)
        # Filling and aging a million rows takes minutes: no statement timeout for the setup.
        admin = create_engine_from_settings(
            settings.model_copy(update={"db_statement_timeout_ms": 3_600_000}), autocommit=False
        )
        store = JobStore(engine, settings)
        sweeper = Sweeper(JobService(store, Dispatcher(settings)), Notifier(settings), settings)

        fill_terminal(admin, 10_000, "1 day")
        small = timed_pass(admin, engine, sweeper)
        fill_terminal(admin, big - 10_000, "1 day")
        large = timed_pass(admin, engine, sweeper)
        ratio = large / small
        print(f"one pass, {WORK} expired leases + {WORK} undispatched, median of {ROUNDS}:")
        print(f"  with 10,000 terminal jobs:  {small * 1000:7.0f} ms")
        print(f"  with {big:,} terminal jobs: {large * 1000:7.0f} ms")
        print(f"  ratio {ratio:.2f} (target <= {TARGET_RATIO}) "
              f"{'OK' if ratio <= TARGET_RATIO else 'ABOVE'}")
        print(f"plans on {big:,} rows:")
        for name, used in plans(admin).items():
            print(f"  {name}: {used}")

        # Retention: everything becomes old; passes run until it is gone.
        with admin.begin() as conn:
            conn.execute(text("DELETE FROM job_events WHERE job_id IN "
                              "(SELECT id FROM jobs WHERE owner_id = 'work')"))  # no cascade
            conn.execute(text("DELETE FROM jobs WHERE owner_id = 'work'"))
            conn.execute(text("UPDATE jobs SET finished_at = finished_at - interval '40 days'"))
        vacuum(engine)
        longest, batches, deleted = 0.0, 0, 0
        started = time.perf_counter()
        while True:  # each call is one statement in autocommit: one transaction per batch
            t0 = time.perf_counter()
            count = store.purge_terminal(settings.retention_days, batch_size=500, max_batches=1)
            longest = max(longest, time.perf_counter() - t0)
            batches += 1
            deleted += count
            if count < 500:
                break
        total = time.perf_counter() - started
        passes = -(-total // settings.sweep_time_budget_s)
        print(f"retention: {deleted:,} jobs deleted in {batches:,} batches of 500 over "
              f"{total:.0f} s ({passes:.0f} pass(es) at a {settings.sweep_time_budget_s:.0f} s "
              f"budget); longest transaction {longest * 1000:.0f} ms (target < 1000 ms) "
              f"{'OK' if longest < 1 else 'ABOVE'}")
        record("sweep_scale", big=big, small_ms=small * 1000, large_ms=large * 1000,
               ratio=ratio, target=TARGET_RATIO, plans=plans(admin),
               retention={"deleted": deleted, "batches": batches, "seconds": total,
                          "longest_transaction_ms": longest * 1000})
        engine.dispose()
        admin.dispose()
        return 0 if ratio <= TARGET_RATIO and longest < 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
