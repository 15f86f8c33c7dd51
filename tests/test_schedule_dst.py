"""Schedules through DST changes (issue #25, bug 2): a next fire time is always strictly after
the last one, in every zone, through both transitions, and one sweep pass spends bounded work
on any one schedule.

The rule (common/store/cron.py): a fixed time (minute and hour both start with a value) is
read on the wall clock; in a repeated hour it fires once, at its first occurrence, and a time
skipped by a spring-forward fires once, at the first instant after the gap. An expression whose
minute or hour starts with `*` follows elapsed time. Properties run over every zone whose
offset changes in 2026 and over both of its transitions; the sweep is run against PostgreSQL
with its clock walked through New York's fall-back night.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from common.maintenance import schedules as schedules_step
from common.maintenance.budget import Budget
from common.store import cron
from common.store.job_store import JobStore
from common.store.schedule_models import DueSchedule, NewSchedule, ScheduleTemplate

NEW_YORK = "America/New_York"
FALL_BACK = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 02:00 EDT -> 01:00 EST
SPRING_FORWARD = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 02:00 EST -> 03:00 EDT


@lru_cache(maxsize=1)
def _dst_zones() -> list[str]:
    """Zones whose offset differs between January and July 2026."""
    out = []
    for name in cron.zone_names():
        tz = ZoneInfo(name)
        if (datetime(2026, 1, 15, tzinfo=tz).utcoffset()
                != datetime(2026, 7, 15, tzinfo=tz).utcoffset()):
            out.append(name)
    return out


@cache
def _transitions(name: str) -> tuple[datetime, ...]:
    """The instants (UTC, to the minute) in 2026 at which the zone's offset changes."""
    tz = ZoneInfo(name)

    def offset(t: datetime) -> Any:
        return t.astimezone(tz).utcoffset()

    found = []
    t = datetime(2026, 1, 1, tzinfo=UTC)
    while t.year == 2026:
        nxt = t + timedelta(hours=1)
        if offset(t) != offset(nxt):
            lo, hi = t, nxt  # the change lies in (lo, hi]: bisect to the minute
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    break
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            found.append(hi)
        t = nxt
    return tuple(found)


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, datetime, str]:
    """A zone, one of its 2026 transitions, and an expression aimed at that night's wall
    times: fixed times inside and around the changed hour, and elapsed-time ones."""
    name = draw(st.sampled_from(_dst_zones()))
    at = draw(st.sampled_from(_transitions(name)))
    tz = ZoneInfo(name)
    before = (at - timedelta(minutes=1)).astimezone(tz)
    after = at.astimezone(tz)
    hour = draw(st.sampled_from(sorted({before.hour, after.hour, (before.hour + 23) % 24})))
    minute = draw(st.sampled_from([0, 15, 30, 59, before.minute, after.minute]))
    expr = draw(st.sampled_from([
        f"{minute} {hour} * * *",
        f"0,{minute} {hour},{(hour + 1) % 24} * * *",
        f"{minute} * * * *",
        f"*/{draw(st.sampled_from([1, 7, 15, 20, 30]))} * * * *",
        f"*/20 {hour} * * *",
    ]))
    return name, at, expr


SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True)


@SETTINGS
@given(_case(), st.integers(min_value=-240, max_value=240), st.integers(0, 59))
def test_every_next_fire_time_is_strictly_after_the_last(
    case: tuple[str, datetime, str], minutes: int, seconds: int
) -> None:
    name, at, expr = case
    start = at + timedelta(minutes=minutes, seconds=seconds)
    times = []
    for t in cron.fire_times(expr, name, start):
        times.append(t)
        if t > at + timedelta(days=2) or len(times) >= 400:
            break
    assert times and times[0] > start, (name, expr, start, times[:3])
    assert all(a < b for a, b in itertools.pairwise(times)), (name, expr, start)
    # Stepping one fire at a time, as the sweep does, walks the same sequence.
    t = start
    for expected in times[:50]:
        t = cron.next_after(expr, name, t)
        assert t == expected, (name, expr, start)
    # Where one starts does not change the plan: from any later instant, the first fire time
    # is the first of this sequence after it.
    for later in (start + timedelta(minutes=m) for m in (1, 17, 61, 119)):
        first = next((x for x in times if x > later), None)
        if first is not None and first < times[-1]:
            assert cron.next_after(expr, name, later) == first, (name, expr, start, later)


@SETTINGS
@given(_case(), st.integers(min_value=0, max_value=240), st.integers(0, 600))
def test_a_planned_fire_always_moves_the_schedule_on(
    case: tuple[str, datetime, str], due_offset: int, late_by: int
) -> None:
    name, at, expr = case
    due = cron.next_after(expr, name, at - timedelta(minutes=due_offset))
    now = due + timedelta(minutes=late_by)
    for catch_up in ("once", "all"):
        fire_time, following, _ = cron.plan_fire(expr, name, due, now, catch_up)  # type: ignore[arg-type]
        assert due <= fire_time <= now, (name, expr, due, now, catch_up)
        assert following > fire_time and following > due, (name, expr, due, now, catch_up)
        if catch_up == "once":
            assert following > now, (name, expr, due, now)


def _local_fires(expr: str, name: str, day: datetime) -> list[datetime]:
    """The fire times of `expr` on the local date of `day`, in local time."""
    tz = ZoneInfo(name)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    out = []
    for t in cron.fire_times(expr, name, start - timedelta(seconds=1)):
        local = t.astimezone(tz)
        if local.date() != day.date():
            break
        out.append(local)
    return out


@SETTINGS
@given(st.sampled_from(_dst_zones()), st.data())
def test_a_fixed_time_fires_once_on_both_transition_days(name: str, data: st.DataObject) -> None:
    """The stated rule: a wall time repeated by a fall-back fires once, at its first
    occurrence; one skipped by a spring-forward fires once, at the first instant after the
    gap."""
    at = data.draw(st.sampled_from(_transitions(name)))
    tz = ZoneInfo(name)
    before, after = (at - timedelta(seconds=1)).astimezone(tz), at.astimezone(tz)
    wall = data.draw(st.sampled_from([before, after, before - timedelta(minutes=29)]))
    expr = f"{wall.minute} {wall.hour} * * *"
    fires = [f for f in _local_fires(expr, name, after)
             if (f.hour, f.minute) == (wall.hour, wall.minute) or f.astimezone(UTC) == at]
    assert len(fires) == 1, (name, expr, at, fires)
    fire = fires[0]
    exists = [t for t in (datetime(after.year, after.month, after.day, wall.hour, wall.minute,
                                   tzinfo=tz, fold=f) for f in (0, 1))
              if t.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == t.replace(tzinfo=None)]
    if exists:  # a real wall time (once or twice that day): its first occurrence
        assert fire.astimezone(UTC) == min(t.astimezone(UTC) for t in exists), (name, expr)
    else:  # skipped: the first instant after the gap
        assert fire.astimezone(UTC) == at, (name, expr, fire)


def test_new_york_fall_back_and_spring_forward_by_name() -> None:
    """The rule, spelled out on one zone (the cases README states)."""
    # 01:30 happens twice on 2026-11-01: fires at the first (EDT), not again at the second.
    assert cron.next_after("30 1 * * *", NEW_YORK, FALL_BACK - timedelta(hours=1)) == \
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    for inside_second_pass in (FALL_BACK, FALL_BACK + timedelta(minutes=10),
                               FALL_BACK + timedelta(minutes=29)):
        assert cron.next_after("30 1 * * *", NEW_YORK, inside_second_pass) == \
            datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    # Elapsed-time expressions fire in both passes of the repeated hour.
    fires = _local_fires("*/20 1 * * *", NEW_YORK, FALL_BACK)
    assert [(f.hour, f.minute, f.fold) for f in fires] == [
        (1, 0, 0), (1, 20, 0), (1, 40, 0), (1, 0, 1), (1, 20, 1), (1, 40, 1)]
    # 02:30 does not exist on 2026-03-08: fires once at 03:00 EDT, the first instant after.
    assert _local_fires("30 2 * * *", NEW_YORK, SPRING_FORWARD) == [
        SPRING_FORWARD.astimezone(ZoneInfo(NEW_YORK))]
    assert _local_fires("*/20 2 * * *", NEW_YORK, SPRING_FORWARD) == []
    # Lord Howe falls back half an hour (02:00 +11 -> 01:30 +10:30). Started in the repeated
    # half hour, cronsim's own zone handling skipped the next day's 00:00 and 00:20; walking
    # wall times and mapping them here does not.
    lord_howe = "Australia/Lord_Howe"
    walked = cron.fire_times("*/20 0 * * *", lord_howe, datetime(2026, 4, 4, 15, 0, tzinfo=UTC))
    assert [t.strftime("%d %H:%M") for t in itertools.islice(walked, 3)] == [
        "05 13:30", "05 13:50", "05 14:10"]  # 00:00, 00:20, 00:40 at +10:30 on 6 April


# -- the sweep, on PostgreSQL -----------------------------------------------------------------


class CountingStore(JobStore):
    """The real store, counting its fire statements."""

    fires = 0

    def fire(self, due: DueSchedule, fire_time: datetime, next_fire: datetime,
             missed: int) -> tuple[bool, Any]:
        self.fires += 1
        return super().fire(due, fire_time, next_fire, missed)


def _counting(store: JobStore) -> CountingStore:
    return CountingStore(store._engine, store._settings)


def _schedule(store: JobStore, engine: Engine, expr: str, first: datetime,
              **kw: Any) -> Any:
    sched = store.create_schedule("hs256:alice", NewSchedule(
        cron=expr, timezone=NEW_YORK, job=ScheduleTemplate(preset="echo", content="tick"),
        **kw))
    with engine.begin() as conn:
        conn.execute(text("UPDATE schedules SET next_fire_at = :t WHERE id = :id"),
                     {"t": first, "id": sched.id})
    return sched


def _jobs(engine: Engine, schedule_id: Any) -> list[datetime]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT fire_time FROM jobs WHERE schedule_id = :id ORDER BY fire_time"),
            {"id": schedule_id}).scalars())


def test_a_pass_in_the_repeated_hour_fires_a_fixed_time_once(
    store: JobStore, engine: Engine
) -> None:
    """The reported spin: `30 1 * * *` in New York, due at 01:30 EDT, the sweep running at
    01:10 EST (the second pass of the hour). Before the fix the next fire time came out as
    01:30 EDT again and the pass fired in place for its whole budget."""
    counting = _counting(store)
    sched = _schedule(store, engine, "30 1 * * *", datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    out = schedules_step.fire_due(counting, Budget(5), 100, 30,
                                  clock=lambda: FALL_BACK + timedelta(minutes=10))
    assert counting.fires == 1, out
    assert (out["fired"], out.get("skipped", 0), out["more"]) == (1, 0, False), out
    after = store.get_schedule("hs256:alice", sched.id)
    assert after.next_fire_at == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


def test_walking_the_sweep_through_both_nights_fires_each_tick_once(
    store: JobStore, engine: Engine
) -> None:
    """Passes every five minutes from 23:00 the evening before to 05:00 the morning after
    each change: a fixed time fires once a night, an elapsed-time one every real 20 minutes,
    and no pass fires one schedule more than once."""
    for night, expected_fixed in ((FALL_BACK, [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]),
                                  (SPRING_FORWARD, [SPRING_FORWARD])):
        with engine.begin() as conn:  # the other night's schedules: done with
            conn.execute(text("DELETE FROM schedules"))
        begin = night - timedelta(hours=4)
        fixed = _schedule(store, engine, "30 1 * * *" if night == FALL_BACK else "30 2 * * *",
                          cron.next_after("30 1 * * *" if night == FALL_BACK else "30 2 * * *",
                                          NEW_YORK, begin), overlap="allow")
        every = _schedule(store, engine, "*/20 * * * *",
                          cron.next_after("*/20 * * * *", NEW_YORK, begin), overlap="allow")
        counting = _counting(store)
        clock = begin
        while clock <= night + timedelta(hours=4):
            before = counting.fires
            schedules_step.fire_due(counting, Budget(5), 100, 30, clock=lambda c=clock: c)
            assert counting.fires - before <= 2, clock  # one per schedule at most
            clock += timedelta(minutes=5)
        assert _jobs(engine, fixed.id) == expected_fixed
        twenty = _jobs(engine, every.id)
        assert len(twenty) == 8 * 3  # every 20 real minutes for 8 hours
        assert all(b - a == timedelta(minutes=20) for a, b in itertools.pairwise(twenty))


def test_a_schedule_that_cannot_move_on_is_passed_over_not_spun(
    store: JobStore, engine: Engine, monkeypatch: Any
) -> None:
    """Belt and braces: if a plan ever failed to move a schedule on, the step writes nothing
    for it and goes on with the others."""
    counting = _counting(store)
    stuck = _schedule(store, engine, "*/5 * * * *", datetime(2026, 1, 1, tzinfo=UTC))
    fine = _schedule(store, engine, "0 * * * *", datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    real_plan = cron.plan_fire

    def plan(expr: str, *args: Any) -> tuple[datetime, datetime, int]:
        fire_time, following, missed = real_plan(expr, *args)
        return (fire_time, fire_time, missed) if expr == "*/5 * * * *" else \
            (fire_time, following, missed)

    monkeypatch.setattr(cron, "plan_fire", plan)
    out = schedules_step.fire_due(counting, Budget(5), 100, 30,
                                  clock=lambda: datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    assert counting.fires == 1 and out["unplannable"] == 1, out
    assert _jobs(engine, stuck.id) == [] and len(_jobs(engine, fine.id)) == 1


def test_a_long_catch_up_is_spread_over_passes(store: JobStore, engine: Engine) -> None:
    """catch_up 'all' after a long outage: at most MAX_FIRES_PER_PASS fires for that schedule
    in one pass, and another due schedule is not held back behind it."""
    counting = _counting(store)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    backlog = _schedule(store, engine, "* * * * *", start, catch_up="all", overlap="allow")
    other = _schedule(store, engine, "0 * * * *", start + timedelta(hours=5), overlap="allow")
    now = start + timedelta(hours=6)
    out = schedules_step.fire_due(counting, Budget(60), 10, 30, clock=lambda: now)
    assert len(_jobs(engine, backlog.id)) == schedules_step.MAX_FIRES_PER_PASS
    assert len(_jobs(engine, other.id)) == 1
    assert out["capped"] == 1 and counting.fires == schedules_step.MAX_FIRES_PER_PASS + 1
    schedules_step.fire_due(counting, Budget(60), 10, 30, clock=lambda: now)
    assert len(_jobs(engine, backlog.id)) == 2 * schedules_step.MAX_FIRES_PER_PASS


def test_a_schedule_created_in_the_second_pass_waits_for_the_next_day() -> None:
    """Created at 01:10 EST, after 01:30 EDT passed: its first fire is the next day's 01:30,
    never an instant before its creation."""
    first = cron.check("30 1 * * *", NEW_YORK, FALL_BACK + timedelta(minutes=10), 60)
    assert first == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
