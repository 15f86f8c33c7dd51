"""What the database spends on a run: PostgreSQL's own CPU, the statements the servers sent, and
the WAL they wrote, read before and after it (issue 30: at scale the database is the shared
resource, so cost per job is counted there too, not only in the function servers).

- **CPU**: user + system time of the postmaster and every live child of it (backends,
  checkpointer, WAL writer, autovacuum), read from /proc/<pid>/stat, plus the postmaster's
  cutime/cstime, where the CPU of every backend it has reaped goes: a backend that exits
  between two samples is still counted. The observer's own backend (the bench's polls and these
  samples) is taken out, so a bench that polls more does not look dearer.
- **Statements**: `pg_stat_statements` (when the server preloads it, `STATS_CONF`): calls in
  this database by every role but the observer's, top-level (what the clients sent) and nested
  (a trigger's), counted as they finish. Without it (a server started without `STATS_CONF`),
  only the database's committed and rolled-back transactions from `pg_stat_database`, less the
  observer's, as information: in autocommit one per statement, but PostgreSQL 15 reports a
  backend's counts up to 10 s after it goes idle, so a short run's figure is not exact.
- **WAL**: the `pg_current_wal_insert_lsn()` difference.

The emulator's CPU (a JVM) is no part of it: production publishes to Google's service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from bench.proc_stats import stat_fields

# The throwaway server's settings for counting statements: every statement, nested ones too.
STATS_CONF = {"shared_preload_libraries": "'pg_stat_statements'",
              "pg_stat_statements.track": "all", "pg_stat_statements.max": "5000"}
OBSERVER = "bench_observer"
_TICK = os.sysconf("SC_CLK_TCK")


def _own_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime, stime


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the postmaster (with the children it reaped) and of each live child."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = stat_fields(pid)
        if fields is None:
            continue
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:  # field 4: ppid
            total += _own_ticks(fields)
    return total / _TICK


@dataclass(frozen=True)
class DbSample:
    cpu_s: float  # PostgreSQL's processes, less the observer's backend
    toplevel: int | None  # statements by the servers' roles (None: no pg_stat_statements)
    nested: int | None
    xacts: int  # the database's transactions, less the observer's (pg_stat_database)
    lsn: str


class DbMeter:
    """Samples a database's cost; `delta(before, after, n)` gives it per job. Its `observer`
    engine (one connection, its own role with read access to everything) is for the bench's
    polls during a measured run, so they count neither as statements nor as CPU."""

    def __init__(self, url: str) -> None:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                self.counting = "pg_stat_statements" in conn.execute(
                    text("SELECT current_setting('shared_preload_libraries')")).scalar_one()
                if self.counting:
                    conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
                if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                    {"r": OBSERVER}).first():
                    conn.execute(text(f"CREATE ROLE {OBSERVER} LOGIN"))
                conn.execute(text(f"GRANT pg_read_all_data, pg_read_all_stats TO {OBSERVER}"))
                backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                # Read while the connection is open: once it closes, its backend exits.
                fields = stat_fields(backend)
        finally:
            admin.dispose()
        if fields is None:
            raise RuntimeError("cannot read PostgreSQL's processes from /proc (another host?)")
        self.postmaster = int(fields[1])
        observer_url = make_url(url).set(username=OBSERVER)
        self.observer = create_engine(observer_url, isolation_level="AUTOCOMMIT",
                                      pool_size=1, max_overflow=0)
        self._own_xacts = 0
        event.listen(self.observer, "before_cursor_execute", self._count_own)

    def _count_own(self, *_: Any) -> None:
        self._own_xacts += 1  # autocommit: each statement of the observer is a transaction

    def sample(self) -> DbSample:
        with self.observer.connect() as conn:
            row = conn.execute(text(
                "SELECT pg_backend_pid() AS pid, pg_current_wal_insert_lsn()::text AS lsn, "
                "(SELECT xact_commit + xact_rollback FROM pg_stat_database "
                " WHERE datname = current_database()) AS xacts")).one()
            top = nested = None
            if self.counting:
                top, nested = conn.execute(text(
                    "SELECT coalesce(sum(s.calls) FILTER (WHERE s.toplevel), 0), "
                    "coalesce(sum(s.calls) FILTER (WHERE NOT s.toplevel), 0) "
                    "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                    "JOIN pg_roles r ON r.oid = s.userid "
                    "WHERE d.datname = current_database() AND r.rolname <> :observer"),
                    {"observer": OBSERVER}).one()
        own = stat_fields(int(row.pid))
        cpu = postgres_cpu_seconds(self.postmaster) - (_own_ticks(own) / _TICK if own else 0.0)
        return DbSample(cpu, None if top is None else int(top),
                        None if nested is None else int(nested),
                        int(row.xacts) - self._own_xacts, str(row.lsn))

    def delta(self, before: DbSample, after: DbSample, n: int) -> dict[str, float | None]:
        """Per job: PostgreSQL's CPU (ms), statements (top-level and nested; None without
        pg_stat_statements), transactions (only without it), and WAL bytes."""
        with self.observer.connect() as conn:
            wal = int(conn.execute(text("SELECT pg_wal_lsn_diff(:a, :b)"),
                                   {"a": after.lsn, "b": before.lsn}).scalar_one())
        counted = before.toplevel is not None and after.toplevel is not None
        return {
            "db_cpu_ms_per_job": (after.cpu_s - before.cpu_s) * 1000 / n,
            "statements_per_job": ((after.toplevel or 0) - (before.toplevel or 0)) / n
            if counted else None,
            "nested_statements_per_job": ((after.nested or 0) - (before.nested or 0)) / n
            if counted else None,
            # Only without pg_stat_statements: pg_stat_database's counts arrive seconds late.
            "transactions_per_job": None if counted else (after.xacts - before.xacts) / n,
            "wal_bytes_per_job": wal / n,
        }

    def close(self) -> None:
        self.observer.dispose()
