"""Benchmark: POST /jobs latency through a real functions-framework server, against real
PostgreSQL and the Pub/Sub emulator, as a ratio against the floor pair's `submit_floor` (parse,
one INSERT, one publish: bench/floor/main.py) served and measured the same way in the same run.

    .venv/bin/python -m bench.submit_latency     # BENCH_REQUESTS (default 2000) each

Targets: p50 <= 1.2 x floor, p99 <= 1.5 x floor. Requests alternate between the two servers,
one at a time, so machine noise falls on both alike.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import time

from sqlalchemy import create_engine, text

from bench.floor.main import TABLE_DDL
from bench.results import record
from common.api.auth import issue_dev_token
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.postgres import migrate, start_postgres
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)  # per run: nothing outside this run may sign tokens
TARGETS = {"p50": 1.2, "p99": 1.5}


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49], "p99": cuts[98]}


class Client:
    """One keep-alive connection per server, reopened if the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
                return resp.status, time.perf_counter() - started
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def main() -> int:
    n = int(os.environ.get("BENCH_REQUESTS", "2000"))
    server = start_postgres(durable=True)
    emulator = PubSubEmulator(project="bench-project").start()
    servers: list[FunctionServer] = []
    try:
        url = server.url(server.create_database("jobs_bench"))
        migrate(url)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:  # the floor's own table, beside the job store's
            conn.execute(text(TABLE_DDL))
        engine.dispose()
        os.environ.update(emulator.env())
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        publisher.create_topic(request={"name": f"projects/{emulator.project}/topics/jobs"})
        env = {
            **emulator.env(),
            "DATABASE_URL": url,
            "AUTH_HS256_SECRET": SECRET,
            "GOOGLE_CLOUD_PROJECT": emulator.project,
            "JOBS_TOPIC": "jobs",
        }
        ours = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
        servers.append(ours)
        floor = FunctionServer("submit_floor", ROOT / "bench" / "floor" / "main.py", env)
        servers.append(floor)
        token = issue_dev_token(SECRET, "bench", ttl_s=3600)
        body = json.dumps({"preset": "echo", "content": "hello", "metadata": {"n": 1}}).encode()
        ours_client, floor_client = Client(ours.port), Client(floor.port)
        ours_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        floor_headers = {"Content-Type": "application/json"}
        for _ in range(100):  # warm both: pools, publishers, caches
            ours_client.post("/jobs", body, ours_headers)
            floor_client.post("/", body, floor_headers)
        lat_ours, lat_floor = [], []
        for _ in range(n):
            status, took = ours_client.post("/jobs", body, ours_headers)
            assert status == 202, status
            lat_ours.append(took)
            status, took = floor_client.post("/", body, floor_headers)
            assert status == 202, status
            lat_floor.append(took)
        q_ours, q_floor = _quantiles(lat_ours), _quantiles(lat_floor)
        ok = True
        for key, target in TARGETS.items():
            ratio = q_ours[key] / q_floor[key]
            ok &= ratio <= target
            print(
                f"submit {key}: {q_ours[key] * 1000:6.2f} ms  floor {q_floor[key] * 1000:6.2f} ms"
                f"  ratio {ratio:.2f} (target <= {target}) {'OK' if ratio <= target else 'ABOVE'}"
            )
        print(f"requests: {n} each, sequential, keep-alive; durable PostgreSQL; emulator")
        record("submit_latency", requests=n, ours_ms={k: v * 1000 for k, v in q_ours.items()},
               floor_ms={k: v * 1000 for k, v in q_floor.items()}, targets=TARGETS)
        return 0 if ok else 1
    finally:
        for s in servers:
            s.close()
        emulator.stop()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
