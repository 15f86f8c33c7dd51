"""The typed client (the jobs_client package in client/) against the real `submit` server, a
functions-framework process, with a small fault-injecting HTTP proxy in front of it where a
test needs the network to misbehave. Waits are counted through the client's injectable
`sleep`, never timed."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jobs_client import (
    BadRequest,
    Conflict,
    JobsClient,
    JobState,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unreachable,
    WaitTimeout,
    parse_retry_after,
)
from sqlalchemy import Engine, text

from localstack.postgres import free_port
from tests.submit_fixtures import AUDIENCE, SubmitHarness
from tests.support.paths import ROOT

UNAVAILABLE = json.dumps({
    "type": "https://jobs-pipeline.dev/problems/unavailable", "title": "Service temporarily "
    "unavailable", "status": 503, "detail": "The job store cannot be reached; retry shortly."
}).encode()


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    authorization: str | None = field(repr=False)  # never in a failure's output
    upstream_status: int | None = None  # None: not forwarded


@dataclass
class FaultProxy:
    """Forwards to `upstream`, except that each request first takes the next action from
    `script` (then "forward" once the script is empty):
      "forward"           pass it on, answer what the server answered;
      "commit-then-503"   pass it on (the server commits), but answer the client 503;
      ("503", after)      answer 503 with Retry-After `after` (None: no header), not forwarded;
      ("302", location)   answer a redirect, not forwarded;
      "drop"              read the request, then close the connection without an answer."""

    upstream: str
    script: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, self.path, self.headers.get("Idempotency-Key"),
                            self.headers.get("Authorization"))
                proxy.seen.append(seen)
                action = proxy.script.pop(0) if proxy.script else "forward"
                if action == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(2)
                    return
                if isinstance(action, tuple):
                    status, value = action
                    headers = {"Location": value} if status == "302" else (
                        {"Retry-After": value} if value else {})
                    self._answer(int(status), UNAVAILABLE if status == "503" else b"", headers)
                    return
                status, answer, ctype = self._forward(body)
                seen.upstream_status = status
                if action == "commit-then-503":
                    self._answer(503, UNAVAILABLE, {})
                else:
                    self._answer(status, answer, {"Content-Type": ctype})

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def _forward(self, body: bytes) -> tuple[int, bytes, str]:
                host, port = proxy.upstream.removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                skip = {"host", "connection", "content-length"}
                conn.request(self.command, self.path, body=body or None,
                             headers={k: v for k, v in self.headers.items()
                                      if k.lower() not in skip})
                resp = conn.getresponse()
                out = (resp.status, resp.read(), resp.getheader("Content-Type") or "")
                conn.close()
                return out

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                if status == 503:
                    headers = {"Content-Type": "application/problem+json", **headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def server(submit_server: str) -> str:
    return submit_server


@pytest.fixture()
def proxy(server: str) -> Iterator[FaultProxy]:
    p = FaultProxy(server)
    yield p
    p.close()


class Sleeps(list[float]):
    """Records the waits the client asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _client(url: str, env: SubmitHarness, sleeps: Sleeps | None = None,
            **kwargs: Any) -> JobsClient:
    return JobsClient(url, lambda: env.token("alice"), sleep=Sleeps() if sleeps is None else sleeps,
                      **kwargs)


def _jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def test_every_operation_through_the_real_server(
    proxy: FaultProxy, submit_env: SubmitHarness
) -> None:
    api = _client(proxy.url, submit_env)
    ids = [api.submit("echo", f"job {i}").id for i in range(5)]
    job = api.get(ids[0])
    assert job.state == JobState.PENDING and job.preset == "echo" and job.attempts == 0
    listed = list(api.list(page_size=2))
    assert [j.id for j in listed] == ids[::-1]  # newest first, across pages
    assert len([s for s in proxy.seen if s.path.startswith("/jobs?")]) == 3
    assert [e.reason for e in api.events(ids[0])] == ["created"]
    assert api.cancel(ids[0]).state == JobState.CANCELLED
    assert api.stats().depth[JobState.CANCELLED] == 1

    with pytest.raises(Conflict) as conflict:
        api.retry(ids[0])
    err = conflict.value
    assert (err.status, err.title) == (409, "Not allowed in the job's state")
    assert err.type.endswith("/illegal-transition") and err.extra["state"] == "CANCELLED"
    assert err.detail == "cannot retry a job that is CANCELLED"
    with pytest.raises(NotFound, match="Job not found"):
        api.get(uuid.uuid4())
    with pytest.raises(BadRequest) as unknown:
        api.submit("no-such-preset", "x")
    assert unknown.value.status == 422 and "echo" in unknown.value.extra["known_presets"]

    before = len(proxy.seen)
    with pytest.raises(BadRequest) as local:
        api.submit("Not A Preset", "x", max_attempts=0)
    assert {p["name"] for p in local.value.invalid_params} == {"preset", "max_attempts"}
    assert len(proxy.seen) == before  # refused before sending

    secret_token = "not-a-token-" + uuid.uuid4().hex
    with pytest.raises(Unauthorized) as refused:
        JobsClient(proxy.url, lambda: secret_token).stats()
    assert refused.value.status == 401 and secret_token not in str(refused.value)


def test_wait_returns_the_ended_job_and_times_out_typed(
    server: str, submit_env: SubmitHarness
) -> None:
    """No worker runs here: a job ends only because the test cancels it while waiting."""
    api = _client(server, submit_env)
    job = api.submit("echo", "hi")
    seen: list[JobState] = []

    def cancel_on_first_sight(j: Any) -> None:
        seen.append(j.state)
        if j.state == JobState.PENDING:
            api.cancel(j.id)

    assert api.wait(job.id, 30, poll_s=0, on_change=cancel_on_first_sight).state == "CANCELLED"
    assert seen == [JobState.PENDING, JobState.CANCELLED]

    stuck = api.submit("echo", "nobody runs me")
    with pytest.raises(WaitTimeout) as timeout:
        api.wait(stuck.id, 0)
    assert timeout.value.job.id == stuck.id and timeout.value.job.state == "PENDING"


def test_a_503_after_the_commit_is_retried_without_a_duplicate(
    proxy: FaultProxy, submit_env: SubmitHarness, engine: Engine
) -> None:
    """The server commits the job, the client sees 503: the retry carries the same
    Idempotency-Key and gets that same job back, so there is one row."""
    sleeps = Sleeps()
    proxy.script = ["commit-then-503"]
    job = _client(proxy.url, submit_env, sleeps).submit("echo", "exactly once")
    posts = [s for s in proxy.seen if s.method == "POST"]
    assert [s.upstream_status for s in posts] == [202, 200]  # created, then replayed
    assert posts[0].idempotency_key and posts[0].idempotency_key == posts[1].idempotency_key
    assert len(sleeps) == 1 and _jobs(engine) == 1
    assert [m["data"]["job_id"] for m in submit_env.pull()] == [str(job.id)]

    _client(proxy.url, submit_env).submit("echo", "exactly once")  # a new call: a new key
    assert _jobs(engine) == 2


def test_retry_after_is_honoured_and_capped(proxy: FaultProxy, submit_env: SubmitHarness) -> None:
    sleeps = Sleeps()
    proxy.script = [("503", "3"), ("503", "1"), ("503", "120")]
    api = _client(proxy.url, submit_env, sleeps, max_retry_after_s=7)
    assert sum(api.stats().depth.values()) == 0
    assert sleeps == [3.0, 1.0, 7.0]
    assert len(proxy.seen) == 4


def test_it_gives_up_with_the_problem_after_backing_off(
    proxy: FaultProxy, submit_env: SubmitHarness
) -> None:
    sleeps = Sleeps()
    proxy.script = [("503", None)] * 10
    api = _client(proxy.url, submit_env, sleeps, retries=3, backoff_s=0.5, max_backoff_s=1.5)
    with pytest.raises(Unavailable) as gave_up:
        api.get(uuid.uuid4())
    err = gave_up.value
    assert (err.status, err.type) == (503, "https://jobs-pipeline.dev/problems/unavailable")
    assert err.detail == "The job store cannot be reached; retry shortly."
    assert len(proxy.seen) == 4 and len(sleeps) == 3
    assert all(0 <= s <= cap for s, cap in zip(sleeps, (0.5, 1.0, 1.5), strict=True))


def test_connection_failures_are_retried_only_where_safe(
    proxy: FaultProxy, submit_env: SubmitHarness
) -> None:
    sleeps = Sleeps()
    api = _client(proxy.url, submit_env, sleeps)
    proxy.script = ["drop"]
    job = api.submit("echo", "after a reset")  # a submit is safe: it has its key
    assert len(proxy.seen) == 2 and len(sleeps) == 1
    proxy.script = ["drop"]
    with pytest.raises(Unreachable, match="cannot reach"):
        api.cancel(job.id)  # may have been done: not repeated
    assert len(proxy.seen) == 3

    nobody = JobsClient(f"http://127.0.0.1:{free_port()}", None, retries=2, sleep=sleeps)
    with pytest.raises(Unreachable):
        nobody.cancel(job.id)  # refused: it never left, so even a cancel is retried
    assert len(sleeps) == 1 + 2


def test_redirects_are_not_followed(proxy: FaultProxy, submit_env: SubmitHarness) -> None:
    """The bearer token must not travel to a host the caller did not name."""
    elsewhere = FaultProxy(proxy.upstream)
    try:
        proxy.script = [("302", elsewhere.url + "/stats")]
        with pytest.raises(Exception) as err:
            _client(proxy.url, submit_env).stats()
        assert getattr(err.value, "status", None) == 302
        assert elsewhere.seen == []
    finally:
        elsewhere.close()


def test_the_token_is_asked_for_on_every_attempt(
    proxy: FaultProxy, submit_env: SubmitHarness
) -> None:
    """So a callable that refreshes a Google ID token is used as it should be."""
    minted: list[str] = []

    def fresh_google_token() -> str:
        minted.append(submit_env.google.token(sub="svc-1", aud=AUDIENCE, jti=uuid.uuid4().hex))
        return minted[-1]

    proxy.script = [("503", "0")]
    api = JobsClient(proxy.url, fresh_google_token, sleep=Sleeps())
    job = api.submit("echo", "from another service")
    assert api.get(job.id).id == job.id
    assert len(minted) == 3 == len(proxy.seen)
    assert [s.authorization for s in proxy.seen] == [f"Bearer {t}" for t in minted]


def test_retry_after_accepts_seconds_and_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


def test_the_client_installs_on_its_own_and_stays_light(tmp_path: Path) -> None:
    """`pip install ./client` into a fresh virtualenv, offline (nothing is downloaded), then,
    in that venv: the package is the installed copy with its py.typed, its one declared
    dependency is pydantic, and importing it loads none of the server's database or web
    stacks. The build backend (flit_core) and pydantic are lent from this environment by a .pth
    file that comes after the fresh venv's own site-packages."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    lent = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() not in
            (ROOT.resolve(), (ROOT / "client").resolve())]
    (Path(own) / "zz_lent.pth").write_text("\n".join(lent) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", "--disable-pip-version-check", str(ROOT / "client")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    probe = (
        "import importlib.metadata as m, json, pathlib, sys, jobs_client\n"
        "here = pathlib.Path(jobs_client.__file__).parent\n"
        "heavy = [n for n in ('sqlalchemy', 'pg8000', 'werkzeug', 'flask', 'jwt', "
        "'google.auth', 'google.cloud.pubsub', 'common') if n in sys.modules]\n"
        "print(json.dumps({'where': str(here), 'typed': (here / 'py.typed').exists(), "
        "'requires': m.requires('jobs-client'), 'heavy': heavy}))\n"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["where"].startswith(own), found  # the installed copy, not the checkout's
    assert found["typed"] and found["heavy"] == []
    assert [r.split("<")[0].split(">")[0] for r in found["requires"]] == ["pydantic"]


def test_the_client_models_say_what_the_openapi_document_says(server: str) -> None:
    """The client's own copy of the answers' shapes (jobs_client.models) names every field the
    API's document names for them, and requires the same ones: a field added to the API
    without the client fails here."""
    import urllib.request

    import jobs_client.models as cm

    with urllib.request.urlopen(server + "/openapi.json", timeout=30) as resp:
        doc = json.load(resp)
    schemas = doc["components"]["schemas"]
    names = ["JobView", "JobList", "EventList", "JobEvent", "JobResult", "ProgressView", "Links",
             "Stats", "Health", "History", "HistoryBucket", "Limits", "WebhookSecret",
             "ScheduleView", "ScheduleList", "ScheduleEvent", "ScheduleEventList", "TemplateView",
             "ScheduleLinks", "WebhookView", "BatchResult", "BatchItemResult", "BulkOutcome",
             "Problem", "FlowWait", "LimitView", "ExecutionView"]
    import jobs_client.workflows as cw

    names += ["WorkflowView", "WorkflowList", "WorkflowLinks", "StepOut"]
    for name in names:
        model = getattr(cm, name, None) or getattr(cw, name)
        assert set(model.model_fields) == set(schemas[name]["properties"]), name
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert required <= set(schemas[name].get("required", [])), name


def test_health_reports_an_unreachable_database_at_once() -> None:
    """`/healthz` answers 503 with a Health body (not a problem) when the database is down:
    `health()` returns it after one request, without the retries (and Retry-After waits) that
    a 503 elsewhere gets. A 503 without that body is still an error."""
    bodies = [json.dumps({"status": "unavailable", "database": "unreachable"}).encode(),
              UNAVAILABLE]
    seen: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = bodies[0] if len(seen) == 1 else bodies[1]
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "5")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        sleeps = Sleeps()
        api = JobsClient(f"http://127.0.0.1:{httpd.server_port}", sleep=sleeps)
        health = api.health()
        assert (health.status, health.database) == ("unavailable", "unreachable")
        with pytest.raises(Unavailable):
            api.health()
        assert seen == ["/healthz", "/healthz"] and list(sleeps) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_submit_many_answers_per_job_and_a_retried_batch_creates_nothing_twice(
    proxy: FaultProxy, submit_env: SubmitHarness, engine: Engine
) -> None:
    """The server commits the batch, the client sees 503: the retry carries the same keys (one
    per job, given by the client) and every job comes back `replayed`: one row each."""
    from jobs_client import NewJob

    sleeps = Sleeps()
    proxy.script = ["commit-then-503"]
    jobs = [NewJob(preset="echo", content=f"b{i}") for i in range(3)]
    jobs.append(NewJob(preset="nope", content="x"))
    result = _client(proxy.url, submit_env, sleeps).submit_many(jobs)
    posts = [s for s in proxy.seen if s.method == "POST"]
    assert [s.upstream_status for s in posts] == [200, 200] and len(sleeps) == 1
    assert [r.outcome for r in result.results] == ["replayed"] * 3 + ["refused"]
    assert (result.created, result.replayed, result.refused) == (0, 3, 1)
    refused = result.results[3].problem
    assert refused is not None and refused.type.endswith("/unknown-preset")
    assert _jobs(engine) == 3


def test_submit_many_raises_typed_errors_for_batch_level_faults(
    server: str, submit_env: SubmitHarness, engine: Engine
) -> None:
    from jobs_client import BadRequest, Conflict, NewJob

    api = _client(server, submit_env)
    with pytest.raises(BadRequest) as empty:
        api.submit_many([])
    assert empty.value.invalid_params[0]["name"] == "jobs"
    twice = [NewJob(preset="echo", content="x", idempotency_key="same")] * 2
    with pytest.raises(Conflict) as dup:
        api.submit_many(twice)
    assert dup.value.invalid_params[0]["name"] == "jobs[1].idempotency_key"
    assert _jobs(engine) == 0


def test_bulk_cancel_and_retry_through_the_client(
    server: str, submit_env: SubmitHarness, engine: Engine
) -> None:
    from jobs_client import BadRequest

    api = _client(server, submit_env)
    for i in range(4):
        api.submit("echo", f"c{i}")
    with pytest.raises(BadRequest) as everything:
        api.bulk_cancel()
    assert everything.value.invalid_params[0]["name"] == "all"
    assert api.bulk_cancel(state="PENDING", dry_run=True).matched == 4
    done = api.bulk_cancel(all=True)
    assert (done.cancelled, done.moved, done.complete) == (4, 4, True)
    assert api.stats().depth["CANCELLED"] == 4
    assert api.bulk_retry(all=True).retried == 0  # nothing FAILED: nothing moved


def test_priorities_keys_and_limits_through_the_client(
    proxy: FaultProxy, submit_env: SubmitHarness, store: Any
) -> None:
    """submit, submit_many and template carry priority and limit_key; a key limit is set,
    read, replaced and deleted; a refused value names its field; a job parked by the key's
    limit says so in get()."""
    from jobs_client import NewJob, template

    api = _client(proxy.url, submit_env)
    assert api.limits().keys == []
    limit = api.set_limit("gpu", max_running=1)
    assert (limit.name, limit.max_running, limit.max_starts, limit.running) == (
        "gpu", 1, None, 0)
    assert api.get_limit("gpu") == limit
    rated = api.set_limit("api", max_starts=60, interval_s=60)
    assert (rated.max_running, rated.max_starts, rated.interval_s) == (None, 60, 60.0)
    assert [k.name for k in api.limits().keys] == ["api", "gpu"]
    with pytest.raises(BadRequest) as bad:
        api.set_limit("gpu", max_starts=5)  # a rate needs its interval
    assert bad.value.invalid_params == [{"name": "interval_s",
                                         "reason": "give max_starts and interval_s together"}]
    assert api.get_limit("gpu").max_running == 1  # unchanged

    first = api.submit("echo", "a", priority=9, limit_key="gpu")
    second = api.submit("echo", "b", limit_key="gpu")
    assert (first.priority, first.limit_key, second.priority) == (9, "gpu", 5)
    assert [store.claim(j.id).reason for j in (first, second)] == ["claimed", "deferred"]
    waiting = api.get(second.id).waiting
    assert waiting is not None and (waiting.reason, waiting.limit, waiting.until) == (
        "running:key", "gpu", None)
    assert api.get(first.id).waiting is None
    before = len(proxy.seen)
    with pytest.raises(BadRequest) as local:
        api.submit("echo", "x", priority=10, limit_key="no spaces")
    assert {p["name"] for p in local.value.invalid_params} == {"priority", "limit_key"}
    assert len(proxy.seen) == before  # refused before sending
    batch = api.submit_many([NewJob(preset="echo", content="c", priority=1, limit_key="api")])
    job = batch.results[0].job
    assert job is not None and (job.priority, job.limit_key) == (1, "api")
    schedule = api.create_schedule("0 9 * * *", template("echo", "d", priority=8,
                                                          limit_key="gpu"))
    assert (schedule.job.priority, schedule.job.limit_key) == (8, "gpu")

    api.delete_limit("gpu")
    with pytest.raises(NotFound, match="Limit not found"):
        api.get_limit("gpu")
    with pytest.raises(NotFound):
        api.delete_limit("gpu")
    assert [k.name for k in api.limits().keys] == ["api"]


@pytest.fixture()
def _tight_door(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OWNER_MAX_PENDING", "1")
    monkeypatch.setenv("OWNER_MAX_WAITS", "1")


@pytest.mark.usefixtures("_tight_door")
def test_a_429_at_the_door_is_typed_with_its_quota_and_retry_after(
    server: str, submit_env: SubmitHarness, engine: Engine
) -> None:
    """Over the PENDING quota: the client waits out Retry-After (5 s) as asked, then raises
    RateLimited carrying the quota, its value and the Retry-After; nothing more is written."""
    sleeps = Sleeps()
    api = _client(server, submit_env, sleeps, retries=2)
    api.submit("echo", "the one allowed")
    with pytest.raises(RateLimited) as limited:
        api.submit("echo", "one too many")
    err = limited.value
    assert isinstance(err, Unavailable) and err.status == 429  # what callers caught before
    assert (err.quota, err.limit, err.retry_after) == ("max_pending", 1, 5.0)
    assert err.type.endswith("/pending-limit-reached") and sleeps == [5.0, 5.0]
    assert _jobs(engine) == 1


@pytest.mark.usefixtures("_tight_door")
def test_wait_polls_instead_when_no_wait_is_admitted(
    server: str, submit_env: SubmitHarness
) -> None:
    """The caller already holds its one wait on the instance: `wait(server_wait_s=...)` is
    refused at once, and polls that round instead of sleeping out Retry-After."""
    sleeps = Sleeps()
    api = _client(server, submit_env, sleeps)
    job = api.submit("echo", "watched twice")
    refused: list[RateLimited] = []

    def hold() -> None:
        """One wait of 20 s, asked again until admitted (the probe below may hold the slot
        for a moment); it ends when the job does."""
        other = _client(server, submit_env)
        for _ in range(1000):
            try:
                other.get(job.id, wait_s=20, retry_limited=False)
                return
            except RateLimited:
                continue

    holder = threading.Thread(target=hold)
    holder.start()
    while not refused:  # until the holder's wait is in place
        try:
            api.get(job.id, wait_s=0.01, retry_limited=False)
        except RateLimited as exc:
            refused.append(exc)
    assert refused[0].quota == "owner_max_waits" and refused[0].retry_after is not None
    seen: list[JobState] = []

    def cancel_on_first_sight(j: Any) -> None:
        seen.append(j.state)
        if j.state == JobState.PENDING:
            api.cancel(j.id)

    done = api.wait(job.id, 60, poll_s=0.25, server_wait_s=20, on_change=cancel_on_first_sight)
    assert done.state == "CANCELLED" and seen == [JobState.PENDING, JobState.CANCELLED]
    assert sleeps == [0.25]  # one polling round, no Retry-After sleep
    holder.join(30)


def test_workflows_through_the_client(server: str, submit_env: SubmitHarness,
                                      store: Any) -> None:
    from jobs_client import Workflow

    api = _client(server, submit_env)
    wf = Workflow("episode-42")
    script = wf.step("script", preset="echo", content="s", max_attempts=1)
    wf.step("audio", preset="echo", content="a", after=[script])
    with pytest.raises(BadRequest) as local:  # checked before anything is sent
        wf.step("Bad Name", preset="echo", content="x")
    assert local.value.invalid_params[0]["name"] == "steps[2].name"
    made = api.submit_workflow(wf)
    assert (made.state, made.steps_done, made.steps_total) == ("RUNNING", 0, 2)
    assert made.step("audio").state == JobState.WAITING and made.step("audio").after == [script]
    job = api.get(made.step("audio").job_id)
    assert (job.state, job.workflow_id, job.step) == (JobState.WAITING, made.id, "audio")
    assert [w.id for w in api.workflows().workflows] == [made.id]
    claim = store.claim(uuid.UUID(made.step("script").job_id))
    assert claim.job is not None
    store.fail(claim.job.id, claim.job.attempts, "Broken", "it broke")
    failed = api.wait_workflow(made.id, timeout_s=5, poll_s=0)
    assert (failed.state, failed.broken_step) == ("FAILED", "script")
    assert failed.step("audio").error_type == "UpstreamFailed"
    again = api.retry_workflow(made.id, step="script")
    assert again.step("script").state == JobState.PENDING
    assert again.step("audio").state == JobState.WAITING
    with pytest.raises(Conflict):
        api.retry_workflow(made.id)  # nothing FAILED now
    assert api.cancel_workflow(made.id).state == "CANCELLED"
    with pytest.raises(NotFound, match="Workflow not found"):
        api.get_workflow(uuid.uuid4())
    assert api.bulk_cancel(limit_key="none-such", dry_run=True).matched == 0
