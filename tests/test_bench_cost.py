"""The cost benchmarks run tiny, so they keep working: the floor pair and ours end to end, and
`process` alone against `process_floor`. Only counts are checked, never a time."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

import bench.services
from bench import end_to_end, process_alone


@pytest.mark.timeout(300)
def test_end_to_end_alternates_the_floor_pair_ours_and_the_claiming_pair(
    stack_database: str, emulator: Any
) -> None:
    floor, ours, claiming = pipelines = end_to_end.start_pipelines(emulator, stack_database)
    engine = create_engine(stack_database, isolation_level="AUTOCOMMIT")
    lines: list[str] = []
    try:
        end_to_end.alternate(engine, pipelines, n=12, rounds=2, say=lines.append)
        with engine.connect() as conn:
            # The last run was the floor pair's (the second round runs in reverse).
            floor_done = conn.execute(text("SELECT count(*) FROM bench_floor WHERE done"))
            assert floor_done.scalar_one() == 12
            events = conn.execute(text("SELECT count(*) FROM job_trail")).scalar_one()
            assert events == 12 * 3  # created, claimed, completed: the audit trail is whole
    finally:
        engine.dispose()
        for p in pipelines:
            p.close()
    assert len(floor.runs) == len(ours.runs) == len(claiming.runs) == 2
    assert [line.split()[2].rstrip(":") for line in lines] == [
        "floor", "ours", "claiming", "claiming", "ours", "floor"]
    for run in floor.runs + ours.runs + claiming.runs:
        assert run["wal_bytes_per_job"] > 0
        # /proc counts CPU in 10 ms ticks: a dozen jobs may cost a server none it can see.
        assert run["submit_cpu_ms_per_job"] >= 0 and run["process_cpu_ms_per_job"] >= 0


@pytest.mark.timeout(300)
def test_process_alone_posts_every_envelope(stack_database: str, emulator: Any) -> None:
    result = process_alone.run(stack_database, emulator, n=10, rounds=2)
    assert len(result["runs"]["ours"]) == len(result["runs"]["floor"]) == 2
    assert len(result["runs"]["claiming"]) == len(result["runs"]["unbatched"]) == 2
    assert set(result["peak_rss_mib"]) == {"process", "process_floor", "process_claiming_floor",
                                           "process_unbatched"}
    assert all(rss > 0 for rss in result["peak_rss_mib"].values())
    assert set(result["vs_claiming"]) == {"throughput_ratio", "cpu_ratio"}


def test_services_stops_postgres_when_the_emulator_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped: list[str] = []

    class Server:
        def stop(self) -> None:
            stopped.append("postgres")

    class Emulator:
        def __init__(self, project: str) -> None:
            pass

        def start(self) -> Any:
            raise RuntimeError("emulator did not start")

    monkeypatch.setattr(bench.services, "start_postgres", lambda durable: Server())
    monkeypatch.setattr(bench.services, "PubSubEmulator", Emulator)
    with pytest.raises(RuntimeError, match="emulator"), bench.services.services("x"):
        pass
    assert stopped == ["postgres"]
