"""bench/flow_control.py runs tiny, so it keeps working: each of its three parts, counting
events (jobs, attempts, statements, starts in a window on the database's clock), never a time."""

from __future__ import annotations

from typing import Any

import pytest

from bench import flow_claims, flow_control
from common.settings import load_settings


@pytest.mark.timeout(300)
def test_flow_control_runs_its_three_parts(stack_database: str, emulator: Any) -> None:
    with flow_control.stack(stack_database, emulator) as st:
        rate = flow_control.rate_accuracy(st, 12)
        prio = flow_control.priority(st, 6, trials=2)
    assert rate["jobs"] == 12 and rate["attempts_max"] == 1  # waiting spent no attempt
    assert rate["max_starts_in_1s"] <= flow_control.RATE["max_starts"]
    assert rate["deliveries"] >= 12 and len(rate["deliveries_per_server"]) == 2
    assert len(prio["trials"]) == 2 and prio["running_left"] == 0
    assert all(t["starts_before"] >= 0 for t in prio["trials"])
    settings = load_settings(database_url=stack_database, google_cloud_project=emulator.project)
    cost = flow_claims.claim_cost(stack_database, settings, claims=20, block=10, paths=10)
    claim, path = cost["claim"], cost["worker_path"]
    assert claim["on"]["n"] == claim["off"]["n"] == 20
    assert claim["on"]["statements"] == claim["off"]["statements"] == 1
    # On: the claim, the release after a start under a rate, the completion, and the releases
    # of the owner's slot and the preset's running slot; off: the claim and the completion.
    assert (path["on"]["statements"], path["off"]["statements"]) == (5, 2)
