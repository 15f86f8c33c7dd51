"""Issue 30's bench figures: dollars per million jobs from what a job takes (bench/prices.py),
the report's rows for them, and the database meter against a real PostgreSQL (counts only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from bench import prices, report_cost
from bench.db_meter import STATS_CONF, DbMeter
from localstack.postgres import migrate, start_postgres

FIGURES = {"submit_cpu_ms_per_job": 1.0, "process_cpu_ms_per_job": 2.0,
           "db_cpu_ms_per_job": 3.6, "statements_per_job": 3.0, "wal_bytes_per_job": 2000.0}


def test_per_million_adds_each_line_at_its_list_price() -> None:
    usd = prices.per_million(prices.Usage({"submit": 1.0, "process": 2.0}, db_cpu_ms=3.6,
                                          run_requests=2, pubsub_bytes=2000, tasks_operations=1))
    assert usd["run_cpu"] == pytest.approx(3e-3 * 0.000024 * 1e6)
    assert usd["run_memory"] == pytest.approx((1e-3 * 0.5 + 2e-3 * 1.0) * 0.0000025 * 1e6)
    assert usd["run_requests"] == pytest.approx(0.80)
    assert usd["sql_cpu"] == pytest.approx(3.6e-3 / 3600 * 0.0413 * 1e6)
    assert usd["pubsub"] == pytest.approx(2000 / 2 ** 40 * 40 * 1e6)
    assert usd["tasks"] == pytest.approx(0.40)
    assert usd["total"] == pytest.approx(sum(v for k, v in usd.items() if k != "total"))


def test_pipeline_costs_price_cloud_tasks_on_the_floor_pair() -> None:
    e2e = {"ours": FIGURES, "floor": FIGURES, "claiming": FIGURES}
    costs = prices.pipeline_costs(e2e)
    assert set(costs) == {"ours", "floor pair", "claiming pair", "Cloud Tasks + floor handlers"}
    tasks = costs["Cloud Tasks + floor handlers"]
    assert tasks["pubsub"] == 0 and tasks["tasks"] == pytest.approx(0.80)
    assert tasks["run_cpu"] == costs["floor pair"]["run_cpu"]
    # Ours publishes a result notification beside the job's publish and push.
    assert costs["ours"]["pubsub"] > costs["floor pair"]["pubsub"]
    rows = report_cost.dollar_rows({**e2e, "delivery": "relay", "relay_concurrency": 8})
    assert len(rows) == 3 and all(r[0].startswith("end to end, $ per million") for r in rows)
    assert len(report_cost.end_to_end_db_rows(
        {**e2e, "delivery": "relay", "relay_concurrency": 8})) == 2  # WAL has its own row
    assert all(not line.startswith("- ") or "$" in line for line in report_cost.price_notes())


@pytest.fixture(params=["pg_stat_statements", "plain"])
def metered_database(request: pytest.FixtureRequest, stack_database: str) -> Iterator[str]:
    """A server that preloads pg_stat_statements, as the benchmarks start theirs, and the
    suite's plain one."""
    if request.param == "plain":
        yield stack_database
        return
    server = start_postgres(extra_conf=STATS_CONF)
    try:
        url = server.url(server.create_database("jobs_meter"))
        migrate(url)
        yield url
    finally:
        server.stop()


def test_db_meter_counts_the_servers_statements_and_not_its_own(metered_database: str) -> None:
    meter = DbMeter(metered_database)
    engine = create_engine(metered_database, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:  # the dialect's first-connect queries: not measured
            pass
        before = meter.sample()
        with engine.connect() as conn:
            for _ in range(20):
                conn.execute(text("SELECT 1"))
        with meter.observer.connect() as conn:  # the bench's polls: not counted
            for _ in range(5):
                conn.execute(text("SELECT count(*) FROM jobs"))
        delta = meter.delta(before, meter.sample(), 10)
    finally:
        engine.dispose()
        meter.close()
    assert delta["db_cpu_ms_per_job"] is not None and delta["db_cpu_ms_per_job"] >= 0
    assert delta["wal_bytes_per_job"] is not None and delta["wal_bytes_per_job"] >= 0
    if meter.counting:
        assert delta["statements_per_job"] == 2.0
        assert delta["transactions_per_job"] is None
    else:  # pg_stat_database reports a backend's transactions seconds late: no exact count
        assert delta["statements_per_job"] is None
        assert isinstance(delta["transactions_per_job"], float)
