"""The chaos run's batch faults (issue 30): `process` killed with a half-formed batch in flight.

`process` writes the exits (and the claims) of the deliveries it holds at once in shared
statements (common/worker/coalescer.py). Here groups of jobs are pushed to it at once, as
production's push does (the emulator's push keeps only about two requests in flight): each
request is the push envelope, retried on any failure as Pub/Sub redelivers.

- An exit group: EXIT_GROUP handlers meet in the instance (common/presets/chaos_batch.py) and
  end together, so their exits queue in the exit coalescer; one of them kills the instance as
  soon as exits are queued behind a running statement.
- A claim group: a killer job runs first and watches the claim coalescer; then CLAIM_GROUP
  pushes arrive at once, their claims queue behind the first, and the killer kills the
  instance.

What was caught is in the run log (the killer's `killed-with-...` row). Every job must still
end COMPLETED once: a write that died with the instance is rescued after its lease, a claim
that never went out is claimed again on the redelivery.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from sqlalchemy import Engine, text

BATCH_OWNER = "hs256:chaos-batch"
EXIT_GROUP = 6
CLAIM_GROUP = 6
CAUGHT = re.compile(r"killed-with-(claims|exits)-queued:(\d+) busy:(\d) sizes:(\S*)")


def _push(url: str, job_id: str, tag: str, tries: int = 40) -> int:
    """POST one job's message as Pub/Sub's push would, until a success code (a SIGKILL'd
    instance resets the connection; gunicorn starts another). Returns the tries it took."""
    from common.messaging.job_message import encode_message
    from common.store.models import DispatchItem

    data, attributes = encode_message(DispatchItem(id=job_id, attempts=0))
    for attempt in range(1, tries + 1):
        body = json.dumps({"message": {
            "data": base64.b64encode(data).decode(), "attributes": attributes,
            "messageId": f"{tag}-{job_id}-{attempt}"}, "subscription": tag}).encode()
        request = urllib.request.Request(url + "/", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # our local server
                if resp.status in (200, 204):
                    return attempt
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return tries


def _push_at_once(url: str, job_ids: list[str], tag: str) -> list[threading.Thread]:
    start = threading.Barrier(len(job_ids))

    def push(job_id: str) -> None:
        start.wait()
        _push(url, job_id, tag)

    threads = [threading.Thread(target=push, args=(j,)) for j in job_ids]
    for thread in threads:
        thread.start()
    return threads


def run_batch_kills(database_url: str, process_url: str, groups: int,
                    claim_groups: int) -> dict[str, str]:
    """Make and push the groups, one after the other; returns the jobs' ids and their roles
    (`exit-killer`, `exit-member`, `claim-killer`, `claim-member`)."""
    from common.settings import load_settings
    from common.store.engine import create_engine_from_settings
    from common.store.job_store import JobStore
    from common.store.models import DispatchItem, NewJob

    settings = load_settings(database_url=database_url)
    store_engine = create_engine_from_settings(settings)
    store = JobStore(store_engine, settings)
    roles: dict[str, str] = {}

    def make(role: str, options: dict[str, Any]) -> str:
        job, _ = store.create(BATCH_OWNER, NewJob(preset="chaos", content=role,
                                                  metadata={"options": options}))
        store.mark_dispatched([DispatchItem(id=job.id, attempts=0)])  # pushed here, not swept
        roles[str(job.id)] = role
        return str(job.id)

    try:
        for group in range(groups):
            meet = {"meet": f"exits-{group}", "meet_size": EXIT_GROUP}
            ids = [make("exit-killer", {**meet, "kill_in_batch": "exits"})]
            ids += [make("exit-member", meet) for _ in range(EXIT_GROUP - 1)]
            for thread in _push_at_once(process_url, ids, f"batch-exits-{group}"):
                thread.join()
        for group in range(claim_groups):
            killer = make("claim-killer", {"kill_in_batch": "claims"})
            first = threading.Thread(target=_push, args=(process_url, killer, "batch-claims"))
            first.start()
            _wait_running(store_engine, killer)
            members = [make("claim-member", {}) for _ in range(CLAIM_GROUP)]
            threads = _push_at_once(process_url, members, f"batch-claims-{group}")
            for thread in [first, *threads]:
                thread.join()
    finally:
        store_engine.dispose()
    return roles


def _wait_running(engine: Engine, job_id: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(text("SELECT state = 'PROCESSING' FROM jobs WHERE id = :id"),
                            {"id": job_id}).scalar_one():
                return
        time.sleep(0.01)


def batch_jobs_ended(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(text(
            "SELECT 1 FROM jobs WHERE owner_id = :owner AND state NOT IN "
            "('COMPLETED', 'FAILED', 'CANCELLED') LIMIT 1"), {"owner": BATCH_OWNER}).first()


def check_batch_kills(engine: Engine, roles: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Each job COMPLETED once, by one successful run at the attempt that completed it; any
    other successful run (its exit died with the instance) and each killer's attempt was
    rescued after its lease, never written. Returns the counts and the problems."""
    problems: list[str] = []
    with engine.connect() as conn:
        jobs = {str(r.id): r for r in conn.execute(text(
            "SELECT id, state, (SELECT count(*) FROM job_results r WHERE r.job_id = j.id) "
            "AS results FROM jobs j WHERE owner_id = :o"), {"o": BATCH_OWNER})}
        events: dict[str, list[tuple[str, int]]] = {}
        for r in conn.execute(text(
                "SELECT e.job_id, e.reason, e.attempt FROM job_trail e JOIN jobs j "
                "ON j.id = e.job_id WHERE j.owner_id = :o ORDER BY e.id"), {"o": BATCH_OWNER}):
            events.setdefault(str(r.job_id), []).append((r.reason, r.attempt))
        runs: dict[str, list[tuple[int, str]]] = {}
        for r in conn.execute(text(
                "SELECT job_id, attempt, outcome FROM chaos_runs WHERE job_id = ANY(CAST(:ids "
                "AS uuid[])) ORDER BY id"), {"ids": list(roles)}):
            runs.setdefault(str(r.job_id), []).append((r.attempt, r.outcome))
    counts: Counter[str] = Counter()
    caught: dict[str, list[int]] = {"exits": [], "claims": []}
    sizes: list[str] = []
    for job_id, role in roles.items():
        job, reasons, job_runs = jobs[job_id], events.get(job_id, []), runs.get(job_id, [])
        counts[f"{role}:{job.state}"] += 1
        completed = [a for r, a in reasons if r == "completed"]
        rescued = {a for r, a in reasons if r == "lease-expired-retry"}
        succeeded = [a for a, o in job_runs if o == "succeeded"]
        if job.state != "COMPLETED" or len(completed) != 1 or job.results != 1:
            problems.append(f"batch job {job_id} ({role}) ended {job.state}: {reasons}")
            continue
        if [a for a in succeeded if a in completed] != completed:
            problems.append(f"batch job {job_id} ({role}): runs {job_runs}, events {reasons}")
        for attempt in succeeded:
            if attempt not in completed:
                counts[f"{role}_writes_lost_and_rescued"] += 1
                if attempt not in rescued:
                    problems.append(f"batch job {job_id}: run at {attempt} neither written nor "
                                    f"rescued: {reasons}")
        for attempt in [a for a, o in job_runs if o == "finished-then-killed"]:
            if attempt in completed or attempt not in rescued:
                problems.append(f"batch job {job_id}: killed attempt {attempt}: {reasons}")
        if role == "claim-member" and 1 in rescued and not any(a == 1 for a, _ in job_runs):
            counts["claims_committed_then_lost_and_rescued"] += 1
        for _, outcome in job_runs:
            found = CAUGHT.match(outcome)
            if found:
                caught[found.group(1)].append(int(found.group(2)))
                sizes.append(f"{found.group(1)}:{found.group(4)}")
    result: dict[str, Any] = dict(sorted(counts.items()))
    result["kills"] = {kind: sorted(n) for kind, n in caught.items()}
    result["kills_with_exits_queued"] = sum(1 for n in caught["exits"] if n > 0)
    result["kills_with_claims_queued"] = sum(1 for n in caught["claims"] if n > 0)
    result["batch_sizes_before_kills"] = sizes
    return result, problems
