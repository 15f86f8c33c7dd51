"""The chaos run at reduced size (200 jobs) through the real local stack: see
tests/support/chaos_run.py for the faults, and bench/chaos.py for the full 1,000."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import chaos_run


@pytest.mark.timeout(900)
def test_every_job_ends_once_under_faults(stack_database: str, emulator: Any) -> None:
    result = chaos_run.run(stack_database, emulator, n=200)
    print("chaos counts:", result.counts)
    assert result.problems == [], result.problems[:20]
    counts = result.counts
    outcomes = counts["outcomes"]
    assert outcomes.get("succeed:COMPLETED", 0) == 126
    assert outcomes.get("transient:COMPLETED", 0) == 40
    assert outcomes.get("slow:COMPLETED", 0) == 10
    assert outcomes.get("crash:COMPLETED", 0) == 4
    assert outcomes.get("permanent:FAILED", 0) == 10
    assert outcomes.get("hang:FAILED", 0) == 10
    assert counts["duplicates_published"] == 40
    assert counts["publishes_dropped_at_submit"] > 0  # the sweep published those
    # The faults hit what they claim to: the kill -9 caught jobs running, and their lost
    # attempts were rescued; handlers finished and then their instance died before the write.
    assert counts["running_jobs_caught_by_kill"] > 0
    assert counts["caught_jobs_rescued"] > 0
    assert counts["attempts_rescued_after_lost_lease"] > 0
    assert counts["handler_finished_then_instance_died"] > 0
    assert counts["instances_killed_by_their_handler"] > 0
    # Flow limits held through all of it (chaos_run._check_flow adds a problem otherwise), and
    # were really met: jobs under the running limit filled it, and the rate spaced its starts.
    # Long jobs (issue 29) through the same faults, in child processes: all completed once,
    # and each execution that killed itself after its work was rescued to a new attempt.
    long_jobs = counts["long_jobs"]
    assert long_jobs["long-plain:COMPLETED"] == 3 and long_jobs["long-killed:COMPLETED"] == 3
    assert long_jobs["long_executions_killed_and_rescued"] >= 3
    assert counts["gpu_runs"] > 0 and counts["gpu_peak_running"] == 2
    assert counts["api_starts"] > 0
    # Workflows ran through the same faults (chaos_run._check_workflows): two diamonds, two
    # fan-outs of 50 spawned children (one losing instances mid-run), two failing chains.
    assert counts["workflow_steps"] == 2 * 4 + 2 * (2 + 50) + 2 * 4
    assert counts["workflow_instances_lost"] > 0
    # Batches (issue 30; tests/support/chaos_batch.py): instances were killed while exits, and
    # claims, were queued behind a running statement; every such job still ended COMPLETED
    # once (chaos_batch.check_batch_kills adds a problem otherwise), some after the write that
    # died with the instance was rescued.
    batches = counts["batch_kills"]
    assert batches["kills_with_exits_queued"] > 0 and batches["kills_with_claims_queued"] > 0
    assert batches["exit-member_writes_lost_and_rescued"] > 0
    assert batches["exit-member:COMPLETED"] == 5 * len(batches["kills"]["exits"])
