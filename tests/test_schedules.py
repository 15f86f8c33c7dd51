"""Recurring schedules (issue 15) on the real stack: the /schedules API through the submit
function, and the sweep's fire against PostgreSQL (one job per fire time, whatever two sweeps
or a retried sweep do; overlap; catch-up; the due-scan on its index)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, exc, text

from common.maintenance import schedules as schedules_step
from common.maintenance.budget import Budget
from common.store import cron
from common.store.errors import InvalidInput, ScheduleLimitReached
from common.store.job_store import JobStore
from common.store.schedule_models import NewSchedule, ScheduleTemplate
from common.store.states import JobState
from tests.submit_fixtures import SubmitHarness

TEMPLATE = {"preset": "echo", "content": "tick"}


def _new(cron_expr: str = "*/5 * * * *", **kw: Any) -> NewSchedule:
    return NewSchedule(cron=cron_expr, job=ScheduleTemplate(**TEMPLATE), **kw)


def _backdate(engine: Engine, schedule_id: Any, by: str) -> None:
    """The clock moving on (or the sweep having been down): the next fire is `by` ago."""
    with engine.connect() as conn:
        conn.execute(text(f"UPDATE schedules SET next_fire_at = next_fire_at - interval '{by}' "
                          "WHERE id = :id"), {"id": schedule_id})


def _events(engine: Engine, schedule_id: Any) -> list[tuple[str, Any]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT kind, details FROM schedule_events WHERE schedule_id = :id ORDER BY id"),
            {"id": schedule_id})]


def _jobs_of(engine: Engine, schedule_id: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE schedule_id = :id"),
                                {"id": schedule_id}).scalar_one())


# -- the API ----------------------------------------------------------------------------------


def test_create_get_list_pause_resume_delete(api: SubmitHarness) -> None:
    auth = api.auth("alice")
    body = {"cron": "30 9 * * MON-FRI", "timezone": "Europe/Riga", "job": TEMPLATE}
    resp = api.client.post("/schedules", json=body, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    sched = resp.get_json()
    assert resp.headers["Location"] == f"/schedules/{sched['id']}"
    assert sched["enabled"] and sched["overlap"] == "skip" and sched["catch_up"] == "once"
    assert sched["next_fire_at"] and sched["last_fire_at"] is None and sched["last_job_id"] is None
    assert "content" not in sched["job"]
    nxt = datetime.fromisoformat(sched["next_fire_at"]).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Riga"))
    assert (nxt.hour, nxt.minute, nxt.weekday() < 5) == (9, 30, True)
    url = f"/schedules/{sched['id']}"
    assert api.client.get(url, headers=auth).get_json()["id"] == sched["id"]
    assert api.client.get(url, headers=api.auth("mallory")).status_code == 404
    assert api.client.patch(url, json={"enabled": False},
                            headers=api.auth("mallory")).status_code == 404
    assert api.client.delete(url, headers=api.auth("mallory")).status_code == 404
    listed = api.client.get("/schedules", headers=auth).get_json()
    assert [s["id"] for s in listed["schedules"]] == [sched["id"]]
    assert api.client.get("/schedules", headers=api.auth("mallory")).get_json()["schedules"] == []
    paused = api.client.patch(url, json={"enabled": False}, headers=auth).get_json()
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    resumed = api.client.patch(url, json={"enabled": True}, headers=auth).get_json()
    assert resumed["enabled"] is True and resumed["next_fire_at"] == sched["next_fire_at"]
    moved = api.client.patch(url, json={"cron": "0 12 * * *", "overlap": "allow"},
                             headers=auth).get_json()
    assert moved["overlap"] == "allow" and moved["next_fire_at"] != sched["next_fire_at"]
    assert api.client.get(url + "/events", headers=auth).get_json() == {"events": []}
    assert api.client.delete(url, headers=auth).status_code == 204
    assert api.client.get(url, headers=auth).status_code == 404
    assert api.client.get("/schedules/not-a-uuid", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "5-3 * * * *"}, "cron"),
        ({"cron": "0 0 31 4 *"}, "cron"),  # April has no 31st
        ({"cron": "@daily"}, "cron"),
        ({"cron": "* * * * *\n"}, "cron"),
        ({"cron": "0 0 * * * *"}, "cron"),  # 6 fields
        ({"cron": "\u0661 * * * *"}, "cron"),  # an Arabic-Indic digit
        ({"cron": "\ud800 * * * *"}, "cron"),
        ({"cron": None}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "EST5EDT,M3.2.0,M11.1.0"}, "timezone"),
        ({"timezone": "\x00"}, "timezone"),
        ({"timezone": 3}, "timezone"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "never"}, "catch_up"),
        ({"job": {"preset": "nope", "content": "x"}}, "preset"),
        ({"job": {"preset": "echo"}}, "job.content"),
        ({"job": {"preset": "echo", "content": "\ud800"}}, "content"),
        ({"job": {"preset": "echo", "content": "x", "max_attempts": 0}}, "job.max_attempts"),
        ({"job": {"preset": "text-stats", "content": "x",
                  "metadata": {"options": {"top_n": "many"}}}}, "job.metadata.options"),
        ({"job": {"preset": "echo", "content": "x", "idempotency_key": "k"}},
         "job.idempotency_key"),
        ({"owner_id": "hs256:bob"}, "owner_id"),
        # a callback URL is checked as POST /jobs checks one (issue #31)
        ({"job": {**TEMPLATE, "callback_url": "https://169.254.169.254/"}}, "job.callback_url"),
        ({"job": {**TEMPLATE, "callback_url": "http://10.0.0.1/"}}, "job.callback_url"),
        ({"job": {**TEMPLATE, "callback_url": "https://hooks.example.com/\n"}},
         "job.callback_url"),
        ({"job": {**TEMPLATE, "callback_url": "https://x\ud800.com/"}}, "job.callback_url"),
        ({"job": {**TEMPLATE, "callback_url": ""}}, "job.callback_url"),
    ],
)
def test_bad_schedules_are_422_naming_the_field_and_store_nothing(
    api: SubmitHarness, engine: Engine, body: dict[str, Any], field: str
) -> None:
    full = {"cron": "*/5 * * * *", "job": TEMPLATE, **body}
    resp = api.client.post("/schedules", json=full, headers=api.auth("alice"))
    problem = resp.get_json()
    assert resp.status_code == 422, problem
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert problem["invalid_params"][0]["name"] == field, problem
    created = api.client.post("/schedules", json={"cron": "*/5 * * * *", "job": TEMPLATE},
                              headers=api.auth("alice")).get_json()
    patched = api.client.patch(f"/schedules/{created['id']}", json=body,
                               headers=api.auth("alice"))
    if field not in ("job.content", "owner_id"):  # a patch may leave the job out
        assert patched.status_code == 422, patched.get_json()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schedules")).scalar_one() == 1
        row = conn.execute(text("SELECT cron, timezone, preset FROM schedules")).one()
    assert tuple(row) == ("*/5 * * * *", "UTC", "echo")


def test_limits_per_owner(store: JobStore) -> None:
    limited = JobStore(store._engine, store._settings.model_copy(
        update={"max_schedules_per_owner": 2, "schedule_min_interval_s": 600}))
    limited.create_schedule("hs256:alice", _new("*/10 * * * *"))
    with pytest.raises(InvalidInput, match="minimum interval") as err:
        limited.create_schedule("hs256:alice", _new("*/5 * * * *"))
    assert err.value.field == "cron"
    limited.create_schedule("hs256:alice", _new("0 * * * *"))
    with pytest.raises(ScheduleLimitReached):
        limited.create_schedule("hs256:alice", _new("0 * * * *"))
    limited.create_schedule("hs256:bob", _new("0 * * * *"))  # another owner's quota


# -- firing -----------------------------------------------------------------------------------


def test_a_due_schedule_fires_one_job_and_moves_on(store: JobStore, engine: Engine) -> None:
    sched = store.create_schedule("hs256:alice", _new())
    _backdate(store._engine, sched.id, "5 minutes 1 second")
    out = schedules_step.fire_due(store, Budget(60), 100, 30)
    assert (out["schedules"], out["fired"]) == (1, 1)
    after = store.get_schedule("hs256:alice", sched.id)
    assert after.last_job_id is not None and after.last_fire_at is not None
    assert after.next_fire_at is not None and after.next_fire_at > datetime.now(UTC)
    job = store.get("hs256:alice", after.last_job_id)
    assert job.state is JobState.PENDING and job.not_before is None and job.dispatched_at is None
    assert [k for k, _ in _events(engine, sched.id)] == ["fired"]
    # nothing more is due: a second pass fires nothing
    assert schedules_step.fire_due(store, Budget(60), 100, 30)["schedules"] == 0


def test_two_sweeps_and_a_retried_sweep_fire_each_tick_once(store: JobStore,
                                                             engine: Engine) -> None:
    scheds = [store.create_schedule("hs256:alice", _new()) for _ in range(20)]
    for s in scheds:
        _backdate(engine, s.id, "5 minutes 1 second")
    due = store.due_schedules(100)
    go = threading.Barrier(4)
    results: list[dict[str, Any]] = []

    def sweep() -> None:
        go.wait()
        results.append(schedules_step.fire_due(store, Budget(60), 100, 30))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.get("fired", 0) for r in results) == 20
    # a sweep that crashed after reading the due list and is retried with it: nothing fires
    now = datetime.now(UTC)
    for d in due:
        taken, job_id = store.fire(d, d.next_fire_at, d.next_fire_at + timedelta(minutes=5), 0)
        assert (taken, job_id) == (False, None)
    assert sum(_jobs_of(engine, s.id) for s in scheds) == 20
    assert now  # (the retry above used the stale due list, as a crashed pass would)


def test_the_database_refuses_a_second_job_for_one_fire_time(store: JobStore,
                                                             engine: Engine) -> None:
    sched = store.create_schedule("hs256:alice", _new())
    _backdate(engine, sched.id, "5 minutes 1 second")
    schedules_step.fire_due(store, Budget(60), 100, 30)
    with engine.connect() as conn, pytest.raises(exc.IntegrityError):
        conn.execute(text(
            "INSERT INTO jobs (owner_id, preset, content, max_attempts, attempt_limit, "
            "schedule_id, fire_time) SELECT owner_id, preset, content, 5, 5, schedule_id, "
            "fire_time FROM jobs WHERE schedule_id = :id"), {"id": sched.id})


def _fire_at(store: JobStore, engine: Engine, schedule_id: Any, tick: datetime) -> Any:
    """Fire one schedule for the past tick `tick`, as the sweep would."""
    with engine.connect() as conn:
        conn.execute(text("UPDATE schedules SET next_fire_at = :t WHERE id = :id"),
                     {"t": tick, "id": schedule_id})
    due = next(d for d in store.due_schedules(100) if d.id == schedule_id)
    return store.fire(due, tick, tick + timedelta(minutes=5), 0)


def test_overlap_skip_records_a_skip_and_allow_fires(store: JobStore, engine: Engine) -> None:
    skip = store.create_schedule("hs256:alice", _new())
    allow = store.create_schedule("hs256:alice", _new(overlap="allow"))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = [base + timedelta(minutes=5 * i) for i in range(3)]
    for tick in ticks[:2]:
        for s in (skip, allow):
            assert _fire_at(store, engine, s.id, tick)[0]
    assert [k for k, _ in _events(engine, skip.id)] == ["fired", "skipped"]
    assert _events(engine, skip.id)[1][1]["reason"] == "previous-job-live"
    assert [k for k, _ in _events(engine, allow.id)] == ["fired", "fired"]
    # once its job ended, the skip schedule fires again
    job_id = store.get_schedule("hs256:alice", skip.id).last_job_id
    store.cancel("hs256:alice", job_id)
    taken, new_job = _fire_at(store, engine, skip.id, ticks[2])
    assert taken and new_job is not None
    assert [k for k, _ in _events(engine, skip.id)] == ["fired", "skipped", "fired"]
    after = store.get_schedule("hs256:alice", skip.id)
    assert (after.last_job_id, after.last_fire_at) == (new_job, ticks[2])


def test_after_downtime_once_fires_one_job_and_all_fires_every_tick(store: JobStore,
                                                                     engine: Engine) -> None:
    once = store.create_schedule("hs256:alice", _new("*/5 * * * *", overlap="allow"))
    every = store.create_schedule("hs256:alice", _new("*/5 * * * *", overlap="allow",
                                                      catch_up="all"))
    for s in (once, every):
        _backdate(engine, s.id, "1 hour")  # twelve ticks missed, the next one not yet due
    out = schedules_step.fire_due(store, Budget(60), 5, 30)  # small batches: several rounds
    assert _jobs_of(engine, once.id) == 1
    details = _events(engine, once.id)[0][1]
    # The event counts every tick the fire stands for: twelve, the one it fired at included
    # (it said 11 before issue #31 asked for the ticks the fire stands for).
    assert details["missed"] == 12
    assert _jobs_of(engine, every.id) == 12
    assert out["fired"] == 13


def test_the_due_scan_uses_its_index(store: JobStore, engine: Engine) -> None:
    from common.store.schedules import SQL_DUE

    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # a tiny table: ask for the index plan
        plan = "\n".join(conn.execute(text("EXPLAIN " + SQL_DUE), {
            "limit": 100, "now": datetime.now(UTC), "passed": []}).scalars())
        conn.execute(text("RESET enable_seqscan"))
    assert "ix_schedules_due" in plan, plan


# -- cron and DST -----------------------------------------------------------------------------


def test_dst_spring_forward_fires_once_after_the_jump_and_fall_back_once() -> None:
    riga = "Europe/Riga"  # 2026-03-29 03:00 -> 04:00; 2026-10-25 04:00 -> 03:00
    spring = cron.next_after("30 3 * * *", riga, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert spring == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 04:00 EEST, just after the jump
    fall = [cron.next_after("30 3 * * *", riga, datetime(2026, 10, 24, 12, tzinfo=UTC))]
    fall.append(cron.next_after("30 3 * * *", riga, fall[0]))
    assert fall == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 03:30 EEST, once
                    datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_the_grammar_and_cronsim_agree() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from common.store.cron_grammar import compiled, cron_pattern

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(st.from_regex(cron_pattern(), fullmatch=True).filter(lambda e: len(e) <= 120))
    def accepted(expr: str) -> None:
        # cronsim parses every expression the grammar admits. The one refusal left is an
        # expression that parses but can never fire, a 422 saying so: with a day-of-month and a
        # day-of-week that starts with `*`, cron wants both, e.g. `0 0 LW * */7` (the last
        # weekday AND a Sunday) or `0 0 */61 10 WED#5` (the 1st AND the fifth Wednesday).
        try:
            cron.next_after(expr, "UTC", datetime(2026, 1, 1, tzinfo=UTC))
        except InvalidInput as exc:
            assert exc.message == "never fires", (expr, exc.message)

    accepted()
    for never in ("0 0 LW * */7", "0 0 */61 10 WED#5"):
        assert compiled().fullmatch(never)  # schema-valid...
        with pytest.raises(InvalidInput, match="never fires"):  # ...but refused, and said why
            cron.next_after(never, "UTC", datetime(2026, 1, 1, tzinfo=UTC))


def test_a_template_whose_content_its_preset_cannot_read_is_422_naming_job_content(
    api: SubmitHarness, engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo preset reads its content as seconds (content_pattern): a fire could never run
    "soon", so the schedule is refused at once, naming the content, not the options."""
    monkeypatch.setenv("ENABLE_DEMO_PRESET", "true")  # read at this instance's first request
    body = {"cron": "*/5 * * * *", "job": {"preset": "demo", "content": "soon"}}
    resp = api.client.post("/schedules", json=body, headers=api.auth("alice"))
    problem = resp.get_json()
    assert resp.status_code == 422, problem
    assert [p["name"] for p in problem["invalid_params"]] == ["job.content"], problem
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schedules")).scalar() == 0
    ok = api.client.post("/schedules", json={**body, "job": {"preset": "demo", "content": "2"}},
                         headers=api.auth("alice"))
    assert ok.status_code == 201, ok.get_json()


@pytest.fixture()
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in make dev: the webhook receiver is on this machine (set before `api` is built)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")


def test_a_schedule_s_jobs_carry_its_callback_url(
    loopback: None, api: SubmitHarness, store: JobStore, engine: Engine
) -> None:
    """Issue #31: a schedule's template may carry a callback_url, checked like POST /jobs'; each
    job it fires carries it, and the job's end puts its webhook in the outbox like any other."""
    url = "http://127.0.0.1:9/hook"
    body = {"cron": "*/5 * * * *", "job": {**TEMPLATE, "callback_url": url}}
    resp = api.client.post("/schedules", json=body, headers=api.auth("alice"))
    assert resp.status_code == 201, resp.get_json()
    created = resp.get_json()
    assert created["job"]["callback_url"] == url
    sched = store.get_schedule("hs256:alice", created["id"])
    # A patch that replaces the template without one drops it; one that gives it keeps it.
    patched = api.client.patch(f"/schedules/{sched.id}", json={"job": TEMPLATE},
                               headers=api.auth("alice")).get_json()
    assert patched["job"]["callback_url"] is None
    patched = api.client.patch(f"/schedules/{sched.id}", json=body,
                               headers=api.auth("alice")).get_json()
    assert patched["job"]["callback_url"] == url
    _backdate(engine, sched.id, "5 minutes 1 second")
    assert schedules_step.fire_due(store, Budget(60), 100, 30)["fired"] == 1
    job_id = store.get_schedule(sched.owner_id, sched.id).last_job_id
    assert job_id is not None
    job = store.get(sched.owner_id, job_id)
    assert job.callback_url == url
    claimed = store.claim(job.id).job
    assert claimed is not None
    store.complete(claimed.id, claimed.attempts, {"ok": True})
    with engine.connect() as conn:
        outbox = conn.execute(text("SELECT url FROM webhook_deliveries WHERE job_id = :id"),
                              {"id": job.id}).scalars().all()
    assert outbox == [url]


@pytest.mark.parametrize("expr", [
    "00 9 * * mon", "0 9 * * Mon-Fri", "00 00 1 jan *", "05 */02 * * sun,sat",
    "*/15  9-17 * *\tMON-FRI", "0 0 l * *", "0 0 lw * *", "0 0 * * 5l",
    "0 0 * * mon#2", "0 0 * * 7", "0 0 */099 * *", "07 7 07 07 *", "00-05/02 * * * *",
])
def test_the_forms_cron_users_write_are_accepted(api: SubmitHarness, expr: str) -> None:
    """Issue #31: leading zeros, names in any case, several spaces or a tab: what cronsim
    accepts. The OpenAPI pattern admits them too (checked against cronsim by the property
    test below)."""
    from common.store.cron_grammar import compiled

    assert compiled().fullmatch(expr)
    resp = api.client.post("/schedules", json={"cron": expr, "job": TEMPLATE},
                           headers=api.auth("alice"))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["cron"] == expr


@pytest.mark.parametrize(("expr", "says"), [
    ("61 * * * *", "the minute field '61'"),
    ("0 24 * * *", "the hour field '24'"),
    ("0 0 32 * *", "the day-of-month field '32'"),
    ("0 0 * 13 *", "the month field '13'"),
    ("0 0 * * MOM", "the day-of-week field 'MOM'"),
    ("0 0 * * mon#6", "the day-of-week field 'mon#6'"),
    ("5-3 * * * *", "the minute field '5-3'"),
    ("*/0 * * * *", "the minute field '*/0'"),
    ("* * *", "has 3 fields"),
    ("0 0 * * * *", "has 6 fields"),
    ("@daily", "may contain only"),
    (" 0 0 * * *", "has spaces or tabs around it"),
    ("007 * * * *", "the minute field '007'"),
    ("*/100 * * * *", "the minute field '*/100'"),
    ("0 0 31 4 *", "the day-of-month field '31' has only days no month"),
])
def test_a_refused_expression_names_its_field(api: SubmitHarness, expr: str,
                                              says: str) -> None:
    """Issue #31: not one generic message, but the field that is wrong."""
    resp = api.client.post("/schedules", json={"cron": expr, "job": TEMPLATE},
                           headers=api.auth("alice"))
    problem = resp.get_json()
    assert resp.status_code == 422, problem
    assert problem["invalid_params"][0]["name"] == "cron"
    assert says in problem["invalid_params"][0]["reason"], problem
