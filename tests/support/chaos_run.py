"""The chaos run, shared by the CI test (200 jobs) and bench/chaos.py (1,000 jobs).

Everything real: submit, process and sweep as functions-framework servers, the emulator's push
subscription with its dead-letter policy, PostgreSQL. A mix of chaos jobs goes in over HTTP
while faults are injected: duplicate messages, a kill -9 of the process server timed for when
the database shows jobs running under its leases (restarted on the same port), handlers that
finish and then kill their own instance before the result is written (gunicorn starts a new
worker, as Cloud Run starts a new instance), dropped publishes at submit, and every database
connection terminated once. Then the sweep runs until nothing changes, and the outcome is
checked job by job, including that every attempt lost with its instance was rescued.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, text

from common.api.auth import issue_dev_token
from common.messaging.job_message import encode_message
from common.store.models import DispatchItem
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.paths import ROOT
from localstack.topology import Topology
from tests.support import chaos_batch

SECRET = "chaos-run-secret-of-enough-length"
SCHEDULER = "chaos-scheduler"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


# Kinds whose jobs must end COMPLETED whatever was done to their instances.
MUST_COMPLETE = ("succeed", "transient", "slow", "crash")
# Outcomes in the chaos run log of attempts that can have written nothing.
LOST_WITH_INSTANCE = "finished-then-killed"


@dataclass
class Planned:
    kind: str  # succeed, transient, permanent, hang, slow, crash
    options: dict[str, Any]
    max_attempts: int = 5


def plan(n: int, rng: random.Random) -> list[Planned]:
    """20% fail transiently once or twice, 5% fail permanently, 5% hang past their lease, 5%
    run for seconds (so a kill -9 finds work in flight), 2% finish their first attempt and then
    kill their own instance before the result is written."""
    kinds = (["transient"] * 20 + ["permanent"] * 5 + ["hang"] * 5 + ["slow"] * 5
             + ["crash"] * 2 + ["succeed"] * 63)
    jobs = []
    for i in range(n):
        kind = kinds[i % 100]
        if kind == "transient":
            jobs.append(Planned(kind, {"fail_times": rng.choice([1, 2]),
                                       "sleep_s": rng.uniform(0, 0.05)}))
        elif kind == "permanent":
            jobs.append(Planned(kind, {"fail_permanently": True}))
        elif kind == "hang":  # past the lease and the time limit, twice: then it is FAILED
            jobs.append(Planned(kind, {"hang_s": 4.0}, max_attempts=2))
        elif kind == "slow":  # within the 3 s time limit, the lease kept by heartbeats
            jobs.append(Planned(kind, {"sleep_s": rng.uniform(1.5, 2.5)}))
        elif kind == "crash":
            jobs.append(Planned(kind, {"kill_after_finish_times": 1,
                                       "sleep_s": rng.uniform(0, 0.1)}))
        else:
            jobs.append(Planned(kind, {"sleep_s": rng.uniform(0, 0.1)}))
    rng.shuffle(jobs)
    return jobs


@dataclass
class ChaosResult:
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _post(url: str, token: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def run(
    database_url: str, emulator: PubSubEmulator, n: int, seed: int = 7, quiesce_s: float = 240
) -> ChaosResult:
    """`quiesce_s`: how long the sweep may take to bring every job to rest. The emulator pushes
    about two messages at a time, so each hanging attempt holds up the queue for its time limit."""
    rng = random.Random(seed)
    tag = f"chaos{seed}{n}"
    topology = Topology(project=emulator.project, jobs_topic=f"{tag}-jobs",
                        push_subscription=f"{tag}-process", dead_letter_topic=f"{tag}-dead",
                        dead_letter_subscription=f"{tag}-dead-letters",
                        results_topic=f"{tag}-results", ack_deadline_s=10,
                        min_backoff_s=0.5, max_backoff_s=2.0)
    env = {
        **emulator.env(), **topology.env(),
        "DATABASE_URL": database_url,
        "AUTH_HS256_SECRET": SECRET,
        "ENABLE_CHAOS_PRESET": "true",
        "LEASE_SECONDS": "3",
        "HEARTBEAT_S": "0.5",
        "ACK_MARGIN_S": "7",          # handlers get 10 - 7 = 3 s: the 4 s hang times out
        "RETRY_BASE_S": "0.2",
        "RETRY_CAP_S": "1",
        "REDISPATCH_AFTER_S": "60",
        "PUBLISH_TIMEOUT_S": "5",
        "SWEEP_ALLOW_DEV_TOKENS": "true",
        "SWEEP_ALLOWED_INVOKERS": json.dumps([SCHEDULER]),
        # Long jobs (issue 29) run as child processes of process, through its kill too.
        "LONG_JOB_EXECUTOR": "local",
    }
    servers: list[FunctionServer] = []
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    result = ChaosResult()
    try:
        process = FunctionServer("process", ROOT / "main.py", env)
        servers.append(process)
        submit = FunctionServer("submit", ROOT / "main.py",
                                {**env, "PUBLISH_FAULT_RATE": "0.05"}, probe="/healthz")
        sweep = FunctionServer("sweep", ROOT / "main.py", env)
        servers += [submit, sweep]
        topology.create(process.url + "/")
        token = issue_dev_token(SECRET, "chaos-owner", ttl_s=3600)
        # First, while nothing else runs (so no other fault kills the instance meanwhile):
        # instances killed with a half-formed batch of exits, then of claims, in flight. Their
        # lost attempts wait for the sweep, which rescues them once the jobs below flow.
        batch_roles = chaos_batch.run_batch_kills(
            database_url, process.url, groups=max(3, n // 70), claim_groups=max(2, n // 200))
        _set_flow_limits(engine)
        # Workflows beside the jobs, through the same faults.
        flows = _start_workflows(database_url, topology.path("topics", topology.jobs_topic))
        long_jobs = _submit_long_jobs(submit.url, tag, result)
        planned = plan(n, rng)
        ids: dict[str, Planned] = {}
        lock = threading.Lock()

        def submit_some(chunk: list[tuple[int, Planned]]) -> None:
            for number, p in chunk:
                body = {"preset": "chaos", "content": "c", "metadata": {"options": p.options},
                        "max_attempts": p.max_attempts, "idempotency_key": f"{tag}-{number}",
                        "priority": number % 10}
                if FLOW_KEYS[number % 3] is not None:  # a third under each key limit
                    body["limit_key"] = FLOW_KEYS[number % 3]
                for _ in range(50):  # as a client should: retry a 503, same idempotency key
                    status, job = _post(submit.url + "/jobs", token, body)
                    if status != 503:
                        break
                    time.sleep(0.2)
                with lock:
                    if status in (200, 202):
                        ids[job["id"]] = p
                    else:
                        result.problems.append(f"submit answered {status}: {job}")

        numbered = list(enumerate(planned))
        chunks = [numbered[i::4] for i in range(4)]
        threads = [threading.Thread(target=submit_some, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        # Faults while the jobs flow.
        time.sleep(0.5)
        _terminate_connections(engine)
        result.counts["connections_terminated"] = True
        # kill -9 once the database shows jobs running under this server's live leases.
        caught = _running(engine, wait_s=30)
        process.kill()
        time.sleep(0.5)
        process.start()  # same port: the push endpoint is unchanged
        result.counts["process_killed_and_restarted"] = True
        result.counts["running_jobs_caught_by_kill"] = len(caught)
        for t in threads:
            t.join()
        duplicates = rng.sample(sorted(ids), k=n // 5)
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        topic = topology.path("topics", topology.jobs_topic)
        for job_id in duplicates:
            data, attrs = encode_message(DispatchItem(id=job_id, attempts=0))
            publisher.publish(topic, data, **attrs).result(timeout=30)
        result.counts["duplicates_published"] = len(duplicates)

        # The scheduler: sweep until every job is terminal and a few passes change nothing.
        sweep_token = issue_dev_token(SECRET, SCHEDULER, ttl_s=3600)
        quiet, passes, last = 0, 0, None
        deadline = time.monotonic() + quiesce_s
        while quiet < 3:
            if time.monotonic() > deadline:
                result.problems.append(f"no quiescence in {quiesce_s:g} s: {last}")
                break
            time.sleep(1.0)
            status, _ = _post(sweep.url + "/", sweep_token, {})
            if status != 200:  # e.g. 503 right after its connections were terminated
                result.counts["sweep_failed_passes"] = result.counts.get("sweep_failed_passes",
                                                                         0) + 1
            passes += 1
            states = _states(engine)
            done = (sum(states.get(s, 0) for s in TERMINAL) == len(ids)
                    and _workflows_ended(engine) and _long_jobs_ended(engine)
                    and chaos_batch.batch_jobs_ended(engine))
            snapshot = (states, _event_count(engine))
            quiet = quiet + 1 if done and snapshot == last else 0
            last = snapshot
        result.counts["sweep_passes"] = passes
        result.counts["publishes_dropped_at_submit"] = submit.log_text().count(
            "publish dropped by fault injection")
        with engine.connect() as conn:
            result.counts["attempts_rescued_after_lost_lease"] = int(conn.execute(text(
                "SELECT count(*) FROM job_trail WHERE reason = 'lease-expired-retry'"
            )).scalar_one())
            result.counts["caught_jobs_rescued"] = int(conn.execute(text(
                "SELECT count(*) FROM job_trail e JOIN unnest(CAST(:ids AS uuid[]), "
                "CAST(:attempts AS int[])) AS c(id, attempt) ON (e.job_id, e.attempt) = "
                "(c.id, c.attempt) WHERE e.reason IN ('lease-expired-retry', 'lease-expired')"
            ), {"ids": [str(i) for i, _ in caught], "attempts": [a for _, a in caught]}
            ).scalar_one())
        # gunicorn's master outlives its worker's SIGKILL and starts a new one.
        result.counts["instances_killed_by_their_handler"] = process.log_text().count(
            "was sent SIGKILL")
        _check(engine, ids, result)
        _check_flow(engine, result)
        _check_workflows(engine, flows, result)
        _check_long_jobs(engine, long_jobs, result)
        result.counts["batch_kills"], problems = chaos_batch.check_batch_kills(engine,
                                                                              batch_roles)
        result.problems += problems
    finally:
        for server in servers:
            server.close()
        engine.dispose()
    return result


# Flow limits (issue 27) over two thirds of the jobs: at most 2 running under `gpu`, and
# starts under `api` at least 0.1 s apart; the rest under none. The run checks both from the
# trail, through the kills, the dropped publishes, the duplicates and the terminated sessions.
FLOW_KEYS = ("gpu", "api", None)
GPU_MAX_RUNNING, API_GAP_S = 2, 0.1


def _set_flow_limits(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text(
            "INSERT INTO flow_limits (owner_id, name, max_running, max_starts, interval_s) "
            "VALUES ('hs256:chaos-owner', 'gpu', :gpu, NULL, NULL), "
            "('hs256:chaos-owner', 'api', NULL, 10, 1.0)"), {"gpu": GPU_MAX_RUNNING})


def _check_flow(engine: Engine, result: ChaosResult) -> None:
    """Under `gpu`, never more than its limit PROCESSING at once (each run from its claim to
    the event that ends its attempt: an exit, or the rescue of a lost lease, which is when the
    slot comes back; since migration 0023 that event carries the claim, and job_trail's
    'claimed' event shares its id, so "the next event by id" would skip it); under `api`, no
    two starts nearer than the gap."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT j.limit_key, e.at AS start, (
                SELECT min(n.at) FROM job_events n WHERE n.job_id = e.job_id
                  AND n.attempt = e.attempt AND n.claimed_at IS NOT NULL
            ) AS stop
            FROM job_trail e JOIN jobs j ON j.id = e.job_id
            WHERE j.owner_id = 'hs256:chaos-owner' AND e.reason = 'claimed'
              AND j.limit_key IS NOT NULL ORDER BY e.at""")).all()
    edges = sorted([(r.start, 1) for r in rows if r.limit_key == "gpu"]
                   + [(r.stop, -1) for r in rows if r.limit_key == "gpu" and r.stop])
    running = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    starts = [r.start for r in rows if r.limit_key == "api"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    result.counts["gpu_runs"], result.counts["gpu_peak_running"] = (
        sum(1 for r in rows if r.limit_key == "gpu"), peak)
    result.counts["api_starts"] = len(starts)
    result.counts["api_min_gap_ms"] = round(min(gaps) * 1000, 1) if gaps else None
    if peak > GPU_MAX_RUNNING:
        result.problems.append(f"{peak} ran at once under gpu (limit {GPU_MAX_RUNNING})")
    if gaps and min(gaps) < API_GAP_S - 1e-6:
        result.problems.append(f"two starts under api {min(gaps):.3f} s apart")


# Workflows (issue 28), under an owner of their own: diamonds whose steps fail transiently or
# lose their instance after finishing; fan-outs of 50 spawned children (some killing their
# instance after finishing) and a continuation that counts them; chains whose first step
# fails for good, cancelling what follows, with a report that runs anyway.
FLOWS_OWNER = "hs256:chaos-flows"
FAN_OUT = 50


def _chaos_step(name: str, *after: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "preset": "chaos", "content": name, "after": list(after),
            "metadata": {"options": options}, "max_attempts": 5}


def _start_workflows(database_url: str, topic: str) -> dict[str, list[str]]:
    """Create the workflows in the store (as POST /workflows does) and publish their first
    steps; returns the workflow ids by kind."""
    from google.cloud import pubsub_v1

    from common.settings import load_settings
    from common.store.engine import create_engine_from_settings
    from common.store.job_store import JobStore
    from common.store.workflow_models import parse_new_workflow

    settings = load_settings(database_url=database_url)
    store_engine = create_engine_from_settings(settings)
    store = JobStore(store_engine, settings)
    graphs = {
        "diamond": [_chaos_step("a", fail_times=1), _chaos_step("b", "a", sleep_s=0.2),
                    _chaos_step("c", "a", kill_after_finish_times=1),
                    _chaos_step("d", "b", "c", sum_parents=True)],
        "fan-out": [_chaos_step("split", spawn=FAN_OUT,
                                spawn_options={"kill_after_finish_times": 0}),
                    _chaos_step("stitch", "split", sum_parents=True)],
        "failing": [_chaos_step("a", fail_permanently=True), _chaos_step("b", "a"),
                    _chaos_step("c", "b"),
                    {**_chaos_step("report", "a", sum_parents=True),
                     "on_upstream_failure": "run"}],
    }
    flows: dict[str, list[str]] = {}
    publisher = pubsub_v1.PublisherClient()
    try:
        for kind, steps in graphs.items():
            for copy in range(2):
                if kind == "fan-out" and copy == 1:  # one of them loses instances mid-run
                    steps = [{**steps[0], "metadata": {"options": {
                        "spawn": FAN_OUT, "spawn_options": {"kill_after_finish_times": 1}}}},
                        steps[1]]
                wf, _, roots = store.create_workflow(FLOWS_OWNER, parse_new_workflow(
                    {"steps": steps}))
                flows.setdefault(kind, []).append(str(wf.id))
                for item in roots:
                    data, attrs = encode_message(item)
                    publisher.publish(topic, data, **attrs).result(timeout=30)
    finally:
        store_engine.dispose()
    return flows


def _workflows_ended(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(text(
            "SELECT count(*) FROM workflows WHERE owner_id = :o AND state = 'RUNNING'"),
            {"o": FLOWS_OWNER}).scalar_one()


def _check_workflows(engine: Engine, flows: dict[str, list[str]], result: ChaosResult) -> None:
    """Each workflow ended as its graph says; no step started before its parents ended, or
    ran to success twice; the fan-outs made exactly FAN_OUT children each."""
    with engine.connect() as conn:
        for kind, ids in flows.items():
            for wf_id in ids:
                state, total = conn.execute(text(
                    "SELECT state, steps_total FROM workflows WHERE id = :id"),
                    {"id": wf_id}).one()
                steps = {r.step: r for r in conn.execute(text(
                    "SELECT step, state, result_output FROM jobs WHERE workflow_id = :id"),
                    {"id": wf_id})}
                want = "FAILED" if kind == "failing" else "COMPLETED"
                if state != want:
                    result.problems.append(f"workflow {kind} {wf_id} ended {state}")
                if kind == "fan-out":
                    counted = (steps["stitch"].result_output or {}).get("parents_completed")
                    if total != FAN_OUT + 2 or counted != FAN_OUT + 1:
                        result.problems.append(f"fan-out {wf_id}: {total} steps, stitch "
                                               f"counted {counted} parents")
                if kind == "diamond" and (steps["d"].result_output or {}).get(
                        "parents_completed") != 2:
                    result.problems.append(f"diamond {wf_id}: d saw {steps['d'].result_output}")
                if kind == "failing":
                    got = {name: steps[name].state for name in ("a", "b", "c", "report")}
                    if got != {"a": "FAILED", "b": "CANCELLED", "c": "CANCELLED",
                               "report": "COMPLETED"}:
                        result.problems.append(f"failing {wf_id}: {got}")
        early = conn.execute(text("""
            SELECT c.step FROM job_deps d JOIN jobs c ON c.id = d.child_id
            JOIN jobs p ON p.id = d.parent_id
            JOIN job_trail e ON e.job_id = c.id AND e.reason = 'claimed'
            WHERE c.owner_id = :o AND (p.finished_at IS NULL OR e.at < p.finished_at)
              AND NOT (c.on_upstream_failure = 'run' AND p.state = 'FAILED')""" ),
            {"o": FLOWS_OWNER}).all()
        twice = conn.execute(text("""
            SELECT r.job_id FROM chaos_runs r JOIN jobs j ON j.id = r.job_id
            WHERE j.owner_id = :o AND r.outcome = 'succeeded' AND j.state = 'COMPLETED'
              AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.id
                              AND e.reason = 'lease-expired-retry' AND e.attempt = r.attempt)
            GROUP BY r.job_id HAVING count(*) > 1"""), {"o": FLOWS_OWNER}).all()
        result.counts["workflow_steps"] = conn.execute(text(
            "SELECT count(*) FROM jobs WHERE owner_id = :o"), {"o": FLOWS_OWNER}).scalar_one()
        result.counts["workflow_instances_lost"] = conn.execute(text(
            "SELECT count(*) FROM chaos_runs r JOIN jobs j ON j.id = r.job_id "
            "WHERE j.owner_id = :o AND r.outcome = 'finished-then-killed'"),
            {"o": FLOWS_OWNER}).scalar_one()
    if early:
        result.problems.append(f"steps started before their parents ended: {early[:5]}")
    if twice:
        result.problems.append(f"workflow steps succeeded twice: {twice[:5]}")


# Long jobs (issue 29), under an owner of their own: each attempt runs in an execution (a child
# process of `process`, which outlives the kill of process). Half finish their work and then
# SIGKILL their own execution on attempt 1, before the write: the lease lapses, the sweep
# rescues, and a new execution completes them.
LONG_OWNER = "chaos-long-owner"
LONG_JOBS = {"long-plain": 3, "long-killed": 3}


def _submit_long_jobs(submit_url: str, tag: str, result: ChaosResult) -> dict[str, str]:
    token = issue_dev_token(SECRET, LONG_OWNER, ttl_s=3600)
    jobs: dict[str, str] = {}
    for kind, count in LONG_JOBS.items():
        options: dict[str, Any] = {"sleep_s": 1.0}
        if kind == "long-killed":
            options["kill_after_finish_times"] = 1
        for number in range(count):
            body = {"preset": "chaos-long", "content": "c", "metadata": {"options": options},
                    "idempotency_key": f"{tag}-{kind}-{number}"}
            for _ in range(50):
                status, job = _post(submit_url + "/jobs", token, body)
                if status != 503:
                    break
                time.sleep(0.2)
            if status in (200, 202):
                jobs[job["id"]] = kind
            else:
                result.problems.append(f"submit answered {status} to a long job: {job}")
    return jobs


def _long_jobs_ended(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(text(
            "SELECT 1 FROM jobs WHERE owner_id = :owner AND state NOT IN "
            "('COMPLETED', 'FAILED', 'CANCELLED') LIMIT 1"), {"owner": f"hs256:{LONG_OWNER}"}
        ).first()


def _check_long_jobs(engine: Engine, jobs: dict[str, str], result: ChaosResult) -> None:
    """Each long job COMPLETED once, by one successful run at the attempt that completed it;
    no attempt ran its handler twice; a killed execution's attempt was rescued, never written."""
    with engine.connect() as conn:
        rows = {str(r.id): r for r in conn.execute(text(
            "SELECT id, state, attempts, execution FROM jobs WHERE owner_id = :owner"),
            {"owner": f"hs256:{LONG_OWNER}"})}
        events: dict[str, list[tuple[str, int]]] = {}
        for r in conn.execute(text(
                "SELECT job_id, reason, attempt FROM job_trail WHERE job_id = ANY(CAST(:ids AS "
                "uuid[])) ORDER BY id"), {"ids": list(jobs)}):
            events.setdefault(str(r.job_id), []).append((r.reason, r.attempt))
        runs: dict[str, list[tuple[int, str]]] = {}
        for r in conn.execute(text(
                "SELECT job_id, attempt, outcome FROM chaos_runs WHERE job_id = ANY(CAST(:ids AS "
                "uuid[])) ORDER BY id"), {"ids": list(jobs)}):
            runs.setdefault(str(r.job_id), []).append((r.attempt, r.outcome))
    counts: Counter[str] = Counter()
    for job_id, kind in jobs.items():
        job, reasons, job_runs = rows[job_id], events.get(job_id, []), runs.get(job_id, [])
        counts[f"{kind}:{job.state}"] += 1
        completed = [a for r, a in reasons if r == "completed"]
        attempts_run = [a for a, _ in job_runs]
        if job.state != "COMPLETED" or len(completed) != 1:
            result.problems.append(f"long job {job_id} ({kind}) ended {job.state}: {reasons}")
            continue
        if len(set(attempts_run)) != len(attempts_run):
            result.problems.append(f"long job {job_id}: an attempt ran twice: {job_runs}")
        if [a for a, o in job_runs if o == "succeeded"] != completed:
            result.problems.append(f"long job {job_id}: runs {job_runs}, events {reasons}")
        if not (job.execution or "").startswith("local-"):
            result.problems.append(f"long job {job_id}: no execution named ({job.execution})")
        for attempt in [a for a, o in job_runs if o == LOST_WITH_INSTANCE]:
            counts["long_executions_killed"] += 1
            if ("lease-expired-retry", attempt) in reasons:
                counts["long_executions_killed_and_rescued"] += 1
            else:
                result.problems.append(f"long job {job_id}: killed attempt {attempt} left "
                                       f"events {reasons}")
    result.counts["long_jobs"] = dict(sorted(counts.items()))


def _terminate_connections(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'jobs-pipeline' AND pid <> pg_backend_pid()"
        )).scalar_one())


def _running(engine: Engine, wait_s: float) -> list[tuple[str, int]]:
    """Poll until at least two jobs run under a live lease that their worker took or renewed
    within the last second (not one orphaned by a dead instance), one of them a long handler
    (slow or hanging) that started within the last half second, so a kill now catches it
    mid-run. Returns them as (id, attempt); after `wait_s`, whatever runs at all."""
    deadline = time.monotonic() + wait_s
    while True:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT id, attempts, started_at > now() - interval '0.5 seconds' AND ("
                "  COALESCE((metadata->'options'->>'sleep_s')::float, 0) >= 1"
                "  OR COALESCE((metadata->'options'->>'hang_s')::float, 0) > 0) AS long_fresh "
                "FROM jobs WHERE owner_id = 'hs256:chaos-owner' AND state = 'PROCESSING' "
                "AND lease_expires_at > now() AND updated_at > now() - interval '1 second'"
            )).all()
        late = time.monotonic() > deadline
        if (len(rows) >= 2 and any(r.long_fresh for r in rows)) or (late and rows):
            return [(str(r.id), int(r.attempts)) for r in rows]
        if late and time.monotonic() > deadline + wait_s:
            return []
        time.sleep(0.02)


def _states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {s: int(c) for s, c in conn.execute(
            text("SELECT state, count(*) FROM jobs WHERE owner_id = 'hs256:chaos-owner' "
                 "GROUP BY state"))}


def _event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM job_trail")).scalar_one())


def _check(engine: Engine, ids: dict[str, Planned], result: ChaosResult) -> None:
    with engine.connect() as conn:
        jobs = {str(r.id): r for r in conn.execute(text(
            "SELECT id, state, attempts, (SELECT count(*) FROM job_results r WHERE r.job_id = j.id)"
            " AS results, (SELECT error_type FROM job_results r WHERE r.job_id = j.id) AS error"
            " FROM jobs j WHERE owner_id = 'hs256:chaos-owner'"))}
        events: dict[str, list[tuple[str, int]]] = {}
        for r in conn.execute(text(
                "SELECT job_id, reason, attempt FROM job_trail e JOIN jobs j ON j.id = e.job_id "
                "WHERE j.owner_id = 'hs256:chaos-owner' ORDER BY e.id")):
            events.setdefault(str(r.job_id), []).append((r.reason, r.attempt))
        runs: dict[str, list[tuple[int, str]]] = {}
        for r in conn.execute(text("SELECT job_id, attempt, outcome FROM chaos_runs ORDER BY id")):
            runs.setdefault(str(r.job_id), []).append((r.attempt, r.outcome))
    counts: Counter[str] = Counter()
    for job_id, planned in ids.items():
        job = jobs[job_id]
        counts[f"{planned.kind}:{job.state}"] += 1
        reasons = events.get(job_id, [])
        if job.state not in TERMINAL:
            result.problems.append(f"{job_id} ({planned.kind}) left {job.state}")
            continue
        if [r for r, _ in reasons].count("completed") > 1:
            result.problems.append(f"{job_id} has two COMPLETED events")
        if job.results != (1 if job.state != "CANCELLED" else 0):
            result.problems.append(f"{job_id} has {job.results} result rows")
        job_runs = runs.get(job_id, [])
        succeeded = [a for a, o in job_runs if o == "succeeded"]
        # Exactly one successful run is the one whose result was written; any other belongs to
        # an attempt that never wrote one (its instance was killed, its lease rescued).
        completed_attempts = [a for r, a in reasons if r == "completed"]
        for attempt in succeeded:
            rescued = ("lease-expired-retry", attempt) in reasons
            if attempt not in completed_attempts and not rescued:
                result.problems.append(f"{job_id}: a successful run at attempt {attempt} "
                                       "neither completed nor was rescued")
        # The instance died after the handler finished: nothing may have been written for that
        # attempt, and the lease must have brought the job back for another.
        for attempt in [a for a, o in job_runs if o == LOST_WITH_INSTANCE]:
            counts["handler_finished_then_instance_died"] += 1
            if attempt in completed_attempts or ("lease-expired-retry", attempt) not in reasons:
                result.problems.append(f"{job_id}: the attempt {attempt} that died after "
                                       f"finishing left events {reasons}")
        if planned.kind in MUST_COMPLETE:
            if job.state != "COMPLETED":
                result.problems.append(f"{job_id} ({planned.kind}) ended {job.state}")
            elif len([a for a in succeeded if a in completed_attempts]) != 1:
                result.problems.append(f"{job_id}: {len(succeeded)} successful runs")
        if planned.kind == "permanent":
            failed_attempts = [a for r, a in reasons if r == "failed"]
            permanent = [a for a, o in job_runs if o == "permanent"]
            written = [a for a in permanent if a in failed_attempts]
            lost = [a for a in permanent if ("lease-expired-retry", a) in reasons]
            if (job.state, job.error, len(written)) != ("FAILED", "PermanentError", 1) or len(
                written
            ) + len(lost) != len(permanent):
                result.problems.append(
                    f"{job_id} (permanent) ended {job.state}/{job.error} after runs {permanent}")
        if planned.kind == "hang" and job.state != "FAILED":
            result.problems.append(f"{job_id} (hang) ended {job.state}")
        counts["extra_successful_runs"] += max(len(succeeded) - 1, 0)
    result.counts["handler_finished_then_instance_died"] = counts.pop(
        "handler_finished_then_instance_died", 0)
    result.counts["outcomes"] = dict(sorted(counts.items()))
