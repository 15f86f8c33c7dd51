"""What `GET /stats/history` costs on a large table, with and without its index.

500,000 ended jobs finished over the last day: 400,000 spread over 1,000 owners (400 each) and
100,000 of one busy owner. For a small and the busy owner, the hour and the day window are
timed (median of 7 calls of JobStore.finished_history, the API's own query), first with
`ix_jobs_owner_finished` (migration 0017), then with it dropped, and the plan of each is shown.
Durable throwaway PostgreSQL (fsync on). `BENCH_BIG` scales the 500,000.
"""

from __future__ import annotations

import os
import statistics
import time

from sqlalchemy import Engine, text

from bench.results import record
from common.settings import load_settings
from common.store.engine import create_engine_from_settings
from common.store.insight import SQL_HISTORY, WINDOWS
from common.store.job_store import JobStore
from localstack.postgres import migrate, start_postgres

CALLS = 7


def fill(engine: Engine, n: int, owners: int, prefix: str) -> None:
    """n COMPLETED/FAILED/CANCELLED jobs of `owners` owners, finished over the last day."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO jobs (owner_id, preset, content, state, attempts, max_attempts,
                              attempt_limit, created_at, updated_at, started_at, finished_at,
                              result_output, result_error_type, result_error_message,
                              result_duration_ms)
            SELECT :prefix || mod(g, :owners), 'echo', 'c', s.state, 1, 5, 5,
                   f.at - interval '1 second', f.at, f.at, f.at,
                   CASE s.state WHEN 'COMPLETED' THEN '{"ok": true}'::jsonb END,
                   CASE s.state WHEN 'FAILED' THEN 'PermanentError' END,
                   CASE s.state WHEN 'FAILED' THEN 'no' END,
                   CASE WHEN s.state <> 'CANCELLED' THEN 3 END
            FROM generate_series(1, :n) g
            CROSS JOIN LATERAL (SELECT CASE WHEN mod(g, 10) = 0 THEN 'FAILED'
                                            WHEN mod(g, 25) = 1 THEN 'CANCELLED'
                                            ELSE 'COMPLETED' END AS state) s
            CROSS JOIN LATERAL (SELECT now() - (g::float / :n) * interval '23 hours 59 minutes'
                                AS at) f
        """), {"n": n, "owners": owners, "prefix": prefix})


def timed(store: JobStore, owner: str, window: str) -> float:
    runs = []
    for _ in range(CALLS):
        started = time.perf_counter()
        store.finished_history(owner, window)  # type: ignore[arg-type]
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def plan(engine: Engine, owner: str, window: str) -> str:
    span, bucket = WINDOWS[window]
    with engine.connect() as conn:
        rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + SQL_HISTORY),
                            {"owner_id": owner, "span": span, "bucket": bucket}).scalars()
        return "\n".join("    " + r for r in rows)


def main() -> int:
    big = int(os.environ.get("BENCH_BIG", "500000"))
    server = start_postgres(durable=True)
    try:
        url = server.url(server.create_database("jobs_history"))
        migrate(url)
        settings = load_settings(database_url=url)
        engine = create_engine_from_settings(settings)
        store = JobStore(engine, settings)
        started = time.perf_counter()
        fill(engine, big * 4 // 5, 1000, "hs256:owner-")
        fill(engine, big // 5, 1, "hs256:busy-")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
        print(f"filled {big} ended jobs in {time.perf_counter() - started:.0f} s")
        figures: dict[str, float] = {}
        for label in ("indexed", "no_index"):
            if label == "no_index":
                with engine.begin() as conn:
                    conn.execute(text("DROP INDEX ix_jobs_owner_finished"))
            for owner, who in (("hs256:owner-7", "small"), ("hs256:busy-0", "busy")):
                for window in ("hour", "day"):
                    ms = timed(store, owner, window)
                    figures[f"{label}_{who}_{window}_ms"] = round(ms, 2)
                    print(f"{label:9} {who:5} owner, {window:4}: {ms:8.2f} ms")
            print(plan(engine, "hs256:busy-0", "day"))
        record("history_query", big=big, **figures)
        engine.dispose()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
