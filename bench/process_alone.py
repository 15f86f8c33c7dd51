"""`process` alone, one instance at Cloud Run concurrency 8, against `process_floor` (decode the
message, one UPDATE: bench/floor/main.py). Pub/Sub push envelopes are posted straight at each
real functions-framework server (THREADS=8, one worker) from 8 HTTP clients, not through the
emulator, so the figure is the function's own capacity. Jobs are created beforehand (ours
through a real `submit` server publishing to a topic nobody pushes from, the floor's by one
INSERT), and the servers alternate for BENCH_ROUNDS rounds (default 4).

    .venv/bin/python -m bench.process_alone     # BENCH_JOBS (default 500) per run

Reports jobs/s per instance and CPU per job (user + system, from /proc) for each, as ratios
floor-relative (target >= 0.8: ours' jobs/s / floor's, and floor's CPU per job / ours), and
each function's peak RSS (VmHWM). Beside them, what the database spent on each run
(bench/db_meter.py): PostgreSQL's CPU per job (its processes, from /proc), statements per job
(pg_stat_statements, preloaded in the throwaway server) and WAL per job, with the same ratios
(floor / ours: above 1.0, ours costs the database less than the floor does).

A fourth, ours with WORKER_BATCHING=false (issue 30), runs in the same rounds as information:
what sharing the claims' and exits' statements between deliveries in flight changes.

A third server, `process_claiming_floor`, runs in the same rounds as information: the floor plus
the one thing no at-least-once worker can skip, claiming the row before running (two guarded
UPDATEs instead of one). Ours against it prices our other guarantees; it against the floor
prices the claim itself."""

from __future__ import annotations

import base64
import json
import os
import statistics
import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.db_meter import STATS_CONF, DbMeter
from bench.end_to_end import BODY, FLOOR_SOURCE, SECRET, post_jobs
from bench.floor.main import TABLE_DDL
from bench.proc_stats import cpu_seconds, peak_rss_mib
from bench.results import record
from bench.services import services
from bench.submit_latency import Client
from common.api.auth import issue_dev_token
from localstack.function_server import FunctionServer
from tests.support.paths import ROOT

TARGET = 0.8
CLIENTS = 8
CONCURRENCY = {"THREADS": "8", "WORKERS": "1"}
VS_CLAIMING = ("throughput_ratio", "cpu_ratio")  # the rest go to db_vs_claiming


def _envelope(i: int, data: dict[str, Any], attributes: dict[str, str]) -> bytes:
    return json.dumps({
        "message": {"data": base64.b64encode(json.dumps(data).encode()).decode(),
                    "messageId": str(i), "message_id": str(i), "attributes": attributes,
                    "publishTime": "2026-11-26T00:00:00Z"},
        "subscription": "projects/bench-project/subscriptions/alone",
    }).encode()


def prepare_ours(engine: Engine, submit: FunctionServer, n: int) -> list[bytes]:
    """n PENDING jobs, created by a real `submit` (its messages go to a topic no one reads),
    and a push envelope for each, as Pub/Sub would send it."""
    with engine.connect() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, webhook_deliveries"))
    token = issue_dev_token(SECRET, "bench", ttl_s=3600)
    post_jobs(submit.port, "/jobs",
              {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}, n, CLIENTS)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, attempts, traceparent FROM jobs")).all()
    return [_envelope(i, {"v": 1, "job_id": str(r.id), "attempts": r.attempts},
                      {"job_id": str(r.id), "traceparent": r.traceparent})
            for i, r in enumerate(rows)]


def prepare_floor(engine: Engine, n: int) -> list[bytes]:
    with engine.connect() as conn:
        conn.execute(text("TRUNCATE bench_floor"))
        ids = conn.execute(text(
            "INSERT INTO bench_floor (body) SELECT :body FROM generate_series(1, :n) "
            "RETURNING id"), {"n": n, "body": BODY.decode()}).scalars().all()
    return [_envelope(i, {"job_id": str(j)}, {}) for i, j in enumerate(ids)]


def push_all(server: FunctionServer, envelopes: list[bytes]) -> float:
    """Post every envelope from CLIENTS threads; returns the seconds it took. Every answer must
    be a success, as Pub/Sub counts it."""
    errors: list[int] = []
    headers = {"Content-Type": "application/json"}

    def client(batch: list[bytes]) -> None:
        c = Client(server.port)
        for body in batch:
            status, _ = c.post("/", body, headers)
            if status not in (200, 201, 202, 204):
                errors.append(status)

    threads = [threading.Thread(target=client, args=(envelopes[i::CLIENTS],))
               for i in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{server.target}: {len(errors)} pushes refused: {errors[:5]}")
    return took


def measure(server: FunctionServer, envelopes: list[bytes], meter: DbMeter) -> dict[str, float]:
    cpu, db = cpu_seconds(server.pid), meter.sample()
    took = push_all(server, envelopes)
    n = len(envelopes)
    fig = {"jobs_per_s": n / took, "cpu_ms_per_job": (cpu_seconds(server.pid) - cpu) * 1000 / n}
    fig.update({k: v for k, v in meter.delta(db, meter.sample(), n).items() if v is not None})
    return fig


def ratios(ours: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """Floor-relative, each the way its target reads: jobs/s ours / floor; CPU, database CPU,
    statements and WAL per job floor / ours (above 1.0: ours costs less)."""
    out = {"throughput_ratio": ours["jobs_per_s"] / floor["jobs_per_s"]}
    for key, name in (("cpu_ms_per_job", "cpu_ratio"), ("db_cpu_ms_per_job", "db_cpu_ratio"),
                      ("statements_per_job", "statements_ratio"),
                      ("wal_bytes_per_job", "wal_ratio")):
        if ours.get(key) and key in floor:
            out[name] = floor[key] / ours[key]
    return out


def run(url: str, emulator: Any, n: int, rounds: int) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    for topic in ("jobs-alone", "results-alone"):
        publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/{topic}"})
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(TABLE_DDL))
    meter = DbMeter(url)
    env = {**emulator.env(), "DATABASE_URL": url, "GOOGLE_CLOUD_PROJECT": emulator.project,
           "AUTH_HS256_SECRET": SECRET, "JOBS_TOPIC": "jobs-alone",
           "RESULTS_TOPIC": "results-alone"}
    servers = [FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")]
    try:
        servers.append(FunctionServer("process", ROOT / "main.py", {**env, **CONCURRENCY}))
        servers.append(FunctionServer("process_floor", FLOOR_SOURCE, {**env, **CONCURRENCY}))
        servers.append(FunctionServer("process_claiming_floor", FLOOR_SOURCE,
                                      {**env, **CONCURRENCY}))
        # Ours with WORKER_BATCHING off (issue 30): what sharing statements changes.
        servers.append(FunctionServer("process", ROOT / "main.py",
                                      {**env, **CONCURRENCY, "WORKER_BATCHING": "false"}))
    except BaseException:
        for s in servers:
            s.close()
        raise
    submit, ours, floor, claiming, unbatched = servers
    floors = {"floor": floor, "claiming": claiming}
    mine = {"ours": ours, "unbatched": unbatched}
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "floor": [], "claiming": [],
                                               "unbatched": []}
    try:
        for server in floors.values():  # warm-up
            push_all(server, prepare_floor(engine, 40))
        for server in mine.values():
            push_all(server, prepare_ours(engine, submit, 40))
        for r in range(rounds):
            order = ("floor", "ours", "claiming", "unbatched")
            for name in order if r % 2 == 0 else order[::-1]:
                if name in mine:
                    envs = prepare_ours(engine, submit, n)
                    fig = measure(mine[name], envs, meter)
                    with engine.connect() as conn:
                        done = conn.execute(text(
                            "SELECT count(*) FROM jobs WHERE state = 'COMPLETED'")).scalar_one()
                else:
                    envs = prepare_floor(engine, n)
                    fig = measure(floors[name], envs, meter)
                    with engine.connect() as conn:
                        done = conn.execute(text(
                            "SELECT count(*) FROM bench_floor WHERE done")).scalar_one()
                if done != n:
                    raise RuntimeError(f"{name}: {done} of {n} jobs done")
                runs[name].append(fig)
                print(f"round {r + 1} {name:>9}: {fig['jobs_per_s']:6.1f} jobs/s  "
                      f"CPU {fig['cpu_ms_per_job']:5.2f} ms/job  DB CPU "
                      f"{fig['db_cpu_ms_per_job']:5.2f} ms/job, "
                      f"{fig.get('statements_per_job', float('nan')):4.2f} statements/job, "
                      f"WAL {fig['wal_bytes_per_job']:5.0f} B/job")
        rss = {"process": peak_rss_mib(ours.pid), "process_floor": peak_rss_mib(floor.pid),
               "process_unbatched": peak_rss_mib(unbatched.pid),
               "process_claiming_floor": peak_rss_mib(claiming.pid)}
    finally:
        meter.close()
        engine.dispose()
        for s in servers:
            s.close()
    mean = {name: {k: statistics.mean(r[k] for r in rs) for k in rs[0]}
            for name, rs in runs.items()}
    vs_claim = ratios(mean["ours"], mean["claiming"])
    return {"runs": runs, "mean": mean, "peak_rss_mib": rss,
            **ratios(mean["ours"], mean["floor"]),
            "vs_claiming": {k: v for k, v in vs_claim.items() if k in VS_CLAIMING},
            "db_vs_claiming": {k: v for k, v in vs_claim.items() if k not in VS_CLAIMING},
            "vs_unbatched": ratios(mean["ours"], mean["unbatched"])}


def main() -> int:
    n = int(os.environ.get("BENCH_JOBS", "500"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "4"))
    load_before = os.getloadavg()
    with services("jobs_alone", STATS_CONF) as (url, emulator):
        res = run(url, emulator, n, rounds)
    load_after = os.getloadavg()
    o, f = res["mean"]["ours"], res["mean"]["floor"]
    print(f"process alone, {n} jobs x {rounds} rounds, {CLIENTS} clients, concurrency 8")
    print(f"jobs/s per instance  ours {o['jobs_per_s']:6.1f}  floor {f['jobs_per_s']:6.1f}  "
          f"ratio {res['throughput_ratio']:.2f} (target >= {TARGET})")
    print(f"CPU per job          ours {o['cpu_ms_per_job']:6.2f}  floor {f['cpu_ms_per_job']:6.2f}"
          f"  floor/ours {res['cpu_ratio']:.2f} (target >= {TARGET})")
    c, vc = res["mean"]["claiming"], {**res["vs_claiming"], **res["db_vs_claiming"]}
    print(f"information: process_claiming_floor {c['jobs_per_s']:6.1f} jobs/s, "
          f"CPU {c['cpu_ms_per_job']:5.2f} ms/job; ours against it: jobs/s "
          f"{vc['throughput_ratio']:.2f}, CPU (claiming / ours) {vc['cpu_ratio']:.2f}")
    for key, unit, ratio in (("db_cpu_ms_per_job", "ms", "db_cpu_ratio"),
                             ("statements_per_job", "", "statements_ratio"),
                             ("wal_bytes_per_job", "B", "wal_ratio")):
        if ratio in res:
            digits = 0 if unit == "B" else 2
            print(f"{key:<19}  ours {o[key]:7.{digits}f}{unit:<2} floor {f[key]:7.{digits}f}"
                  f"{unit:<2} floor/ours {res[ratio]:.2f}; claiming {c[key]:.{digits}f}{unit}, "
                  f"claiming/ours {vc.get(ratio, float('nan')):.2f}")
    u, vu = res["mean"]["unbatched"], res["vs_unbatched"]
    print(f"batching off (information): {u['jobs_per_s']:6.1f} jobs/s, CPU "
          f"{u['cpu_ms_per_job']:5.2f} ms/job, DB CPU {u.get('db_cpu_ms_per_job', 0):.2f} ms/job, "
          f"{u.get('statements_per_job', float('nan')):.2f} statements/job; on against off: "
          f"jobs/s {vu['throughput_ratio']:.2f}, CPU (off / on) {vu['cpu_ratio']:.2f}, "
          f"DB CPU (off / on) {vu.get('db_cpu_ratio', float('nan')):.2f}")
    print(f"peak RSS: process {res['peak_rss_mib']['process']:.0f} MiB, "
          f"process_floor {res['peak_rss_mib']['process_floor']:.0f} MiB")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    record("process_alone", jobs=n, rounds=rounds, clients=CLIENTS, target=TARGET,
           load_average={"before": load_before, "after": load_after}, **res)
    ok = res["throughput_ratio"] >= TARGET and res["cpu_ratio"] >= TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
