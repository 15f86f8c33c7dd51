"""Part 3 of bench/flow_control.py: what flow control adds to a claim (issue 27's "a claim with
all three kinds of limits on costs at most 1.15 of one with none").

The claim runs through the store in this process, one at a time on one pooled connection, as a
`process` instance runs it. Two kinds of job, taken in alternating blocks (on, off, then off, on
in the next round), so the machine's drift and the table's growth fall on both alike:

- **off**: an owner with no limit (OWNER_MAX_RUNNING 0), a preset with no `flow_limits` row, no
  key. The `flow_limits` table is not empty (the on-jobs' rows are there), so the claim's look
  for a governing row is paid, as it is in a deployment that uses flow control anywhere.
- **on**: an owner with a running limit (owner_limits), a preset with a running limit
  (`flow_limits`, as PRESET_LIMITS writes it), and a key with a rate limit (the owner's
  `flow_limits` row): none ever binds (limits of 100,000 running; 1,000,000 starts a second,
  a spacing of 1 µs, while one key's claims are ~50 claims apart). Each claim then locks the
  job row, the two flow rows and the owner's slot row, and writes all three counters.

Per claim: CPU of this thread (the client: SQLAlchemy's pool, pg8000, the store; from
CLOCK_THREAD_CPUTIME_ID) and of every PostgreSQL process (the postmaster and its children, from
/proc/PID/stat in 10 ms ticks: the blocks are long enough for that), WAL bytes (the insert
position's move over the block) and the store's statements (counted by the store itself). As
information, the same for the worker's whole database path of a job (the claim, the release a
start under a rate runs, the completion, and the releases an exit from a held slot runs), since
flow control also adds statements outside the claim; a third kind, the on-jobs' claim and
completion without the releases, splits what the limits add to those two statements from what
the releases cost.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from common.settings import PresetLimit, Settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore

OWNERS = 50  # each kind's jobs spread over 50 owners (and 50 keys), as schedules' bench does
LIMIT = 100_000
_TICK = os.sysconf("SC_CLK_TCK")


class CountingStore(JobStore):
    """The job store, counting the statements it sends."""

    statements = 0

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        self.statements += 1
        return super()._rows(sql, **params)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds (user + system, with reaped children) of the postmaster and each live child."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and (int(entry.name) == postmaster or int(fields[1]) == postmaster):
            total += sum(int(f) for f in fields[11:15])
    return total / _TICK


# Each kind of job: its owners' prefix (on-* owners have the limits), preset, and key.
KINDS = {"on": ("on", "checksum", "'key-' || mod(g, :owners)"),
         "off": ("off", "echo", "NULL"),
         "on_no_release": ("on", "checksum", "'key-' || mod(g, :owners)")}


def prepare(admin: Engine, store: JobStore, per_kind: int,
            kinds: tuple[str, ...] = ("on", "off")) -> dict[str, list[Any]]:
    """The limits, and `per_kind` PENDING jobs of each kind (inserted directly: their cost is
    not measured), returned in claim order: owners in turn, so one key's claims are far apart."""
    with admin.connect() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, flow_limits, owner_limits, owner_running, "
                          "webhook_deliveries"))
    store.sync_preset_limits({"checksum": PresetLimit(max_running=LIMIT)})
    for i in range(OWNERS):
        store.set_owner_limit(f"on-{i}", LIMIT)
        store.set_key_limit(f"on-{i}", f"key-{i}", max_starts=1_000_000, interval_s=1.0)
    jobs: dict[str, list[Any]] = {}
    with admin.connect() as conn:
        for kind in kinds:
            owners, preset, key = KINDS[kind]
            jobs[kind] = list(conn.execute(text(f"""
                INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit,
                                  limit_key)
                SELECT '{owners}-' || mod(g, :owners), '{preset}', 'c', 5, 5, {key}
                FROM generate_series(0, :n - 1) g ORDER BY g RETURNING id"""),
                {"n": per_kind, "owners": OWNERS}).scalars())
        conn.execute(text("VACUUM ANALYZE jobs"))
    return jobs


class Meter:
    """Client CPU, PostgreSQL CPU, WAL and statements over one block."""

    def __init__(self, admin: Engine, store: CountingStore, postmaster: int) -> None:
        self.admin, self.store, self.postmaster = admin, store, postmaster

    def _lsn(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar_one())

    def measure(self, block: Callable[[], int]) -> dict[str, float]:
        lsn, statements = self._lsn(), self.store.statements
        pg, client, wall = postgres_cpu(self.postmaster), time.thread_time(), time.perf_counter()
        n = block()
        wall, client = time.perf_counter() - wall, time.thread_time() - client
        pg = postgres_cpu(self.postmaster) - pg
        with self.admin.connect() as conn:
            wal = int(conn.execute(text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :s)"),
                                   {"s": lsn}).scalar_one())
        return {"n": n, "client_s": client, "postgres_s": pg, "wall_s": wall, "wal_bytes": wal,
                "statements": self.store.statements - statements}


def _claims(store: JobStore, ids: list[Any]) -> int:
    for job_id in ids:
        claim = store.claim(job_id, expected_attempts=0)
        if claim.reason != "claimed":
            raise RuntimeError(f"claim {job_id}: {claim.reason}")
    return len(ids)


def _worker_paths(store: JobStore, ids: list[Any], *, releases: bool = True) -> int:
    """What Worker.handle and _finish send for a job, around the handler: the claim; after a
    start under a rate, the release of the limits' parked jobs (FlowGate.release); the
    completion; after an exit that held an owner slot or a flow slot, their releases (nothing
    is parked here, so each release publishes nothing). Without `releases`, the claim and the
    completion only: what the limits cost those two statements."""
    for job_id in ids:
        claim = store.claim(job_id, expected_attempts=0)
        job = claim.job
        if job is None:
            raise RuntimeError(f"claim {job_id}: {claim.reason}")
        if claim.rated and releases:
            store.take_flow_parked(job.owner_id, job.preset, job.limit_key)
        store.complete(job.id, job.attempts, {"ok": True})
        if claim.holds_slot and releases:
            store.take_parked(job.owner_id)
        if claim.flow_held and releases:
            store.take_flow_parked(job.owner_id, job.preset, job.limit_key)
    return len(ids)


def _per_item(blocks: list[dict[str, float]]) -> dict[str, float]:
    n = sum(b["n"] for b in blocks)
    client = sum(b["client_s"] for b in blocks) * 1e6 / n
    pg = sum(b["postgres_s"] for b in blocks) * 1e6 / n
    return {"n": n, "client_cpu_us": client, "postgres_cpu_us": pg, "cpu_us": client + pg,
            "wall_us": sum(b["wall_s"] for b in blocks) * 1e6 / n,
            "wall_us_median_block": statistics.median(b["wall_s"] * 1e6 / b["n"]
                                                      for b in blocks),
            "wal_bytes": sum(b["wal_bytes"] for b in blocks) / n,
            "statements": sum(b["statements"] for b in blocks) / n}


Work = Callable[[JobStore, list[Any]], int]


def alternate(meter: Meter, jobs: dict[str, list[Any]], block: int,
              work: dict[str, Work]) -> dict[str, dict[str, float]]:
    """Blocks of `block` jobs of each kind in turn, the order reversed every other round."""
    kinds = list(work)
    blocks: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    rounds = min(len(jobs[kind]) for kind in kinds) // block
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            ids = jobs[kind][r * block:(r + 1) * block]
            blocks[kind].append(meter.measure(functools.partial(work[kind], meter.store, ids)))
    return {kind: _per_item(b) for kind, b in blocks.items()}


def claim_cost(url: str, settings: Settings, *, claims: int, block: int,
               paths: int) -> dict[str, Any]:
    """`claims` claims of each kind (plus a warm-up), then `paths` worker paths of each kind."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    engine = create_engine_from_settings(settings, pool_size=1, max_overflow=0)
    store = CountingStore(engine, settings)
    try:
        with admin.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        fields = _stat_fields(backend)
        if fields is None:
            raise RuntimeError("cannot read PostgreSQL's processes from /proc")
        meter = Meter(admin, store, int(fields[1]))
        warm = min(block, claims)
        jobs = prepare(admin, store, warm + claims)
        for kind in ("on", "off"):  # the pool's connection, its prepared statements, caches
            _claims(store, jobs[kind][:warm])
            jobs[kind] = jobs[kind][warm:]
        claim = alternate(meter, jobs, block, {"on": _claims, "off": _claims})
        jobs = prepare(admin, store, paths, tuple(KINDS))
        path = alternate(meter, jobs, min(block, paths), {
            "on": _worker_paths, "off": _worker_paths,
            "on_no_release": functools.partial(_worker_paths, releases=False)})
        with admin.connect() as conn:
            held = conn.execute(text("SELECT count(*) FROM jobs WHERE state <> 'COMPLETED'"))
            left = int(held.scalar_one())
            running = conn.execute(text(
                "SELECT COALESCE(sum(running), 0) FROM flow_limits")).scalar_one()
        if left or running:
            raise RuntimeError(f"worker paths: {left} jobs not completed, {running} still held")
    finally:
        engine.dispose()
        admin.dispose()
    return {"claim": claim, "worker_path": path, "block": block,
            "ratio": claim["on"]["cpu_us"] / claim["off"]["cpu_us"],
            "path_ratio": path["on"]["cpu_us"] / path["off"]["cpu_us"],
            "path_no_release_ratio": path["on_no_release"]["cpu_us"] / path["off"]["cpu_us"]}
