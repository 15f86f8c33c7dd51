"""Benchmark: what a job costs through batch submit (`POST /jobs:batch`, 1,000 a request)
against single submits (`POST /jobs`), in the same run, on the same server: CPU seconds of the
`submit` server's processes and of PostgreSQL's (the postmaster and every backend, read from
/proc), per job.

    .venv/bin/python -m bench.batch_submit     # BENCH_ROUNDS (default 2)

Each round sends 1,000 single submits, one at a time on a keep-alive connection, then 2 batches
of 1,000; the rounds interleave the two so machine noise falls on both alike. Target: a batched
job costs at most 0.3 of a single one, for the server and for PostgreSQL. The Pub/Sub
emulator's CPU (a JVM) is not counted: production publishes to Google's service.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.proc_stats import cpu_seconds, stat_fields
from bench.results import record
from bench.services import services
from common.api.auth import issue_dev_token
from localstack.function_server import FunctionServer
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)  # per run: nothing outside this run may sign tokens
TARGET = 0.3
BATCH = 1000
_TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster, the backends it reaped, and every live child of it."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:  # field 4: ppid
            total += sum(int(f) for f in fields[11:15])
    return total / _TICK


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        self.conn.request("POST", path, body=json.dumps(body).encode(), headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())


def job(i: int) -> dict[str, object]:
    return {"preset": "echo", "content": f"hello {i}", "metadata": {"n": i}}


def main() -> int:
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    with services("jobs_bench_batch") as (url, emulator):
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        fields = stat_fields(backend)
        assert fields is not None
        postmaster = int(fields[1])
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/jobs"})
        env = {**emulator.env(), "DATABASE_URL": url, "AUTH_HS256_SECRET": SECRET,
               "GOOGLE_CLOUD_PROJECT": emulator.project, "JOBS_TOPIC": "jobs"}
        server = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
        try:
            client = Client(server.port, issue_dev_token(SECRET, "bench", ttl_s=3600))
            for i in range(50):  # warm: pools, publisher, prepared statements, the flow module
                client.post("/jobs", job(i))
            client.post("/jobs:batch", {"jobs": [job(i) for i in range(100)]})
            cost = {"single": [0.0, 0.0, 0], "batch": [0.0, 0.0, 0]}  # submit s, postgres s, n
            wall = {"single": 0.0, "batch": 0.0}
            n = 0
            for _ in range(rounds):
                for kind in ("single", "batch"):
                    cpu0, pg0, t0 = cpu_seconds(server.pid), postgres_cpu(postmaster), \
                        time.perf_counter()
                    if kind == "single":
                        for _ in range(BATCH):
                            status, _answer = client.post("/jobs", job(n))
                            assert status == 202, status
                            n += 1
                        made = BATCH
                    else:
                        made = 0
                        for _ in range(2):
                            status, answer = client.post(
                                "/jobs:batch", {"jobs": [job(n + i) for i in range(BATCH)]})
                            assert status == 200 and answer["created"] == BATCH, status
                            n += BATCH
                            made += BATCH
                    wall[kind] += time.perf_counter() - t0
                    cost[kind][0] += cpu_seconds(server.pid) - cpu0
                    cost[kind][1] += postgres_cpu(postmaster) - pg0
                    cost[kind][2] += made
            per_job = {kind: {"submit_cpu_ms": c[0] * 1000 / c[2],
                              "postgres_cpu_ms": c[1] * 1000 / c[2],
                              "wall_ms": wall[kind] * 1000 / c[2], "jobs": c[2]}
                       for kind, c in cost.items()}
            ratio = {key: per_job["batch"][key] / per_job["single"][key]
                     for key in ("submit_cpu_ms", "postgres_cpu_ms", "wall_ms")}
        finally:
            server.close()
            engine.dispose()
    ok = ratio["submit_cpu_ms"] <= TARGET and ratio["postgres_cpu_ms"] <= TARGET
    for kind in ("single", "batch"):
        f = per_job[kind]
        print(f"{kind:>6}: submit {f['submit_cpu_ms']:6.3f} ms CPU/job  postgres "
              f"{f['postgres_cpu_ms']:6.3f} ms CPU/job  wall {f['wall_ms']:6.3f} ms/job  "
              f"({f['jobs']} jobs)")
    print(f"batch/single: submit CPU {ratio['submit_cpu_ms']:.3f}, PostgreSQL CPU "
          f"{ratio['postgres_cpu_ms']:.3f}, wall {ratio['wall_ms']:.3f} (target <= {TARGET}) "
          f"{'OK' if ok else 'ABOVE'}")
    record("batch_submit", rounds=rounds, per_job=per_job, ratio=ratio, target=TARGET)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
