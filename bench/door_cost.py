"""Benchmark: what admission at the door costs a submit, door off against door on, in one run.

    .venv/bin/python -m bench.door_cost      # DOOR_REQUESTS (default 1000) per side

1. POST /jobs through two real `submit` servers on the same PostgreSQL and emulator: one with
   no quotas (OWNER_MAX_SUBMITS_PER_S=0, OWNER_MAX_PENDING=0: the statement is the plain
   INSERT), one with both on but never reached (the bucket is taken, the INSERT counts the
   owner's PENDING jobs). Blocks of 100 requests alternate between them, one client, so
   machine noise falls on both alike. Per job: the submit server's CPU (its process group, from
   /proc), PostgreSQL's CPU (all its processes) over each side's blocks, and latency. Each
   side's owner has no worker, so its backlog grows to DOOR_REQUESTS: the count grows with it.
2. The PENDING count alone, through the store: a create with the quota against one without,
   alternating, at an owner backlog of 0, 1,000 and 10,000 PENDING jobs (median of 200 each,
   one client).
3. The two ways to count submits per second: the per-instance token bucket (SubmitBuckets.take,
   in-process) against a window kept in PostgreSQL (one upsert on the owner's row per submit:
   its round trip and its WAL, measured on the same server).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
import timeit
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.proc_stats import cpu_seconds
from bench.results import record
from bench.services import services
from bench.submit_latency import Client
from common.api.admission import SubmitBuckets
from common.api.auth import issue_dev_token
from common.settings import load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from common.store.models import NewJob
from localstack.function_server import FunctionServer
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)
BLOCK = 100
BODY = json.dumps({"preset": "echo", "content": "hello", "metadata": {"n": 1}}).encode()
OFF = {"OWNER_MAX_SUBMITS_PER_S": "0", "OWNER_MAX_PENDING": "0"}
ON = {"OWNER_MAX_SUBMITS_PER_S": "100000", "OWNER_MAX_PENDING": "10000000"}
WINDOW_DDL = """
CREATE TABLE IF NOT EXISTS bench_submit_window (
    owner_id text PRIMARY KEY, window_start timestamptz NOT NULL, submits integer NOT NULL)"""
WINDOW_UPSERT = """
INSERT INTO bench_submit_window AS w (owner_id, window_start, submits)
VALUES (:o, date_trunc('second', now()), 1)
ON CONFLICT (owner_id) DO UPDATE SET
    submits = CASE WHEN w.window_start = EXCLUDED.window_start THEN w.submits + 1 ELSE 1 END,
    window_start = EXCLUDED.window_start
RETURNING submits"""


def _postmaster(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        data_dir = conn.execute(text("SHOW data_directory")).scalar_one()
    engine.dispose()
    return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])


def _postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster and its children (every backend), reaped ones included."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:  # field 4, ppid
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _http_ab(url: str, emulator_env: dict[str, str], project: str, n: int) -> dict[str, Any]:
    base = {**emulator_env, "DATABASE_URL": url, "GOOGLE_CLOUD_PROJECT": project,
            "AUTH_HS256_SECRET": SECRET, "JOBS_TOPIC": "jobs"}
    from google.cloud import pubsub_v1

    pubsub_v1.PublisherClient().create_topic(request={"name": f"projects/{project}/topics/jobs"})
    servers = {"off": FunctionServer("submit", ROOT / "main.py", {**base, **OFF},
                                     probe="/healthz")}
    try:
        servers["on"] = FunctionServer("submit", ROOT / "main.py", {**base, **ON},
                                       probe="/healthz")
        pg = _postmaster(url)
        clients = {k: Client(s.port) for k, s in servers.items()}
        headers = {k: {"Content-Type": "application/json", "Authorization":
                       f"Bearer {issue_dev_token(SECRET, f'cost-{k}', ttl_s=3600)}"}
                   for k in servers}
        for side in servers:  # warm: pools, publishers, caches, the quota cache
            for _ in range(50):
                clients[side].post("/jobs", BODY, headers[side])
        cpu = {k: 0.0 for k in servers}
        db_cpu = {k: 0.0 for k in servers}
        latency: dict[str, list[float]] = {k: [] for k in servers}
        for _ in range(n // BLOCK):
            for side, server in servers.items():
                before, db_before = cpu_seconds(server.pid), _postgres_cpu(pg)
                for _ in range(BLOCK):
                    status, took = clients[side].post("/jobs", BODY, headers[side])
                    assert status == 202, status
                    latency[side].append(took)
                cpu[side] += cpu_seconds(server.pid) - before
                db_cpu[side] += _postgres_cpu(pg) - db_before
        done = (n // BLOCK) * BLOCK
        return {side: {"submit_cpu_ms_per_job": cpu[side] * 1000 / done,
                       "postgres_cpu_ms_per_job": db_cpu[side] * 1000 / done,
                       "p50_ms": statistics.median(latency[side]) * 1000,
                       "requests": done} for side in servers}
    finally:
        for s in servers.values():
            s.close()


def _count_cost(url: str) -> dict[str, Any]:
    """Median ms of one create, with and without the quota's count, per owner backlog."""
    settings = load_settings(database_url=url)
    engine = create_engine_from_settings(settings)
    store = JobStore(engine, settings)
    job = NewJob(preset="echo", content="x")
    out: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("TRUNCATE jobs, job_events, webhook_deliveries"))
            conn.commit()
        for backlog in (0, 1_000, 10_000):
            owner = f"backlog-{backlog}"
            if backlog:
                with engine.connect() as conn:
                    conn.execute(text(
                        "INSERT INTO jobs (owner_id, preset, content, metadata, max_attempts, "
                        "attempt_limit, state) SELECT :o, 'echo', 'x', '{}'::jsonb, 5, 5, "
                        "'PENDING' FROM generate_series(1, :n)"), {"o": owner, "n": backlog})
                    conn.execute(text("ANALYZE jobs"))
                    conn.commit()
            took: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(200):  # alternating, so noise falls on both alike
                for name, quota in (("without", 0), ("with", 10_000_000)):
                    t0 = time.perf_counter()
                    created, _ = store.create(owner, job, max_pending=quota)
                    took[name].append((time.perf_counter() - t0) * 1000)
                    store.cancel(owner, created.id)  # the backlog stays as it was
            out[str(backlog)] = {name: statistics.median(t) for name, t in took.items()}
        return out
    finally:
        engine.dispose()


def _window_cost(url: str) -> dict[str, float]:
    """The PostgreSQL-kept window's price per submit, and the bucket's."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(WINDOW_DDL))
        took, lsn0 = [], conn.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar_one()
        for _ in range(500):
            t0 = time.perf_counter()
            conn.execute(text(WINDOW_UPSERT), {"o": "window-owner"})
            took.append((time.perf_counter() - t0) * 1000)
        wal = conn.execute(text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :l)"),
                           {"l": lsn0}).scalar_one()
    engine.dispose()
    buckets = SubmitBuckets()
    bucket_us = min(timeit.repeat(lambda: buckets.take("owner", 100_000), number=10_000,
                                  repeat=5)) / 10_000 * 1e6
    return {"window_upsert_ms": statistics.median(took), "window_wal_bytes": float(wal) / 500,
            "bucket_us": bucket_us}


def main() -> int:
    n = int(os.environ.get("DOOR_REQUESTS", "1000"))
    with services("jobs_bench_door") as (url, emulator):
        http = _http_ab(url, emulator.env(), emulator.project, n)
        count = _count_cost(url)
        window = _window_cost(url)
    print(f"door cost, {http['off']['requests']} submits per side in alternating blocks of {BLOCK}, "
          "one client; owner backlog grows to that many PENDING jobs")
    for side in ("off", "on"):
        f = http[side]
        print(f"  door {side:<3}  submit CPU {f['submit_cpu_ms_per_job']:.3f} ms/job  PostgreSQL "
              f"CPU {f['postgres_cpu_ms_per_job']:.3f} ms/job  latency p50 {f['p50_ms']:.2f} ms")
    print("  one create, median ms without / with the PENDING count, by owner backlog: "
          + "; ".join(f"{b}: {v['without']:.2f} / {v['with']:.2f}" for b, v in count.items()))
    print(f"  submits/s: token bucket {window['bucket_us']:.2f} us in-process; a PostgreSQL "
          f"window would be one more round trip ({window['window_upsert_ms']:.2f} ms median) "
          f"and {window['window_wal_bytes']:.0f} bytes of WAL per submit")
    record("door_cost", http=http, count_ms=count, window=window, block=BLOCK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
