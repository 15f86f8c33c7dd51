"""End-to-end throughput and latency: N jobs through the real local stack (HTTP submit ->
emulator push -> process -> PostgreSQL), against the raw push rate of the same emulator into a
no-op functions-framework CloudEvent function, measured in the same run.

Prints the ratio (target >= 0.6) and the submit -> COMPLETED latency p50 and p99, taken from the
database's own timestamps (created_at, finished_at)."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.results import record
from bench.services import services
from bench.submit_latency import Client
from common.api.auth import issue_dev_token
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.topology import Topology
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)
TARGET = 0.6
CLIENTS = 8


def _push_subscription(emulator: PubSubEmulator, topic: str, name: str, endpoint: str) -> None:
    Topology(project=emulator.project, jobs_topic=topic, push_subscription=name,
             dead_letter_topic=topic + "-dead", dead_letter_subscription=topic + "-dead-sub",
             results_topic=topic + "-results").create(endpoint)


def floor_rate(emulator: PubSubEmulator, n: int, topic: str) -> float:
    """Messages per second the emulator pushes into a function that does nothing."""
    from google.cloud import pubsub_v1

    count_file = Path(tempfile.mkstemp(prefix="noop-count-")[1])
    server = FunctionServer(
        "noop_event", ROOT / "bench" / "floor" / "main.py",
        {**emulator.env(), "NOOP_COUNT_FILE": str(count_file)},
    )
    try:
        _push_subscription(emulator, topic, topic + "-push", server.url + "/")
        publisher = pubsub_v1.PublisherClient()
        path = publisher.topic_path(emulator.project, topic)
        data = json.dumps({"v": 1, "job_id": "00000000-0000-4000-8000-000000000000",
                           "attempts": 0}).encode()
        started = time.perf_counter()
        futures = [publisher.publish(path, data) for _ in range(n)]
        for f in futures:
            f.result(timeout=60)
        deadline = time.monotonic() + 300
        while count_file.stat().st_size < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor: only {count_file.stat().st_size} of {n} pushed")
            time.sleep(0.01)
        return n / (time.perf_counter() - started)
    finally:
        server.close()
        count_file.unlink(missing_ok=True)


def pipeline_run(
    emulator: PubSubEmulator, url: str, n: int, tag: str
) -> tuple[float, list[float]]:
    """Jobs per second from the first submit to the last COMPLETED, and each job's latency."""
    from google.cloud import pubsub_v1

    env = {
        **emulator.env(),
        "DATABASE_URL": url,
        "AUTH_HS256_SECRET": SECRET,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "JOBS_TOPIC": f"jobs-{tag}",
        "RESULTS_TOPIC": f"results-{tag}",
    }
    pubsub_v1.PublisherClient().create_topic(
        request={"name": f"projects/{emulator.project}/topics/results-{tag}"}
    )
    process = FunctionServer("process", ROOT / "main.py", env)
    submit = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        _push_subscription(emulator, f"jobs-{tag}", f"process-{tag}", process.url + "/")
        token = issue_dev_token(SECRET, "bench", ttl_s=3600)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        body = json.dumps({"preset": "text-stats", "content": "One fish. Two fish."}).encode()
        # Warm both servers (pools, publisher, imports), then start from empty tables.
        warm = Client(submit.port)
        for _ in range(20):
            warm.post("/jobs", body, headers)
        _wait_completed(engine, 20)
        with engine.connect() as conn:
            conn.execute(text("TRUNCATE jobs, job_events, job_results, webhook_deliveries"))
        errors: list[Any] = []

        def client(count: int) -> None:
            c = Client(submit.port)
            for _ in range(count):
                status, _ = c.post("/jobs", body, headers)
                if status != 202:
                    errors.append(status)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n // CLIENTS + (i < n % CLIENTS),))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"submit refused {len(errors)} jobs: {errors[:5]}")
        _wait_completed(engine, n)
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            latencies = list(conn.execute(text(
                "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM jobs"
            )).scalars())
        return n / elapsed, latencies
    finally:
        engine.dispose()
        submit.close()
        process.close()


def _wait_completed(engine: Any, n: int) -> None:
    deadline = time.monotonic() + 600
    while True:
        with engine.connect() as conn:
            done, other = conn.execute(text(
                "SELECT count(*) FILTER (WHERE state = 'COMPLETED'), "
                "count(*) FILTER (WHERE state IN ('FAILED', 'CANCELLED')) FROM jobs"
            )).one()
        if other:
            raise RuntimeError(f"{other} jobs did not complete")
        if done >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} jobs completed")
        time.sleep(0.05)


def main() -> int:
    n = int(os.environ.get("BENCH_JOBS", "1000"))
    with services("jobs_e2e") as (url, emulator):
        floor_before = floor_rate(emulator, n, "floor-a")
        rate, latencies = pipeline_run(emulator, url, n, "a")
        floor_after = floor_rate(emulator, n, "floor-b")
        floor = statistics.mean([floor_before, floor_after])
        ratio = rate / floor
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        print(f"raw emulator push into a no-op function: {floor_before:.0f} and "
              f"{floor_after:.0f} msg/s (before/after), mean {floor:.0f}")
        print(f"end to end ({n} jobs, {CLIENTS} HTTP clients): {rate:.0f} jobs/s  "
              f"ratio {ratio:.2f} (target >= {TARGET}) {'OK' if ratio >= TARGET else 'BELOW'}")
        print(f"submit -> COMPLETED latency: p50 {cuts[49] * 1000:.0f} ms, "
              f"p99 {cuts[98] * 1000:.0f} ms")
        record("end_to_end", jobs=n, clients=CLIENTS, ours=rate, floor=floor,
               floor_runs=[floor_before, floor_after], ratio=ratio, target=TARGET,
               latency_ms={"p50": cuts[49] * 1000, "p99": cuts[98] * 1000})
        return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
