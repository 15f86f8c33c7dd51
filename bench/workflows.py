"""Workflows (issue 28's numbers): a chain against single jobs, and a fan-out of 1,000 children.

    .venv/bin/python -m bench.workflows   # WF_REPS (5), WF_FANOUT (1000), WF_FANOUT_RUNS (3)

Everything real: a durable throwaway PostgreSQL with pg_stat_statements preloaded, the Pub/Sub
emulator delivering to a real functions-framework `process` server (its presets from
bench/workflow_presets.py through PRESET_MODULES), and a real `submit` server. Both parts run
twice, once for each way messages reach `process` (DELIVERIES): the emulator's push
subscription, and make dev's relay (localstack/push_relay.py: a streaming pull, pushed on from 8
threads). The emulator's push waits the longer for a new message the longer it has been idle
(measured: about 25 ms after 20 ms idle, 65 ms after 130 ms, 95 ms after 300 ms), so a client
that waits for each job before it submits the next always finds it idle, while a chain, whose
worker publishes the next step before it answers the push, never does; the relay shows no such
dependence. Workflows are
created through the store and their first steps published, as POST /workflows will do
(`store.create_workflow`, then `Dispatcher.publish_taken`); from then on only the worker moves
them: each step's end makes the next PENDING in the statement that ends it (migration 0021),
and the worker that ended it publishes it.

1. **Chain against singles**, alternating which goes first, WF_REPS times after a warm-up:
   - a chain of 10 `echo` steps (a -> b -> ... -> j), timed from before its creation until the
     bench sees j COMPLETED;
   - 10 single `echo` jobs, one after another, by a client that waits for each to end before
     it submits the next: each submitted through `JobService.submit` (what POST /jobs does
     after auth and validation: the store's INSERT stamped dispatched, then the publish), its
     end seen by the same poll (the job's state every 5 ms, a tighter loop than `?wait=`'s
     backoff, so the singles are not slowed by their client).
   Both also from the database's clocks (the last finished_at less the first created_at), with
   the hop between consecutive jobs (the next one's started_at less this one's finished_at).
   Target, for each delivery: the chain's median <= 1.2 x the singles' median. As information,
   the same singles through a real `submit` server (POST /jobs over HTTP, with a token).
2. **Fan-out and fan-in**: a workflow `split` -> `gather`, where `split` spawns WF_FANOUT `echo`
   children (ctx.spawn) and `gather` waits for it and all its children. From the database's
   clocks: the gather's started_at less the last child's finished_at (target <= 1 s), and less
   the last parent's (the children or split itself, whichever ended last). Statements: every
   statement the servers' role sent during the run, counted by pg_stat_statements
   (track = all, so those the trigger runs inside a step's end are counted too, as nested),
   divided by the children; with the statements by kind, the WAL per child
   (pg_current_wal_insert_lsn) and the process server's CPU per child (/proc). The bench's own
   polls run as another role and are left out.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Engine, create_engine, make_url, text

from bench.end_to_end import SECRET
from bench.proc_stats import cpu_seconds
from bench.results import record
from bench.services import services
from common.api.auth import issue_dev_token
from common.messaging.dispatch import Dispatcher
from common.service import JobService
from common.settings import load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from common.store.models import NewJob
from common.store.workflow_models import parse_new_workflow
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.push_relay import PushRelay
from localstack.topology import Topology
from tests.support.paths import ROOT

CHAIN = 10
OWNER = "bench-workflows"
OBSERVER = "bench_observer"
TARGETS = {"chain_vs_singles": 1.2, "fan_in_gap_s": 1.0}
POLL_S = 0.005
RELAY_CONCURRENCY = 8  # as make dev's relay: the process server's threads
# How messages reach `process`: the emulator's push subscription, and make dev's relay (a
# streaming pull pushed on by 8 threads). The emulator's push waits longer for a message the
# longer it was idle (up to about 100 ms), which a chain never lets it be; the relay does not.
DELIVERIES = ("push", "relay")
# pg_stat_statements in the throwaway server: every statement, nested ones (a trigger's) too.
STATS_CONF = {"shared_preload_libraries": "'pg_stat_statements'",
              "pg_stat_statements.track": "all", "pg_stat_statements.max": "5000"}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Stack:
    engine: Engine  # the servers' role: setup only
    observer: Engine  # another role: the bench's polls, kept out of the statement counts
    store: JobStore
    service: JobService
    dispatcher: Dispatcher
    process: FunctionServer
    submit: FunctionServer
    token: str
    counting: bool  # pg_stat_statements is loaded


def _prepare(engine: Engine, url: str) -> tuple[str, bool]:
    """The observer role (reads everything, and may reset the statistics), and the
    extension if the server preloads it; returns (the observer's URL, counting)."""
    with engine.connect() as conn:
        preloaded = "pg_stat_statements" in conn.execute(
            text("SELECT current_setting('shared_preload_libraries')")).scalar_one()
        if preloaded:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                              {"r": OBSERVER}).first()
        if not exists:
            conn.execute(text(f"CREATE ROLE {OBSERVER} LOGIN"))
        conn.execute(text(f"GRANT pg_read_all_data, pg_read_all_stats TO {OBSERVER}"))
        if preloaded:
            conn.execute(text("GRANT EXECUTE ON FUNCTION pg_stat_statements_reset(oid, oid, "
                              f"bigint) TO {OBSERVER}"))
    return make_url(url).set(username=OBSERVER).render_as_string(hide_password=False), preloaded


@contextmanager
def stack(url: str, emulator: PubSubEmulator, tag: str = "wf",
          relay: bool = False) -> Iterator[Stack]:
    """A process server (with the bench's presets) pushed to by the emulator (with `relay`:
    by a streaming-pull relay as in make dev, localstack/push_relay.py), a submit server, and
    the bench's own store and dispatcher on the same topic; all closed after."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    observer_url, counting = _prepare(engine, url)
    tag = f"{tag}-{uuid4().hex[:8]}"  # its own topics, on an emulator that may be shared
    topology = Topology(project=emulator.project, jobs_topic=f"{tag}-jobs",
                        push_subscription=f"{tag}-process", dead_letter_topic=f"{tag}-dead",
                        dead_letter_subscription=f"{tag}-dead-letters",
                        results_topic=f"{tag}-results", ack_deadline_s=120)
    env = {**emulator.env(), **topology.env(), "DATABASE_URL": url,
           "AUTH_HS256_SECRET": SECRET,
           "PRESET_MODULES": json.dumps(["bench.workflow_presets"])}
    with ExitStack() as stack_:
        stack_.callback(engine.dispose)
        observer = create_engine(observer_url, isolation_level="AUTOCOMMIT")
        stack_.callback(observer.dispose)
        process = FunctionServer("process", ROOT / "main.py", env)
        stack_.callback(process.close)
        submit = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
        stack_.callback(submit.close)
        if relay:
            topology.create(None, pull=True)
            pusher = PushRelay(topology.path("subscriptions", topology.push_subscription),
                               process.url + "/", concurrency=RELAY_CONCURRENCY,
                               ack_deadline_s=topology.ack_deadline_s).start()
            stack_.callback(pusher.stop)
        else:
            topology.create(process.url + "/")
        settings = load_settings(database_url=url, google_cloud_project=emulator.project,
                                 jobs_topic=topology.jobs_topic,
                                 results_topic=topology.results_topic)
        store_engine = create_engine_from_settings(settings)
        stack_.callback(store_engine.dispose)
        store = JobStore(store_engine, settings)
        dispatcher = Dispatcher(settings)
        yield Stack(engine, observer, store, JobService(store, dispatcher), dispatcher, process,
                    submit, issue_dev_token(SECRET, OWNER, ttl_s=3600), counting)


def wait_ended(observer: Engine, job_id: UUID | str, poll_s: float = POLL_S,
               timeout_s: float = 600) -> str:
    """Poll the job's state until it is terminal; returns it."""
    deadline = time.monotonic() + timeout_s
    with observer.connect() as conn:
        while True:
            state = conn.execute(text("SELECT state FROM jobs WHERE id = :id"),
                                 {"id": job_id}).scalar_one_or_none()
            if state in TERMINAL:
                return str(state)
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {state} after {timeout_s:g} s")
            time.sleep(poll_s)


def _timeline(observer: Engine, ids: list[UUID]) -> dict[str, Any]:
    """From the database's clocks: first created to last finished, and each hop (the next
    job's start less this one's end), in the order given."""
    with observer.connect() as conn:
        rows = {r.id: r for r in conn.execute(text(
            "SELECT id, state, created_at, started_at, finished_at FROM jobs "
            "WHERE id = ANY(:ids)"), {"ids": ids})}
    ordered = [rows[i] for i in ids]
    bad = [r.state for r in ordered if r.state != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(ids)} jobs did not complete: {bad[:3]}")
    hops = [(b.started_at - a.finished_at).total_seconds()
            for a, b in itertools.pairwise(ordered)]
    # For singles: submit to start, mostly the push's delay (a chain's steps are all created
    # at once, so there it says nothing).
    starts = [(r.started_at - r.created_at).total_seconds() for r in ordered]
    return {"db_s": (ordered[-1].finished_at - ordered[0].created_at).total_seconds(),
            "hop_ms": statistics.median(hops) * 1000 if hops else 0.0,
            "created_to_started_ms": statistics.median(starts) * 1000}


def chain_once(st: Stack, n: int = CHAIN) -> dict[str, Any]:
    names = [f"s{i}" for i in range(n)]
    body = {"steps": [{"name": name, "preset": "echo", "content": name,
                       "after": [names[i - 1]] if i else []} for i, name in enumerate(names)]}
    started = time.perf_counter()
    workflow, _, roots = st.store.create_workflow(OWNER, parse_new_workflow(body))
    st.dispatcher.publish_taken(roots, st.store.release_dispatch)
    by_name = {s.name: s.job_id for s in workflow.steps}
    wait_ended(st.observer, by_name[names[-1]])
    wall = time.perf_counter() - started
    return {"wall_s": wall, **_timeline(st.observer, [by_name[name] for name in names])}


def singles_once(st: Stack, n: int = CHAIN) -> dict[str, Any]:
    """n jobs, each submitted once the previous one has ended (JobService.submit: the store's
    INSERT, then the publish, as POST /jobs does)."""
    ids: list[UUID] = []
    started = time.perf_counter()
    for i in range(n):
        job, _ = st.service.submit(OWNER, NewJob(preset="echo", content=f"s{i}"))
        wait_ended(st.observer, job.id)
        ids.append(job.id)
    wall = time.perf_counter() - started
    return {"wall_s": wall, **_timeline(st.observer, ids)}


def http_singles_once(st: Stack, n: int = CHAIN) -> dict[str, Any]:
    """The same, each job POSTed to the real `submit` server (one keep-alive connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", st.submit.port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {st.token}"}
    ids: list[UUID] = []
    try:
        started = time.perf_counter()
        for i in range(n):
            conn.request("POST", "/jobs", body=json.dumps(
                {"preset": "echo", "content": f"h{i}"}).encode(), headers=headers)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            if resp.status != 202:
                raise RuntimeError(f"POST /jobs answered {resp.status}: {answer}")
            wait_ended(st.observer, answer["id"])
            ids.append(UUID(answer["id"]))
        wall = time.perf_counter() - started
    finally:
        conn.close()
    return {"wall_s": wall, **_timeline(st.observer, ids)}


KINDS = {"chain": chain_once, "singles": singles_once, "http_singles": http_singles_once}


def chain_vs_singles(st: Stack, reps: int, n: int = CHAIN,
                     say: Any = print) -> dict[str, Any]:
    """A warm-up of each, then `reps` rounds, in order in odd rounds and reversed in even ones;
    medians of each figure."""
    for run in KINDS.values():
        run(st, n)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    order = list(KINDS)
    for r in range(reps):
        for kind in order if r % 2 == 0 else order[::-1]:
            fig = KINDS[kind](st, n)
            runs[kind].append(fig)
            start = ("" if kind == "chain" else
                     f", submit to start {fig['created_to_started_ms']:5.1f} ms")
            say(f"round {r + 1} {kind:>12}: {fig['wall_s'] * 1000:7.1f} ms (database "
                f"{fig['db_s'] * 1000:7.1f} ms, hop {fig['hop_ms']:5.1f} ms{start})")
    median = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in runs.items()}
    return {"steps": n, "reps": reps, "runs": runs, "median": median,
            "ratio": median["chain"]["wall_s"] / median["singles"]["wall_s"],
            "db_ratio": median["chain"]["db_s"] / median["singles"]["db_s"]}


# -- fan-out -------------------------------------------------------------------------------------


# What each statement is, from the start of its text (pg_stat_statements' normalized text);
# anything else is shown by its first words.
STATEMENT_KINDS = (
    ("WITH wf AS ( INSERT INTO workflows", "create the workflow (the bench)"),
    ("WITH parent AS (", "spawn a child (split's handler)"),
    ("WITH cand AS (", "claim"),
    ("WITH req AS ( SELECT * FROM unnest(CAST($1 AS uuid[]), CAST($2 AS integer[]))",
     "claim, batched"),
    ("WITH moved AS ( UPDATE jobs SET state = CASE WHEN cancel_requested", "complete"),
    ("WITH req AS (SELECT * FROM unnest(", "complete, batched"),
    ("WITH picked AS ( SELECT c.id FROM job_deps", "take the steps this end made due"),
    ("WITH due AS (", "webhook deliveries due for this job (after its end)"),
    ("SELECT p.step, p.id AS job_id", "read the parents (gather's handler)"),
    ("WITH freed AS (", "trigger: the waiting steps, one parent fewer"),
    ("UPDATE workflows w SET steps_done", "trigger: the workflow's count"),
    ("INSERT INTO webhook_deliveries", "trigger: the workflow's webhook, if it ended"),
)


def _label(query: str) -> str:
    flat = re.sub(r"\s+", " ", query).strip()
    return next((name for start, name in STATEMENT_KINDS if flat.startswith(start)), flat[:80])


def _statements(st: Stack) -> list[dict[str, Any]]:
    """The servers' role's statements in this database since the last reset."""
    with st.observer.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.toplevel, s.query, s.calls FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid "
            "WHERE d.datname = current_database() AND r.rolname <> :observer"),
            {"observer": OBSERVER}).all()
    calls: dict[tuple[bool, str], int] = {}
    for r in rows:  # one kind may show as several entries (e.g. prepared on each connection)
        key = (bool(r.toplevel), _label(r.query))
        calls[key] = calls.get(key, 0) + int(r.calls)
    return [{"toplevel": top, "label": label, "calls": n}
            for (top, label), n in sorted(calls.items(), key=lambda kv: -kv[1])]


def fan_out_once(st: Stack, n: int) -> dict[str, Any]:
    with st.observer.connect() as conn:
        if st.counting:
            conn.execute(text("SELECT pg_stat_statements_reset()"))
        lsn = str(conn.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar_one())
    cpu = cpu_seconds(st.process.pid)
    started = time.perf_counter()
    workflow, _, roots = st.store.create_workflow(OWNER, parse_new_workflow({"steps": [
        {"name": "split", "preset": "fan", "content": str(n)},
        {"name": "gather", "preset": "gather", "content": "", "after": ["split"]}]}))
    st.dispatcher.publish_taken(roots, st.store.release_dispatch)
    by_name = {s.name: s.job_id for s in workflow.steps}
    try:
        state = wait_ended(st.observer, by_name["gather"], poll_s=0.05, timeout_s=300)
    except RuntimeError:
        with st.observer.connect() as conn:
            states: dict[str, int] = dict(conn.execute(text(
                "SELECT state, count(*) FROM jobs WHERE workflow_id = :id GROUP BY state"),
                {"id": workflow.id}).all())
        raise RuntimeError(f"fan-out of {n}: the gather never ended; steps by state {states}"
                           " (a step retried later waits for the sweep, which is not run here)"
                           ) from None
    wall = time.perf_counter() - started
    process_cpu = cpu_seconds(st.process.pid) - cpu
    statements = _statements(st) if st.counting else []
    with st.observer.connect() as conn:
        wal = int(conn.execute(text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :s)"),
                               {"s": lsn}).scalar_one())
        kids = conn.execute(text(
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'COMPLETED') AS ok, "
            "max(finished_at) AS last_end, min(started_at) AS first_start "
            "FROM jobs WHERE spawned_by = :split"), {"split": by_name["split"]}).one()
        parents_end = conn.execute(text(
            "SELECT max(p.finished_at) FROM job_deps d JOIN jobs p ON p.id = d.parent_id "
            "WHERE d.child_id = :gather"), {"gather": by_name["gather"]}).scalar_one()
        split = conn.execute(text("SELECT started_at, finished_at FROM jobs WHERE id = :id"),
                             {"id": by_name["split"]}).one()
        gather = conn.execute(text(
            "SELECT started_at, finished_at, result_output FROM jobs WHERE id = :id"),
            {"id": by_name["gather"]}).one()
        flow = conn.execute(text(
            "SELECT state, steps_total, steps_done FROM workflows WHERE id = :id"),
            {"id": workflow.id}).one()
    top = sum(s["calls"] for s in statements if s["toplevel"])
    nested = sum(s["calls"] for s in statements if not s["toplevel"])
    return {
        "children": n, "spawned": kids.n, "children_completed": kids.ok, "gather_state": state,
        "gather_output": gather.result_output, "workflow": dict(flow._mapping),
        "wall_s": wall,
        "split_s": (split.finished_at - split.started_at).total_seconds(),
        "children_span_s": (kids.last_end - kids.first_start).total_seconds(),
        "last_child_end_before_split_end": kids.last_end < split.finished_at,
        "gap_from_last_child_s": (gather.started_at - kids.last_end).total_seconds(),
        "gap_from_last_parent_s": (gather.started_at - parents_end).total_seconds(),
        "wal_bytes_per_child": wal / n,
        "process_cpu_ms_per_child": process_cpu * 1000 / n,
        "counted": st.counting,
        "statements_per_child": top / n if st.counting else None,
        "nested_statements_per_child": nested / n if st.counting else None,
        "statements": statements,
    }


def by_kind(run: dict[str, Any], limit: int = 14) -> list[str]:
    n = run["children"]
    return [f"  {s['calls'] / n:6.3f} per child ({s['calls']:5d}) "
            f"{'top' if s['toplevel'] else 'nested'}  {s['label']}"
            for s in run["statements"][:limit]]


def fan_out(st: Stack, n: int, runs: int, say: Any = print) -> dict[str, Any]:
    """`runs` fan-outs of n; each run's figures and the median (and worst gap) over them."""
    fans = []
    for i in range(runs):
        run = fan_out_once(st, n)
        fans.append(run)
        say(f"fan-out {i + 1}: {run['spawned']} children, gather {run['gather_state']} "
            f"{run['gather_output']}; gap from the last child "
            f"{run['gap_from_last_child_s'] * 1000:.0f} ms, from the last parent "
            f"{run['gap_from_last_parent_s'] * 1000:.0f} ms; split ran {run['split_s']:.1f} s, "
            f"whole {run['wall_s']:.1f} s; {run['statements_per_child']} statements per child "
            f"(+{run['nested_statements_per_child']} nested), "
            f"{run['wal_bytes_per_child']:.0f} B WAL, "
            f"{run['process_cpu_ms_per_child']:.2f} ms process CPU per child")

    def median(key: str) -> Any:
        values = [r[key] for r in fans]
        return None if None in values else statistics.median(values)

    return {"runs": fans, "children": n,
            **{key: {"median": median(key), "max": max(r[key] for r in fans)}
               for key in ("gap_from_last_child_s", "gap_from_last_parent_s")},
            **{key: median(key) for key in (
                "statements_per_child", "nested_statements_per_child", "wal_bytes_per_child",
                "process_cpu_ms_per_child", "split_s", "wall_s")}}


def summary(delivery: str, chain: dict[str, Any], fan: dict[str, Any]) -> list[str]:
    m, n = chain["median"], fan["children"]
    lines = [
        f"[{delivery}] chain of {chain['steps']} echo steps, median of {chain['reps']}: "
        f"{m['chain']['wall_s'] * 1000:.0f} ms (database {m['chain']['db_s'] * 1000:.0f} ms, "
        f"hop {m['chain']['hop_ms']:.1f} ms)",
        f"[{delivery}] {chain['steps']} singles, each after the last ended (JobService.submit): "
        f"{m['singles']['wall_s'] * 1000:.0f} ms (database {m['singles']['db_s'] * 1000:.0f} "
        f"ms, hop {m['singles']['hop_ms']:.1f} ms, of which submit to start "
        f"{m['singles']['created_to_started_ms']:.1f} ms); chain / singles "
        f"{chain['ratio']:.2f} (database {chain['db_ratio']:.2f}; target <= "
        f"{TARGETS['chain_vs_singles']})",
        f"[{delivery}] information: singles over HTTP (POST /jobs): "
        f"{m['http_singles']['wall_s'] * 1000:.0f} ms, hop {m['http_singles']['hop_ms']:.1f} ms",
        f"[{delivery}] fan-out of {n}: the gather started "
        f"{fan['gap_from_last_child_s']['median'] * 1000:.0f} ms (median; worst "
        f"{fan['gap_from_last_child_s']['max'] * 1000:.0f} ms) after the last child's end "
        f"(target <= 1 s); split spawned for {fan['split_s']:.1f} s, the whole took "
        f"{fan['wall_s']:.1f} s",
    ]
    if fan["statements_per_child"] is not None:
        lines.append(
            f"[{delivery}] statements per child (pg_stat_statements, all the servers' role "
            f"sent in the run / children): {fan['statements_per_child']:.3f}, and "
            f"{fan['nested_statements_per_child']:.3f} more run by the trigger inside them; "
            f"{fan['wal_bytes_per_child']:.0f} B WAL per child; by kind (last run):")
        lines += by_kind(fan["runs"][-1])
    return lines


def main() -> int:
    reps = int(os.environ.get("WF_REPS", "5"))
    n = int(os.environ.get("WF_FANOUT", "1000"))
    fan_runs = int(os.environ.get("WF_FANOUT_RUNS", "3"))
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    with services("jobs_workflows", STATS_CONF) as (url, emulator):
        for delivery in DELIVERIES:
            print(f"-- delivery: {delivery}")
            with stack(url, emulator, relay=delivery == "relay") as st:
                results[delivery] = {"chain": chain_vs_singles(st, reps),
                                     "fan_out": fan_out(st, n, fan_runs)}
    load_after = os.getloadavg()
    for delivery, res in results.items():
        print("\n".join(summary(delivery, res["chain"], res["fan_out"])))
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    ok = {f"{d}_{k}": v for d, res in results.items() for k, v in {
        "chain_vs_singles": res["chain"]["ratio"] <= TARGETS["chain_vs_singles"],
        "fan_in_gap_s": res["fan_out"]["gap_from_last_child_s"]["max"]
        <= TARGETS["fan_in_gap_s"]}.items()}
    record("workflows", deliveries=results, targets=TARGETS, ok=ok,
           load_average={"before": load_before, "after": load_after})
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
