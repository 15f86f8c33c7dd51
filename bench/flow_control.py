"""Flow control's numbers (issue 27), in one run, against real servers:

1. **Rate limit accuracy.** PRESET_LIMITS gives `echo` 5 starts a second; 200 quick `echo`
   jobs are submitted at once (one `POST /jobs:batch`) and run by 2 `process` servers. From
   the database's `started_at`: the most starts in any 1 s window (half-open, [t, t + 1 s);
   target <= 5), the smallest gap between two starts (the design keeps them >= 0.2 s), and the
   run's duration (first job created -> last job finished, on the database's clock) against
   200 / 5 = 40 s (target <= 1.10x).
2. **Priority.** An owner's key limited to 2 running; 500 `demo` jobs (1 s each, priority 0)
   under it, all delivered (2 running, the rest parked); then one job of priority 9 under the
   same key: how many other jobs start after it was created and before it starts (target <= 2,
   "it starts within the next two releases"). Repeated PRIORITY_TRIALS times (10) while the
   backlog lasts, each submitted at a random point of the running jobs' 1 s cycle; the worst
   trial counts. Each trial says whether the job parked (and so was
   released by rank) or found a slot free: a freed slot stays free while the parked job it
   released is on its way through Pub/Sub (tens of ms here), and a job arriving then takes
   it; with jobs of 1 s that is rare. As information: how much
   of the time the key's 2 slots were busy while the backlog lasted, and for each parked
   trial the time from the exit before its start (the exit whose release it was, or a later
   one) to its start: the release's way through Pub/Sub.
3. **Claim cost** (bench/flow_claims.py): CPU per claim with an owner limit, a preset limit
   and a key rate limit on (none binding) against a claim with none, same run, alternating
   blocks; target <= 1.15. WAL and statements per claim, and the worker's whole database path
   per job, as information.

Deliveries go as in `make dev` (localstack/push_relay.py), not through the emulator's own push,
which keeps only about 2 requests in flight per subscription (a held delivery would block the
whole subscription): the jobs subscription is a pull subscription with production's ack
deadline, retry and dead-letter policies, and two relays pull it, each pushing production's
envelope into one `process` server, 8 at a time (THREADS=8, Cloud Run concurrency 8). Releases
of parked jobs are published by the servers to the same topic, so they come back through the
relays like any message. No sweep runs: every release is the worker's own. Durable throwaway
PostgreSQL and the emulator (bench/services.py); real functions-framework servers.

    .venv/bin/python -m bench.flow_control    # FLOW_RATE_JOBS (200), FLOW_PRIORITY_JOBS (500),
                                              # FLOW_CLAIMS (6,000 of each kind), FLOW_PATHS (2,000)
"""

from __future__ import annotations

import bisect
import functools
import http.client
import itertools
import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.flow_claims import claim_cost
from bench.results import record
from bench.services import services
from common.api.auth import HS256, issue_dev_token, owner_id
from common.settings import load_settings
from common.store.job_store import JobStore
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.push_relay import PushRelay
from localstack.topology import Topology
from tests.support.paths import ROOT

SECRET = secrets.token_urlsafe(32)
SUBJECT = "bench"
OWNER = owner_id(HS256, SUBJECT)  # the owner the token's subject is
RATE = {"max_starts": 5, "interval_s": 1.0}
RATE_TARGET = 1.10
PRIORITY_LIMIT, PRIORITY_TARGET, PRIORITY_TRIALS = 2, 2, 10
PRIORITY_JOB_S = "1"
CLAIM_TARGET = 1.15
SERVERS, PUSHES = 2, 8


class CountingRelay(PushRelay):
    """The push relay, counting each message as it starts pushing it (a push into a running job
    lasts as long as the job: counted at its end, the figure would lag)."""

    received = 0

    def _deliver(self, message: Any) -> None:
        with self._lock:
            self.received += 1
        super()._deliver(message)


@dataclass
class Stack:
    """`submit`, two `process` servers and their relays, on one database and one topic."""

    url: str
    project: str
    engine: Engine
    submit: FunctionServer
    relays: list[CountingRelay]
    token: str

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.submit.port, timeout=60)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json",
                                  "Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def deliveries(self) -> list[int]:
        return [r.received for r in self.relays]


@contextmanager
def stack(url: str, emulator: PubSubEmulator) -> Iterator[Stack]:
    topology = Topology(project=emulator.project, jobs_topic="jobs-flow",
                        push_subscription="jobs-flow-process")
    env = {**emulator.env(), **topology.env(), "DATABASE_URL": url,
           "AUTH_HS256_SECRET": SECRET, "ENABLE_DEMO_PRESET": "true",
           "PRESET_LIMITS": json.dumps({"echo": RATE})}
    with ExitStack() as cleanup:
        submit = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
        cleanup.callback(submit.close)
        servers = []
        for _ in range(SERVERS):
            servers.append(FunctionServer("process", ROOT / "main.py",
                                          {**env, "THREADS": str(PUSHES)}))
            cleanup.callback(servers[-1].close)
        topology.create(None, pull=True)
        relays = []
        for server in servers:  # stopped before the servers close (callbacks run last first)
            relay = CountingRelay(topology.path("subscriptions", topology.push_subscription),
                                  server.url + "/", concurrency=PUSHES,
                                  ack_deadline_s=topology.ack_deadline_s)
            relay.start()
            cleanup.callback(relay.stop)
            relays.append(relay)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        cleanup.callback(engine.dispose)
        yield Stack(url, emulator.project, engine, submit, relays,
                    issue_dev_token(SECRET, SUBJECT, ttl_s=3600))


def wait_for(what: str, done: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def max_in_window(starts: list[float], width: float) -> int:
    """The most starts in any half-open window [t, t + width) (one starting at a start is the
    fullest there is)."""
    return max((bisect.bisect_left(starts, s + width) - i for i, s in enumerate(starts)),
               default=0)


def rate_accuracy(st: Stack, n: int) -> dict[str, Any]:
    delivered = st.deliveries()
    status, answer = st.post("/jobs:batch", {"jobs": [
        {"preset": "echo", "content": f"rate {i}"} for i in range(n)]})
    if status != 200 or answer["created"] != n:
        raise RuntimeError(f"batch submit answered {status}: {str(answer)[:300]}")
    ideal = n * RATE["interval_s"] / RATE["max_starts"]
    wait_for(f"{n} rate-limited jobs", lambda: st.scalar(
        "SELECT count(*) FROM jobs WHERE preset = 'echo' AND state = 'COMPLETED'") >= n,
        timeout_s=3 * ideal + 120, poll_s=0.2)
    with st.engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT extract(epoch FROM created_at)::float8 AS created,
                   extract(epoch FROM started_at)::float8 AS started,
                   extract(epoch FROM finished_at)::float8 AS finished, attempts,
                   EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.id
                           AND e.reason = 'deferred') AS parked
            FROM jobs j WHERE preset = 'echo' ORDER BY started_at""")).all()
    starts = [r.started for r in rows]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    width = RATE["interval_s"]
    duration = max(r.finished for r in rows) - min(r.created for r in rows)
    return {
        "jobs": n, "limit": RATE, "ideal_s": ideal,
        "max_starts_in_1s": max_in_window(starts, width),
        "max_starts_in_1s_closed": max(bisect.bisect_right(starts, s + width) - i
                                       for i, s in enumerate(starts)),
        "min_gap_s": min(gaps), "mean_gap_s": sum(gaps) / len(gaps),
        "max_gap_s": max(gaps),
        "duration_s": duration, "duration_ratio": duration / ideal,
        "first_to_last_start_s": starts[-1] - starts[0],
        "created_to_first_start_s": starts[0] - min(r.created for r in rows),
        "parked_once_or_more": sum(r.parked for r in rows),
        "attempts_max": max(r.attempts for r in rows),
        "deliveries": sum(st.deliveries()) - sum(delivered),
        # Every job that parked started after one release; a release beyond those delivered a
        # job that did not start then (parked again, or skipped).
        "releases_not_started": (sum(st.deliveries()) - sum(delivered) - n
                                 - sum(r.parked for r in rows)),
        "deliveries_per_server": [after - before for before, after
                                  in zip(delivered, st.deliveries(), strict=True)],
    }


def priority(st: Stack, n: int, trials: int) -> dict[str, Any]:
    store = JobStore(st.engine, load_settings(database_url=st.url,
                                              google_cloud_project=st.project))
    store.set_key_limit(OWNER, "prio", max_running=PRIORITY_LIMIT)
    job = {"preset": "demo", "content": PRIORITY_JOB_S, "limit_key": "prio"}
    delivered = sum(st.deliveries())
    status, answer = st.post("/jobs:batch", {"jobs": [{**job, "priority": 0}] * n})
    if status != 200 or answer["created"] != n:
        raise RuntimeError(f"batch submit answered {status}: {str(answer)[:300]}")
    wait_for("every low-priority job delivered once", lambda: st.scalar(
        "SELECT count(*) FROM jobs WHERE preset = 'demo' "
        "AND (deferred_at IS NOT NULL OR started_at IS NOT NULL)") >= n, timeout_s=120)
    results = []
    rng = random.Random(27)
    for _ in range(trials):
        # At a random point of the running jobs' cycle: submitted just after an exit, the job
        # would find the slot its release freed while the released job is on its way.
        time.sleep(rng.uniform(0, float(PRIORITY_JOB_S)))
        parked = st.scalar("SELECT count(*) FROM jobs WHERE preset = 'demo' AND state = 'PENDING'")
        status, answer = st.post("/jobs", {**job, "priority": 9})
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {answer}")
        high = answer["id"]
        wait_for("the high-priority job to start", functools.partial(
            st.scalar, "SELECT started_at IS NOT NULL FROM jobs WHERE id = :id", id=high),
            timeout_s=60, poll_s=0.02)
        with st.engine.connect() as conn:
            row = conn.execute(text("""
                SELECT extract(epoch FROM h.started_at - h.created_at)::float8 AS wait_s,
                       (SELECT count(*) FROM jobs j WHERE j.id <> h.id AND j.preset = 'demo'
                          AND j.started_at > h.created_at AND j.started_at < h.started_at)
                       AS starts_before,
                       (SELECT count(*) FROM jobs j WHERE j.id <> h.id AND j.preset = 'demo'
                          AND j.finished_at > h.created_at AND j.finished_at <= h.started_at)
                       AS exits_before,
                       EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = h.id
                               AND e.reason = 'deferred') AS parked,
                       extract(epoch FROM h.started_at - (
                           SELECT max(j.finished_at) FROM jobs j WHERE j.preset = 'demo'
                           AND j.finished_at <= h.started_at))::float8 AS exit_to_start_s
                FROM jobs h WHERE h.id = :id"""), {"id": high}).one()
        results.append({"starts_before": row.starts_before, "exits_before": row.exits_before,
                        "wait_s": row.wait_s, "parked": row.parked, "queued_behind": parked,
                        "exit_to_start_s": row.exit_to_start_s})
    with st.engine.connect() as conn:  # how the key's slots were used while the backlog lasted
        use = conn.execute(text("""
            SELECT extract(epoch FROM sum(finished_at - started_at)
                           FILTER (WHERE state = 'COMPLETED'))::float8 AS busy_s,
                   extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span_s,
                   count(started_at) AS starts,
                   count(started_at) FILTER (WHERE NOT EXISTS (
                       SELECT 1 FROM job_events e WHERE e.job_id = j.id
                       AND e.reason = 'deferred')) AS direct
            FROM jobs j WHERE preset = 'demo'""")).one()
    # Each delivery beyond a job's first is a release; a release whose job did not start parked
    # it again (a release beyond the free slots: two releases at once each count the slots
    # free, and neither sees the other's jobs on their way, see bench/HISTORY.md).
    releases = sum(st.deliveries()) - delivered - n - trials
    status, answer = st.post("/jobs:bulk-cancel", {"preset": "demo"})  # the rest of the backlog
    if status != 200:
        raise RuntimeError(f"bulk cancel answered {status}: {answer}")
    wait_for("the key's running jobs to end", lambda: st.scalar(
        "SELECT count(*) FROM jobs WHERE state = 'PROCESSING'") == 0, timeout_s=60)
    running = st.scalar("SELECT running FROM flow_limits WHERE owner_id = :o AND name = 'prio'",
                        o=OWNER)
    return {"jobs": n, "limit": PRIORITY_LIMIT, "job_s": float(PRIORITY_JOB_S),
            "trials": results, "worst": max(t["starts_before"] for t in results),
            "slots_busy": use.busy_s / (PRIORITY_LIMIT * use.span_s) if use.span_s else 0.0,
            "starts": use.starts, "releases": releases,
            "releases_not_started": releases - (use.starts - use.direct),

            "running_left": running}


def report(rate: dict[str, Any], prio: dict[str, Any], cost: dict[str, Any]) -> dict[str, bool]:
    ok = {"rate_window": rate["max_starts_in_1s"] <= RATE["max_starts"],
          "rate_duration": rate["duration_ratio"] <= RATE_TARGET,
          "priority": prio["worst"] <= PRIORITY_TARGET,
          "claim_cost": cost["ratio"] <= CLAIM_TARGET}
    mark = {True: "OK", False: "NOT MET"}
    print(f"1. rate limit, {rate['jobs']} jobs at {RATE['max_starts']}/{RATE['interval_s']:g} s "
          f"over {SERVERS} process servers:")
    print(f"   most starts in any 1 s window {rate['max_starts_in_1s']} (target <= "
          f"{RATE['max_starts']}) {mark[ok['rate_window']]}; closed windows "
          f"{rate['max_starts_in_1s_closed']}; gaps min {rate['min_gap_s']:.3f} s, mean "
          f"{rate['mean_gap_s']:.3f} s, max {rate['max_gap_s']:.3f} s")
    print(f"   duration {rate['duration_s']:.1f} s against {rate['ideal_s']:.0f} s: "
          f"{rate['duration_ratio']:.3f}x (target <= {RATE_TARGET}) "
          f"{mark[ok['rate_duration']]}; first to last start {rate['first_to_last_start_s']:.1f} s,"
          f" first start {rate['created_to_first_start_s'] * 1000:.0f} ms after submit; "
          f"{rate['parked_once_or_more']} jobs parked at least once, {rate['deliveries']} "
          f"deliveries (per server {rate['deliveries_per_server']}; "
          f"releases that did not start their job: {rate['releases_not_started']}), attempts "
          f"at most {rate['attempts_max']}")
    trials = ", ".join(f"{t['starts_before']} ({'parked, ' if t['parked'] else ''}"
                       f"{t['wait_s']:.2f} s)" for t in prio["trials"])
    print(f"2. priority, {prio['jobs']} jobs of {prio['job_s']:g} s behind a key limit of "
          f"{prio['limit']}: starts before the high-priority job {trials}; worst "
          f"{prio['worst']} (target <= {PRIORITY_TARGET}) {mark[ok['priority']]}")
    lat = [f"{t['exit_to_start_s'] * 1000:.0f}" for t in prio["trials"]
           if t["parked"] and t["exit_to_start_s"] is not None]
    print(f"   the key's {prio['limit']} slots were busy {prio['slots_busy']:.1%} of the time "
          f"while the backlog lasted; a parked high-priority job started {', '.join(lat)} ms "
          f"after the exit before it; {prio['releases']} releases delivered for "
          f"{prio['starts']} starts, {prio['releases_not_started']} of them did not start their "
          "job")
    for what, key, ratio in (("claim", "claim", "ratio"), ("worker path", "worker_path",
                                                            "path_ratio")):
        on, off = cost[key]["on"], cost[key]["off"]
        print(f"3. {what}, {on['n']} of each kind: CPU per {what} on {on['cpu_us']:.0f} us "
              f"(client {on['client_cpu_us']:.0f}, PostgreSQL {on['postgres_cpu_us']:.0f}) "
              f"against off {off['cpu_us']:.0f} us ({off['client_cpu_us']:.0f}, "
              f"{off['postgres_cpu_us']:.0f}): {cost[ratio]:.2f}"
              + (f" (target <= {CLAIM_TARGET}) {mark[ok['claim_cost']]}" if key == "claim"
                 else " (information)"))
        print(f"   WAL {on['wal_bytes']:.0f} against {off['wal_bytes']:.0f} B, statements "
              f"{on['statements']:.2f} against {off['statements']:.2f}, wall "
              f"{on['wall_us']:.0f} against {off['wall_us']:.0f} us")
    bare = cost["worker_path"]["on_no_release"]
    print(f"   of which the releases: on without them {bare['cpu_us']:.0f} us "
          f"({cost['path_no_release_ratio']:.2f} of off), {bare['wal_bytes']:.0f} B WAL")
    return ok


def main() -> int:
    rate_jobs = int(os.environ.get("FLOW_RATE_JOBS", "200"))
    prio_jobs = int(os.environ.get("FLOW_PRIORITY_JOBS", "500"))
    claims = int(os.environ.get("FLOW_CLAIMS", "6000"))
    paths = int(os.environ.get("FLOW_PATHS", "2000"))
    load = os.getloadavg()
    with services("jobs_flow") as (url, emulator):
        with stack(url, emulator) as st:
            rate = rate_accuracy(st, rate_jobs)
            prio = priority(st, prio_jobs, PRIORITY_TRIALS)
        settings = load_settings(database_url=url, google_cloud_project=emulator.project)
        cost = claim_cost(url, settings, claims=claims, block=250, paths=paths)
    ok = report(rate, prio, cost)
    print(f"load average before the run {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    record("flow_control", rate=rate, priority=prio, claim_cost=cost, ok=ok,
           targets={"rate_window": RATE["max_starts"], "rate_duration": RATE_TARGET,
                    "priority": PRIORITY_TARGET, "claim_cost": CLAIM_TARGET},
           load_before=load[0], load_after=os.getloadavg()[0])
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
