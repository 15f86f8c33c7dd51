"""bench/workflows.py runs tiny, so it keeps working: a chain against singles, and a fan-out
with its fan-in, on a server of its own with pg_stat_statements preloaded, through the
emulator's push and through make dev's relay. Only events are counted (jobs, steps, statements
by kind, which end came before which start), never a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import workflows
from localstack.emulator import PubSubEmulator
from localstack.postgres import migrate, start_postgres


@pytest.fixture()
def counted_database(emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    server = start_postgres(extra_conf=workflows.STATS_CONF)
    try:
        url = server.url(server.create_database("jobs_wfbench"))
        migrate(url)
        yield url
    finally:
        server.stop()


def _calls(run: dict[str, Any], label: str, toplevel: bool = True) -> int:
    return sum(s["calls"] for s in run["statements"]
               if s["label"] == label and s["toplevel"] == toplevel)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("relay", [False, True], ids=["push", "relay"])
def test_the_workflow_bench_runs_a_chain_singles_and_a_fan_out(
    counted_database: str, emulator: PubSubEmulator, relay: bool,
) -> None:
    lines: list[str] = []
    with workflows.stack(counted_database, emulator, tag="wfsmoke", relay=relay) as st:
        assert st.counting
        chain = workflows.chain_vs_singles(st, reps=2, n=3, say=lines.append)
        fan = workflows.fan_out_once(st, 5)
    assert {k: len(v) for k, v in chain["runs"].items()} == {
        "chain": 2, "singles": 2, "http_singles": 2}
    # Alternating: in order in the first round, reversed in the second.
    assert [line.split()[2].rstrip(":") for line in lines] == [
        "chain", "singles", "http_singles", "http_singles", "singles", "chain"]
    for runs in chain["runs"].values():
        # Every job COMPLETED (else the timeline raises), each started after the one before ended.
        assert all(run["hop_ms"] >= 0 for run in runs)
    assert (fan["spawned"], fan["children_completed"], fan["gather_state"]) == (5, 5, "COMPLETED")
    assert fan["gather_output"] == {"parents": 6, "completed": 6}
    assert fan["workflow"] == {"state": "COMPLETED", "steps_total": 7, "steps_done": 7}
    assert fan["gap_from_last_parent_s"] >= 0  # the fan-in never starts before its last parent
    steps = 7  # split, 5 children, gather: each is claimed, completed and hands on what it freed
    assert _calls(fan, "spawn a child (split's handler)") == 5
    # Claims and exits of steps that reach one instance at once share statements (issue 30).
    for move in ("claim", "complete"):
        assert 1 <= _calls(fan, move) + _calls(fan, f"{move}, batched") <= steps
    # Every step with children (split, and each child: the gather waits for them), not the
    # gather, which has none: its exit says so.
    assert _calls(fan, "take the steps this end made due") == steps - 1
    assert _calls(fan, "read the parents (gather's handler)") == 1
    assert _calls(fan, "create the workflow (the bench)") == 1
    assert _calls(fan, "trigger: the waiting steps, one parent fewer", toplevel=False) == steps
    assert fan["statements_per_child"] >= 4  # at least spawn, claim, complete, take
