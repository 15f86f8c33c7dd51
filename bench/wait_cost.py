"""Benchmark: what `GET /jobs/{id}?wait=N` costs an instance, polling against LISTEN/NOTIFY.

    .venv/bin/python -m bench.wait_cost      # WAITERS (default 8, submit's concurrency)

Both mechanisms wait for the same jobs on the same server in the same run: WAITERS requests,
each waiting for its own job, which ends after END_AFTER_S (and, in a second round, never:
every request runs its whole WAIT_S). Counted, not guessed: statements sent per waiting request
(each one a round trip), threads alive while they wait, connections held (pool and others),
and what a job's end statement costs with a NOTIFY in it.

- polling: the API's own `common.api.waiting.wait_for_end` over the real store.
- LISTEN/NOTIFY: a prototype as it would have to be built on pg8000: a trigger that NOTIFYs on a
  terminal move, one listening connection per instance outside the pool, one thread blocked in
  select() on its socket, which on wake-up sends an empty query to drain the notifications
  (pg8000 reads them only while it runs a statement) and wakes the matching waiters.
"""

from __future__ import annotations

import os
import select
import statistics
import threading
import time
from typing import Any

from sqlalchemy import text

from bench.results import record
from common.api.waiting import wait_for_end
from common.settings import load_settings
from common.store.engine import create_engine_from_settings
from common.store.job_store import JobStore
from common.store.models import NewJob
from localstack.postgres import migrate, provide_server

WAITERS = int(os.environ.get("WAITERS", "8"))
END_AFTER_S = 2.0
WAIT_S = 10.0
NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_notify_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('job_end', NEW.id::text); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS bench_notify_end ON jobs;
CREATE TRIGGER bench_notify_end AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN (NEW.state IN ('COMPLETED','FAILED','CANCELLED') AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION bench_notify_end();
"""


class CountingStore(JobStore):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.count = 0
        self._lock = threading.Lock()

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self._lock:
            self.count += 1
        return super()._rows(sql, **params)


class Listener:
    """The LISTEN side: one dedicated connection and one thread per instance."""

    def __init__(self, url: str) -> None:
        import pg8000.native
        from sqlalchemy.engine import make_url

        u = make_url(url)
        self.con = pg8000.native.Connection(u.username or "postgres", host=u.host or "",
                                            port=u.port or 5432, database=u.database)
        self.con.run("LISTEN job_end")
        self.round_trips = 1
        self.waiters: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="listener")
        self.thread.start()

    def _loop(self) -> None:
        sock = self.con._usock
        while not self.stop:
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            self.con.run("")  # a round trip, so pg8000 reads what arrived
            self.round_trips += 1
            while self.con.notifications:
                _, _, payload = self.con.notifications.popleft()
                with self.lock:
                    event = self.waiters.get(payload)
                if event is not None:
                    event.set()

    def wait(self, store: JobStore, owner: str, job_id: str, wait_s: float) -> Any:
        event = threading.Event()
        with self.lock:
            self.waiters[job_id] = event
        try:
            job = store.get(owner, job_id)  # read after registering: no end slips between
            if job.state.terminal:
                return job
            event.wait(wait_s)
            return store.get(owner, job_id)
        finally:
            with self.lock:
                self.waiters.pop(job_id, None)

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.con.close()


def _round(store: CountingStore, engine: Any, waiter: Any, end: bool) -> dict[str, Any]:
    """WAITERS requests at once, each on its own thread (as gunicorn gives each request one)."""
    jobs = [store.create("bench", NewJob(preset="echo", content="x"))[0] for _ in range(WAITERS)]
    before_threads = threading.active_count()
    peak = {"threads": 0, "pool_out": 0}
    store.count = 0
    results: list[Any] = []

    def one(job_id: str) -> None:
        results.append(waiter(store, "bench", job_id, WAIT_S))

    threads = [threading.Thread(target=one, args=(str(j.id),)) for j in jobs]
    for t in threads:
        t.start()
    started = time.monotonic()
    ended = False
    while any(t.is_alive() for t in threads):
        peak["threads"] = max(peak["threads"], threading.active_count() - before_threads)
        peak["pool_out"] = max(peak["pool_out"], engine.pool.checkedout())
        if end and not ended and time.monotonic() - started >= END_AFTER_S:
            for job in jobs:
                claimed = store.claim(job.id).job
                assert claimed is not None
                store.complete(job.id, claimed.attempts, {"ok": True})
            ended = True
        time.sleep(0.005)
    ends = 2 * WAITERS if end else 0
    assert all(r.state.terminal == end for r in results)
    return {"statements_per_wait": (store.count - ends) / WAITERS,
            "extra_threads": peak["threads"] - WAITERS,
            "peak_pool_connections": peak["pool_out"]}


def _end_statement_ms(store: JobStore, n: int = 300) -> float:
    took = []
    for _ in range(n):
        job, _ = store.create("bench", NewJob(preset="echo", content="x"))
        claimed = store.claim(job.id).job
        assert claimed is not None
        t0 = time.perf_counter()
        store.complete(job.id, claimed.attempts, {"ok": True})
        took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took)


def main() -> int:
    server = provide_server(durable=True)
    try:
        name = server.create_database("jobs_bench_wait")
        url = server.url(name)
        migrate(url)
        settings = load_settings(database_url=url)
        engine = create_engine_from_settings(settings)  # the instance's pool: 2 + 1
        store = CountingStore(engine, settings)
        poll_s = settings.wait_poll_max_s

        def polling(s: JobStore, owner: str, job_id: str, wait_s: float) -> Any:
            return wait_for_end(s, owner, job_id, wait_s, max_poll_s=poll_s)

        figures: dict[str, Any] = {"waiters": WAITERS, "end_after_s": END_AFTER_S,
                                   "wait_s": WAIT_S, "poll_cap_s": poll_s}
        figures["end_ms_without_notify"] = _end_statement_ms(store)
        figures["polling"] = {"ends": _round(store, engine, polling, True),
                              "times_out": _round(store, engine, polling, False),
                              "dedicated_connections": 0}
        with engine.connect() as conn:
            conn.execute(text(NOTIFY_TRIGGER))
        listener = Listener(url)
        try:
            figures["end_ms_with_notify"] = _end_statement_ms(store)
            rt_before = listener.round_trips
            ends = _round(store, engine, listener.wait, True)
            ends["listener_round_trips"] = listener.round_trips - rt_before
            times_out = _round(store, engine, listener.wait, False)
            # the listener's own thread exists before and after: count it here
            figures["listen_notify"] = {"ends": ends, "times_out": times_out,
                                        "dedicated_connections": 1, "listener_threads": 1}
        finally:
            listener.close()
        engine.dispose()
        record("wait_cost", **figures)
        p, n = figures["polling"], figures["listen_notify"]
        print(f"wait cost, {WAITERS} waiters, job ends after {END_AFTER_S:g} s / never "
              f"(wait {WAIT_S:g} s):")
        print(f"  polling        statements/wait {p['ends']['statements_per_wait']:.1f} / "
              f"{p['times_out']['statements_per_wait']:.1f}; extra threads "
              f"{p['ends']['extra_threads']}; peak pool connections "
              f"{max(p['ends']['peak_pool_connections'], p['times_out']['peak_pool_connections'])}"
              f"; dedicated connections 0")
        print(f"  LISTEN/NOTIFY  statements/wait {n['ends']['statements_per_wait']:.1f} / "
              f"{n['times_out']['statements_per_wait']:.1f}; +listener round trips "
              f"{n['ends']['listener_round_trips']}; extra threads 1 (listener); "
              f"dedicated connections 1 per instance")
        print(f"  a job's end statement: {figures['end_ms_without_notify']:.2f} ms, "
              f"{figures['end_ms_with_notify']:.2f} ms with NOTIFY (median, one client)")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
