"""End to end: N jobs through our pipeline (HTTP `submit` -> Pub/Sub -> `process` ->
PostgreSQL) against the floor pair (bench/floor/main.py: `submit_floor` and `process_floor`,
the least a user would write by hand, with no guarantees), served the same way (real
functions-framework servers, same driver, pool size and Pub/Sub client) against the same
PostgreSQL and emulator, alternating floor and ours for BENCH_ROUNDS rounds (default 4) in
one run, from 8 HTTP clients.

    .venv/bin/python -m bench.end_to_end     # BENCH_JOBS (default 300) per run

Delivery as production's: each pipeline's jobs subscription is a pull subscription, and a relay
in a process of its own (bench/relay.py) pushes its messages into the pipeline's `process`
server, RELAY_CONCURRENCY (8, Cloud Run's concurrency for `process`) at a time. The emulator's
own push keeps about 2 in flight; `BENCH_DELIVERY=push` measures through it as before.

Figures per pipeline, each the mean of its rounds:
- throughput: jobs/s from the first submit to the last job done;
- CPU per job: user + system CPU of both servers' processes (from /proc), divided by N;
- WAL per job: the pg_current_wal_insert_lsn() difference over the run, divided by N (the
  insert position: the write position lags it on a server with asynchronous commits);
- PostgreSQL's CPU per job and statements per job (bench/db_meter.py: the server's processes
  from /proc; pg_stat_statements, preloaded in the throwaway server), the bench's own polls
  left out.
Targets: throughput >= 1.0 x the pair, CPU per job <= 1.1 x the pair, WAL per job <= 2,200
bytes. The raw push rate of the emulator into a no-op function is printed as information, and
ours' submit -> COMPLETED latency (from the database's own timestamps).

A third pipeline runs in the same rounds, as information: the claiming pair, `submit_floor`
with `process_claiming_floor`, the floor pair plus claiming each row before running it (what
any worker that runs a job once under at-least-once delivery must do). Ours against it prices
our other guarantees; it against the floor pair prices the claim itself."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.db_meter import STATS_CONF, DbMeter
from bench.floor.main import TABLE_DDL
from bench.prices import pipeline_costs
from bench.proc_stats import cpu_seconds, peak_rss_mib
from bench.relay import RelayProcess
from bench.results import record
from bench.services import services
from bench.submit_latency import Client
from common.api.auth import issue_dev_token
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.topology import Topology
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)
TARGETS = {"throughput": 1.0, "cpu_per_job": 1.1, "wal_per_job_bytes": 2200}
CLIENTS = 8
FLOOR_SOURCE = ROOT / "bench" / "floor" / "main.py"
BODY = json.dumps({"preset": "echo", "content": "hello"}).encode()
DELIVERIES = ("relay", "push")
RELAY_CONCURRENCY = 8  # Cloud Run's concurrency for `process` (infra/variables.tf)
PROCESS_ENV = {"THREADS": str(RELAY_CONCURRENCY)}  # gunicorn threads = instance concurrency


def push_subscription(
    emulator: PubSubEmulator, topic: str, name: str, endpoint: str, delivery: str = "push",
) -> RelayProcess | None:
    """The topic's subscription to `endpoint`: the emulator's push, or (`relay`) a pull
    subscription with a relay pushing RELAY_CONCURRENCY at a time; returns the relay."""
    topology = Topology(project=emulator.project, jobs_topic=topic, push_subscription=name,
                        dead_letter_topic=topic + "-dead",
                        dead_letter_subscription=topic + "-dead-sub",
                        results_topic=topic + "-results")
    if delivery == "push":
        topology.create(endpoint)
        return None
    topology.create(None, pull=True)
    return RelayProcess(topology.path("subscriptions", name), endpoint, RELAY_CONCURRENCY,
                        topology.ack_deadline_s)


def raw_push_rate(emulator: PubSubEmulator, n: int, topic: str) -> float:
    """Messages per second the emulator pushes into a function that does nothing."""
    from google.cloud import pubsub_v1

    count_file = Path(tempfile.mkstemp(prefix="noop-count-")[1])
    server = FunctionServer("noop_event", FLOOR_SOURCE,
                            {**emulator.env(), "NOOP_COUNT_FILE": str(count_file)})
    try:
        push_subscription(emulator, topic, topic + "-push", server.url + "/")
        publisher = pubsub_v1.PublisherClient()
        path = publisher.topic_path(emulator.project, topic)
        data = json.dumps({"v": 1, "job_id": "00000000-0000-4000-8000-000000000000",
                           "attempts": 0}).encode()
        started = time.perf_counter()
        for f in [publisher.publish(path, data) for _ in range(n)]:
            f.result(timeout=60)
        deadline = time.monotonic() + 300
        while count_file.stat().st_size < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw push: only {count_file.stat().st_size} of {n} pushed")
            time.sleep(0.01)
        return n / (time.perf_counter() - started)
    finally:
        server.close()
        count_file.unlink(missing_ok=True)


@dataclass
class Pipeline:
    """A submit server and a process server, and how to tell when N jobs are done."""

    name: str
    submit: FunctionServer
    process: FunctionServer
    path: str
    headers: dict[str, str]
    done_sql: str  # (done, failed) counts
    reset_sql: str
    runs: list[dict[str, float]] = field(default_factory=list)
    relay: RelayProcess | None = None

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of (submit, process): the split shows which side a gap is on."""
        return cpu_seconds(self.submit.pid), cpu_seconds(self.process.pid)

    def close(self) -> None:
        if self.relay:
            self.relay.close()
        self.submit.close()
        self.process.close()


def start_pipelines(
    emulator: PubSubEmulator, url: str, delivery: str = "relay",
) -> tuple[Pipeline, Pipeline, Pipeline]:
    """(floor pair, ours, claiming pair), each subscribed to its own topic, delivered the same
    way (`delivery`: "relay" or "push")."""
    from google.cloud import pubsub_v1

    base = {**emulator.env(), "DATABASE_URL": url, "GOOGLE_CLOUD_PROJECT": emulator.project}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(TABLE_DDL))
    engine.dispose()
    started: list[FunctionServer] = []
    relays: list[RelayProcess | None] = []

    def server(target: str, source: Path, env: dict[str, str], probe: str = "/") -> FunctionServer:
        started.append(FunctionServer(target, source, {**base, **env}, probe=probe))
        return started[-1]

    try:
        pubsub_v1.PublisherClient().create_topic(
            request={"name": f"projects/{emulator.project}/topics/results-ours"})
        floor_env = {"JOBS_TOPIC": "jobs-floor"}
        floor = Pipeline(
            "floor pair", server("submit_floor", FLOOR_SOURCE, floor_env),
            server("process_floor", FLOOR_SOURCE, {**floor_env, **PROCESS_ENV}), "/",
            {"Content-Type": "application/json"},
            "SELECT count(*) FILTER (WHERE done), 0 FROM bench_floor",
            "TRUNCATE bench_floor",
        )
        ours_env = {"AUTH_HS256_SECRET": SECRET, "JOBS_TOPIC": "jobs-ours",
                    "RESULTS_TOPIC": "results-ours"}
        token = issue_dev_token(SECRET, "bench", ttl_s=3600)
        ours = Pipeline(
            "ours", server("submit", ROOT / "main.py", ours_env, probe="/healthz"),
            server("process", ROOT / "main.py", {**ours_env, **PROCESS_ENV}), "/jobs",
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            "SELECT count(*) FILTER (WHERE state = 'COMPLETED'), "
            "count(*) FILTER (WHERE state IN ('FAILED', 'CANCELLED')) FROM jobs",
            "TRUNCATE jobs, job_events, webhook_deliveries",
        )
        claiming_env = {"JOBS_TOPIC": "jobs-claiming"}
        claiming = Pipeline(
            "claiming pair", server("submit_floor", FLOOR_SOURCE, claiming_env),
            server("process_claiming_floor", FLOOR_SOURCE, {**claiming_env, **PROCESS_ENV}),
            "/",
            floor.headers, floor.done_sql, floor.reset_sql,
        )
        for pipeline, topic in ((floor, "jobs-floor"), (ours, "jobs-ours"),
                                (claiming, "jobs-claiming")):
            pipeline.relay = push_subscription(emulator, topic, "process-" + topic[5:],
                                               pipeline.process.url + "/", delivery)
            relays.append(pipeline.relay)
    except BaseException:
        for relay in relays:
            if relay:
                relay.close()
        for s in started:
            s.close()
        raise
    return floor, ours, claiming


def submit_all(pipeline: Pipeline, n: int, clients: int = CLIENTS) -> None:
    post_jobs(pipeline.submit.port, pipeline.path, pipeline.headers, n, clients)


def post_jobs(port: int, path: str, headers: dict[str, str], n: int, clients: int) -> None:
    """POST n jobs from `clients` threads, each on its own keep-alive connection."""
    errors: list[Any] = []

    def client(count: int) -> None:
        c = Client(port)
        for _ in range(count):
            status, _ = c.post(path, BODY, headers)
            if status != 202:
                errors.append(status)

    threads = [threading.Thread(target=client, args=(n // clients + (i < n % clients),))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"submit on :{port} refused {len(errors)} jobs: {errors[:5]}")


def wait_done(engine: Engine, pipeline: Pipeline, n: int, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + 600
    while True:
        with engine.connect() as conn:
            done, failed = conn.execute(text(pipeline.done_sql)).one()
        if failed:
            raise RuntimeError(f"{pipeline.name}: {failed} jobs did not complete")
        if done >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pipeline.name}: only {done} of {n} jobs done")
        time.sleep(poll_s)


def run_once(engine: Engine, meter: DbMeter, pipeline: Pipeline, n: int) -> dict[str, float]:
    """One measured run from empty tables and a fresh checkpoint (so both pipelines pay the
    same full-page writes): jobs/s, CPU ms per job (the servers'; PostgreSQL's), statements
    and WAL bytes per job. The bench polls through the meter's observer, which is left out."""
    with engine.connect() as conn:
        conn.execute(text(pipeline.reset_sql))
        conn.execute(text("CHECKPOINT"))
    db_before, (submit_cpu, process_cpu) = meter.sample(), pipeline.cpu()
    started = time.perf_counter()
    submit_all(pipeline, n)
    wait_done(meter.observer, pipeline, n)
    elapsed = time.perf_counter() - started
    submit_after, process_after = pipeline.cpu()
    db = meter.delta(db_before, meter.sample(), n)
    submit_ms = (submit_after - submit_cpu) * 1000 / n
    process_ms = (process_after - process_cpu) * 1000 / n
    figures = {"jobs_per_s": n / elapsed, "cpu_ms_per_job": submit_ms + process_ms,
               "submit_cpu_ms_per_job": submit_ms, "process_cpu_ms_per_job": process_ms,
               **{k: v for k, v in db.items() if v is not None}}
    pipeline.runs.append(figures)
    return figures


def mean_of(pipeline: Pipeline) -> dict[str, float]:
    return {k: statistics.mean(r[k] for r in pipeline.runs) for k in pipeline.runs[0]}


def alternate(
    engine: Engine, pipelines: tuple[Pipeline, ...], n: int, rounds: int,
    say: Callable[[str], None] = print, meter: DbMeter | None = None,
) -> None:
    """Warm them all, then `rounds` rounds, in the given order in odd rounds and the reverse in
    even ones, so a slow patch of the machine does not fall on one pipeline only."""
    own = meter is None
    meter = meter or DbMeter(engine.url.render_as_string(hide_password=False))
    try:
        _alternate(engine, meter, pipelines, n, rounds, say)
    finally:
        if own:
            meter.close()


def _alternate(
    engine: Engine, meter: DbMeter, pipelines: tuple[Pipeline, ...], n: int, rounds: int,
    say: Callable[[str], None],
) -> None:
    for p in pipelines:  # two pipelines share the floor's table: each warms up from empty
        with engine.connect() as conn:
            conn.execute(text(p.reset_sql))
        submit_all(p, 40)
        wait_done(meter.observer, p, 40)
    for r in range(rounds):
        for p in pipelines if r % 2 == 0 else pipelines[::-1]:
            f = run_once(engine, meter, p, n)
            say(f"round {r + 1} {p.name:>13}: {f['jobs_per_s']:6.1f} jobs/s  "
                f"CPU {f['cpu_ms_per_job']:5.2f} ms/job (submit {f['submit_cpu_ms_per_job']:4.2f}, "
                f"process {f['process_cpu_ms_per_job']:4.2f})  "
                f"DB {f['db_cpu_ms_per_job']:4.2f} ms/job, "
                f"{f.get('statements_per_job', f.get('transactions_per_job', 0.0)):4.2f} "
                f"{'statements' if 'statements_per_job' in f else 'transactions'}/job  "
                f"WAL {f['wal_bytes_per_job']:6.0f} B/job")


def latencies(engine: Engine) -> dict[str, float]:
    """Ours, last run: submit -> COMPLETED from the database's timestamps, in ms."""
    with engine.connect() as conn:
        values = list(conn.execute(text(
            "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM jobs"
        )).scalars())
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def db_ratios(o: dict[str, float], f: dict[str, float]) -> dict[str, float]:
    """Ours against a floor on the database: its CPU, statements and transactions per job."""
    return {f"{key}_per_job": o[f"{key}_per_job"] / f[f"{key}_per_job"]
            for key in ("db_cpu_ms", "statements", "transactions")
            if f"{key}_per_job" in o and f.get(f"{key}_per_job")}


def main() -> int:
    n = int(os.environ.get("BENCH_JOBS", "300"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "4"))
    delivery = os.environ.get("BENCH_DELIVERY", "relay")
    if delivery not in DELIVERIES:
        raise SystemExit(f"BENCH_DELIVERY must be one of {DELIVERIES}")
    load_before = os.getloadavg()
    with services("jobs_e2e", STATS_CONF) as (url, emulator):
        raw = raw_push_rate(emulator, min(n, 1000), "raw-push")
        floor, ours, claiming = pipelines = start_pipelines(emulator, url, delivery)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        meter = DbMeter(url)
        try:
            alternate(engine, pipelines, n, rounds, meter=meter)
            lat = latencies(engine)
            rss = {p.name: {"submit": peak_rss_mib(p.submit.pid),
                            "process": peak_rss_mib(p.process.pid)} for p in pipelines}
        finally:
            meter.close()
            engine.dispose()
            for p in pipelines:
                p.close()
    load_after = os.getloadavg()
    f, o, c = mean_of(floor), mean_of(ours), mean_of(claiming)
    vs_claiming = {"throughput": o["jobs_per_s"] / c["jobs_per_s"],
                   "cpu_per_job": o["cpu_ms_per_job"] / c["cpu_ms_per_job"],
                   **db_ratios(o, c)}
    ratios = {"throughput": o["jobs_per_s"] / f["jobs_per_s"],
              "cpu_per_job": o["cpu_ms_per_job"] / f["cpu_ms_per_job"],
              "wal_per_job": o["wal_bytes_per_job"] / f["wal_bytes_per_job"],
              **db_ratios(o, f)}
    ok = {"throughput": ratios["throughput"] >= TARGETS["throughput"],
          "cpu_per_job": ratios["cpu_per_job"] <= TARGETS["cpu_per_job"],
          "wal_per_job_bytes": o["wal_bytes_per_job"] <= TARGETS["wal_per_job_bytes"]}
    print(f"{n} jobs x {rounds} rounds each, {CLIENTS} HTTP clients, echo preset, delivery "
          f"{delivery}" + (f" ({RELAY_CONCURRENCY} at a time)" if delivery == "relay" else ""))
    print(f"throughput   ours {o['jobs_per_s']:6.1f} jobs/s   pair {f['jobs_per_s']:6.1f}   "
          f"ratio {ratios['throughput']:.2f} (target >= 1.0)")
    print(f"CPU per job  ours {o['cpu_ms_per_job']:6.2f} ms       pair {f['cpu_ms_per_job']:6.2f}"
          f"   ratio {ratios['cpu_per_job']:.2f} (target <= 1.1)")
    for side in ("submit", "process"):
        key = f"{side}_cpu_ms_per_job"
        print(f"  of which {side:<8} ours {o[key]:6.2f} ms       pair {f[key]:6.2f}"
              f"   ratio {o[key] / f[key]:.2f}")
    print(f"WAL per job  ours {o['wal_bytes_per_job']:6.0f} B        pair "
          f"{f['wal_bytes_per_job']:6.0f}   ratio {ratios['wal_per_job']:.1f} "
          f"(target ours <= 2,200 B)")
    for key, label, unit in (("db_cpu_ms", "DB CPU/job", "ms"),
                             ("statements", "statements", "/job")):
        if f"{key}_per_job" in o:
            print(f"{label:<12} ours {o[key + '_per_job']:6.2f} {unit:<7} pair "
                  f"{f[key + '_per_job']:6.2f}   ratio {ratios[key + '_per_job']:.2f}   "
                  f"claiming pair {c[key + '_per_job']:6.2f}")
    for name, usd in pipeline_costs({"ours": o, "floor": f, "claiming": c}).items():
        print(f"$ per million jobs, {name:<28} {usd['total']:6.3f} (Cloud Run CPU+memory "
              f"{usd['run_cpu'] + usd['run_memory']:.3f}, requests {usd['run_requests']:.3f}; "
              f"Cloud SQL {usd['sql_cpu']:.3f}; Pub/Sub {usd['pubsub']:.3f}; "
              f"Cloud Tasks {usd['tasks']:.3f})")
    print(f"information: claiming pair {c['jobs_per_s']:6.1f} jobs/s, CPU "
          f"{c['cpu_ms_per_job']:5.2f} ms/job (process {c['process_cpu_ms_per_job']:4.2f}); "
          f"ours against it: throughput {vs_claiming['throughput']:.2f}, CPU "
          f"{vs_claiming['cpu_per_job']:.2f}")
    print(f"raw emulator push into a no-op function: {raw:.0f} msg/s (information only)")
    print(f"ours submit -> COMPLETED latency: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
    print(f"peak RSS (MiB): {json.dumps(rss)}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    record("end_to_end", jobs=n, rounds=rounds, clients=CLIENTS, ours=o, floor=f,
           delivery=delivery, relay_concurrency=RELAY_CONCURRENCY if delivery == "relay" else None,
           load_average={"before": load_before, "after": load_after},
           ours_runs=ours.runs, floor_runs=floor.runs, claiming=c, claiming_runs=claiming.runs,
           vs_claiming=vs_claiming, ratios=ratios, targets=TARGETS, ok=ok,
           raw_push_msg_per_s=raw, latency_ms=lat, peak_rss_mib=rss)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
