"""Benchmarks of issue 15: the sweep's schedules step at scale, and the claim's cost of fair
share.

1. One sweep pass (steps `schedules` and `redispatch`: fire what is due, publish the jobs) with
   100 schedules of which 10 are due, and with 10,000 of which 1,000 are due. Target: time per
   due schedule of the large pass <= 1.5x the small one's; and the due-scan's plan on the
   10,000-row table uses ix_schedules_due (printed, EXPLAIN).
2. The claim, one at a time on one connection, with fair share's limits off (no owner_limits
   row, OWNER_MAX_RUNNING=0) and on (the owner has a limit it never reaches), and, as a
   reference, the claim statement as it was before fair share; interleaved claim by claim.
   Target: on <= 1.1x off.

Durable throwaway PostgreSQL and the Pub/Sub emulator (bench/services.py).
"""

from __future__ import annotations

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
from common.settings import Settings, load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from common.store.schedules import SQL_DUE

SCHEDULE_TARGET = 1.5
CLAIM_TARGET = 1.1
ROUNDS = 3
CLAIMS = 2000

# The claim before fair share (commit 4771490), as the reference floor.
OLD_CLAIM = """
WITH moved AS (
    UPDATE jobs SET state = 'PROCESSING', attempts = attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s),
        started_at = now(), updated_at = now(), not_before = NULL
    WHERE id = :id AND state IN ('PENDING') AND NOT cancel_requested
      AND (not_before IS NULL OR not_before <= now())
    RETURNING id, owner_id, preset, content, metadata, state, attempts, max_attempts,
              attempt_limit, idempotency_key, cancel_requested, lease_expires_at, dispatched_at,
              not_before, created_at, updated_at, started_at, finished_at
), ev AS (INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, details)
    SELECT id, 'PENDING', state, 'claimed', attempts, '{}'::jsonb FROM moved)
SELECT * FROM moved"""


def fill_schedules(engine: Engine, auto: Engine, total: int, due: int) -> None:
    """`total` schedules every 5 minutes, `due` of them due (their tick 5 minutes ago)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE schedules, schedule_events"))
        conn.execute(text("DELETE FROM job_events WHERE job_id IN "
                          "(SELECT id FROM jobs WHERE schedule_id IS NOT NULL)"))  # no cascade
        conn.execute(text("DELETE FROM jobs WHERE schedule_id IS NOT NULL"))
        conn.execute(text("""
            INSERT INTO schedules (owner_id, cron, timezone, preset, content, overlap,
                                   next_fire_at)
            SELECT 'owner-' || mod(g, 500), '*/5 * * * *', 'UTC', 'echo',
                   CASE WHEN g <= :due THEN 'due ' ELSE 'later ' END || g, 'allow',
                   CASE WHEN g <= :due
                        THEN date_trunc('hour', now()) + floor(date_part('minute', now()) / 5)
                             * interval '5 minutes'
                        ELSE now() + interval '1 day' END
            FROM generate_series(1, :n) g
        """), {"n": total, "due": due})
    with auto.connect() as conn:  # VACUUM needs autocommit
        conn.execute(text("VACUUM ANALYZE schedules"))


def reset_due(engine: Engine) -> None:
    """The due schedules' current tick is due again (its jobs and events forgotten)."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM job_events WHERE job_id IN "
                          "(SELECT id FROM jobs WHERE schedule_id IS NOT NULL)"))  # no cascade
        conn.execute(text("DELETE FROM jobs WHERE schedule_id IS NOT NULL"))
        conn.execute(text("TRUNCATE schedule_events"))
        conn.execute(text("""
            UPDATE schedules SET next_fire_at = date_trunc('hour', now())
                + floor(date_part('minute', now()) / 5) * interval '5 minutes',
                last_job_id = NULL, last_fire_at = NULL
            WHERE content LIKE 'due %'
        """))


def timed_pass(admin: Engine, sweeper: Sweeper, due: int) -> float:
    timings = []
    for _ in range(ROUNDS):
        reset_due(admin)
        started = time.perf_counter()
        summary = sweeper.run(SweepRequest(steps=["schedules", "redispatch"], batch_size=500))
        timings.append(time.perf_counter() - started)
        steps = summary["steps"]
        assert steps["schedules"].get("fired") == due, steps
        assert steps["redispatch"]["published"] == due, steps
    return statistics.median(timings)


def due_scan_plan(engine: Engine) -> str:
    with engine.connect() as conn:
        plan = "\n".join(conn.execute(text("EXPLAIN " + SQL_DUE), {"limit": 500}).scalars())
    used = sorted(set(re.findall(r"(ix_schedules_\w+)", plan)))
    return ", ".join(used) or "NO INDEX: " + plan.splitlines()[0]


def claim_costs(engine: Engine, settings: Settings) -> dict[str, float]:
    """Mean ms per claim, one at a time on one connection, of fresh jobs taken in turn: an
    owner without a limit row ("off"), an owner with a limit it never reaches ("on"), and the
    pre-fair-share statement ("before"). Interleaved claim by claim, so the machine's noise and
    the table's growth fall on all three alike."""
    store = JobStore(engine, settings)
    kinds = ("before", "off", "on")
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO owner_limits (owner_id, max_running) "
                          "SELECT 'on-' || g, 1000000 FROM generate_series(0, 49) g "
                          "ON CONFLICT DO NOTHING"))
        rows = conn.execute(text("""
            INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit)
            SELECT (ARRAY['before-', 'off-', 'on-'])[1 + mod(g, 3)] || mod(g / 3, 50),
                   'echo', 'c', 5, 5
            FROM generate_series(0, :n - 1) g RETURNING id, owner_id"""),
            {"n": 3 * CLAIMS}).all()
    rows.sort(key=lambda r: (int(r[1].split("-")[1]), r[1]))
    spent = dict.fromkeys(kinds, 0.0)
    count = dict.fromkeys(kinds, 0)
    for job_id, owner in rows:
        kind = owner.split("-")[0]
        started = time.perf_counter()
        if kind == "before":
            assert store._rows(OLD_CLAIM, id=job_id, lease_s=300)
        else:
            assert store.claim(job_id).reason == "claimed"
        spent[kind] += time.perf_counter() - started
        count[kind] += 1
    return {k: spent[k] / count[k] * 1000 for k in kinds}


def claims(settings: Settings) -> dict[str, float]:
    engine = create_engine_from_settings(settings, pool_size=1, max_overflow=0)
    claim_costs(engine, settings)  # warm up
    runs = [claim_costs(engine, settings) for _ in range(ROUNDS)]
    engine.dispose()
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    with services("jobs_schedules") as (url, emulator):
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        for topic in ("jobs", "job-results"):
            publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/{topic}"})
        settings = load_settings(database_url=url, google_cloud_project=emulator.project)
        engine = create_engine_from_settings(settings)
        admin = create_engine_from_settings(settings, autocommit=False)
        sweeper = Sweeper(JobService(JobStore(engine, settings), Dispatcher(settings)),
                          Notifier(settings), settings)
        fill_schedules(admin, engine, 100, 10)
        small = timed_pass(admin, sweeper, 10) / 10
        fill_schedules(admin, engine, 10_000, 1000)
        large = timed_pass(admin, sweeper, 1000) / 1000
        plan = due_scan_plan(engine)
        ratio = large / small
        print(f"sweep pass (schedules + redispatch), median of {ROUNDS}, per due schedule:")
        print(f"  100 schedules, 10 due:        {small * 1000:6.2f} ms")
        print(f"  10,000 schedules, 1,000 due:  {large * 1000:6.2f} ms")
        print(f"  ratio {ratio:.2f} (target <= {SCHEDULE_TARGET}) "
              f"{'OK' if ratio <= SCHEDULE_TARGET else 'ABOVE'}; due-scan plan: {plan}")
        ms = claims(settings)
        claim = ms["on"] / ms["off"]
        print(f"claim, ms each (one connection, interleaved, median of {ROUNDS} x {CLAIMS}): "
              f"before fair share {ms['before']:.3f}, limits off {ms['off']:.3f}, "
              f"limits on {ms['on']:.3f}")
        print(f"  cost on/off {claim:.2f} (target <= {CLAIM_TARGET}) "
              f"{'OK' if claim <= CLAIM_TARGET else 'ABOVE'}; off vs before fair share "
              f"{ms['off'] / ms['before']:.2f}")
        record("schedules", small_ms=small * 1000, large_ms=large * 1000, ratio=ratio,
               target=SCHEDULE_TARGET, plan=plan, claim_ms=ms, claim_ratio=claim,
               claim_target=CLAIM_TARGET)
        engine.dispose()
        admin.dispose()
        return 0 if ratio <= SCHEDULE_TARGET and claim <= CLAIM_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
