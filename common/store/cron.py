"""Cron expressions and time zones for schedules (docs/scheduling.md).

cronsim matches the expression against wall-clock times; this module turns wall times into
instants, so the DST rule is ours and stated here (cronsim's own zone handling is not used: in
a repeated hour it answers a fixed time's first occurrence, an instant before the start, and in
Lord Howe's half-hour fall-back it skips the next day's matches of an elapsed-time expression).

- A fixed time (the minute and hour fields both start with a value, `30 1 * * *`) is read on
  the wall clock, as Debian's cron does: a time repeated by a fall-back fires once, at its
  first occurrence; a time skipped by a spring-forward fires once, at the first instant after
  the gap (02:30 in New York on the spring-forward day fires at 03:00 EDT), and a fixed time
  that falls on that instant too fires once with it.
- An elapsed-time expression (the minute or hour field starts with `*`: `*/15 * * * *`,
  `0 * * * *`, `*/20 1 * * *`) fires at every instant whose wall time matches: in both passes
  of a repeated hour, and not at all in a skipped one, whose wall times do not exist.

Every fire time is strictly after the one before and after the start (`fire_times`), in every
zone: the sweep relies on it to move each schedule on. It is imported on first use only:
neither `submit` nor `process` pays for it at start-up. Every fire time leaves here in UTC; the
database stores and compares nothing else.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from common.store.cron_grammar import compiled, explain
from common.store.errors import InvalidInput

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

MAX_CRON_CHARS = 120
MAX_ZONE_CHARS = 64
# How many fire times the minimum-interval check looks at (cronsim does ~50,000 a second).
INTERVAL_SAMPLES = 1500
# How many missed ticks a catch-up counts before it says "at least".
MISSED_COUNT_CAP = 1000
# How many instants at or before the last one `fire_times` passes over in a row before it gives
# up: the walk starts at most the zone's offset change (hours) before the start, one wall time
# a minute at most.
BACKWARD_ANSWERS_CAP = 1500
# How far a fixed time inside a spring-forward gap is moved on, at most, to the gap's end.
GAP_MINUTES_CAP = 24 * 60

CatchUp = Literal["once", "all"]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def zone_names() -> list[str]:
    """Every zone name this instance accepts, for the OpenAPI document."""
    return sorted(_zones())


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, else InvalidInput('timezone'). Only names in the zone database:
    never a path, never a POSIX TZ string."""
    from zoneinfo import ZoneInfo

    if not isinstance(name, str) or name not in _zones():
        raise InvalidInput("timezone", "not an IANA time zone name (e.g. Europe/Riga, UTC)")
    return ZoneInfo(name)


def _sim(expr: str, start: datetime) -> Any:
    from cronsim import CronSim, CronSimError

    if len(expr) > MAX_CRON_CHARS:
        raise InvalidInput("cron", f"longer than {MAX_CRON_CHARS} characters")
    if compiled().fullmatch(expr) is None:
        raise InvalidInput("cron", explain(expr))
    try:
        return CronSim(expr, start)
    except CronSimError as exc:
        raise InvalidInput("cron", f"{exc} in {expr!r}") from None
    except (ValueError, TypeError, IndexError, KeyError):
        raise InvalidInput("cron", f"cannot be parsed: {expr!r}") from None


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def _fixed(expr: str) -> bool:
    """Debian's rule, as cronsim states it: a fixed time unless minute or hour starts with *."""
    minute, hour = expr.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


@lru_cache(maxsize=4096)
def _swing(zone_name: str, hour: int) -> timedelta:
    """How far the zone's UTC offset moves within two days either side of the given hour (in
    hours since the epoch): how far apart in wall time two instants can be out of order."""
    tz = zone(zone_name)
    centre = datetime.fromtimestamp(hour * 3600, UTC)
    offsets = [(centre + timedelta(hours=h)).astimezone(tz).utcoffset() or timedelta(0)
               for h in range(-50, 51)]
    return max(offsets) - min(offsets)


def _swing_at(zone_name: str, instant: datetime) -> timedelta:
    return _swing(zone_name, int(instant.timestamp() // 3600))


def _instants(naive: datetime, tz: ZoneInfo, fixed: bool) -> list[datetime]:
    """The instants a matching wall time stands for, by the module's rule."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    real = [t for t in (first, second) if _wall(t, tz) == naive]
    if real:
        return [min(real)] if fixed else sorted(set(real))
    if not fixed:  # in a gap: that wall time does not exist
        return []
    shifted = naive
    for _ in range(GAP_MINUTES_CAP):  # the first minute after the gap
        shifted += timedelta(minutes=1)
        instant = shifted.replace(tzinfo=tz).astimezone(UTC)
        if _wall(instant, tz) == shifted:
            return [instant]
    return []


def _matches(expr: str, start: datetime) -> Iterator[datetime]:
    """The wall times after `start` (naive) that match, in order: cronsim on naive times, plain
    calendar arithmetic."""
    it = _sim(expr, start)
    while True:
        try:
            value: datetime = next(it)
        except (StopIteration, ValueError, OverflowError):
            return
        yield value


def fire_times(expr: str, zone_name: str, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in UTC, each strictly after the one before; ends
    when the expression has no more. Wall times are walked in order and each is turned into
    its instants; near an offset change those can come out of order by at most the change, so
    an instant is given only once the walk is that far past its wall time. The walk starts
    that far before `after` too, so a repeated span `after` lies in is seen whole."""
    tz = zone(zone_name)
    fixed = _fixed(expr) if compiled().fullmatch(expr) else False
    last = after.astimezone(UTC)
    start = _wall(last, tz) - _swing_at(zone_name, last) - timedelta(minutes=1)
    pending: list[tuple[datetime, datetime]] = []  # (instant, its wall time), a heap
    passed = 0

    def ready(wall: datetime | None) -> Iterator[datetime]:
        nonlocal last, passed
        while pending and (wall is None or wall - pending[0][1]
                           >= _swing_at(zone_name, pending[0][0])):
            instant = heapq.heappop(pending)[0]
            if instant <= last:  # before the start, or the same instant again (a gap)
                passed += 1
                if passed > BACKWARD_ANSWERS_CAP:
                    raise InvalidInput("cron", "no fire time moves on after "
                                               f"{last:%Y-%m-%d %H:%M} UTC")
                continue
            passed = 0
            last = instant
            yield instant

    for wall in _matches(expr, start):
        for instant in _instants(wall, tz, fixed):
            heapq.heappush(pending, (instant, wall))
        yield from ready(wall)
    yield from ready(None)


def next_after(expr: str, zone_name: str, after: datetime) -> datetime:
    """The first fire time strictly after `after` (UTC)."""
    found = next(fire_times(expr, zone_name, after), None)
    if found is None:
        raise InvalidInput("cron", "never fires")
    return found


def check(expr: str, zone_name: str, now: datetime, min_interval_s: int) -> datetime:
    """Validate a schedule's expression and zone against the minimum interval; returns its
    next fire time. The interval is checked over the next INTERVAL_SAMPLES fire times (and a
    DST change in them is counted in real seconds, as the jobs would be)."""
    it = fire_times(expr, zone_name, now)
    first = next(it, None)
    if first is None:
        raise InvalidInput("cron", "never fires")
    previous = first
    for _ in range(INTERVAL_SAMPLES):
        current = next(it, None)
        if current is None:
            break
        gap = (current - previous).total_seconds()
        if gap < min_interval_s:
            raise InvalidInput(
                "cron", f"fires {gap:g} s apart at {previous:%Y-%m-%d %H:%M} UTC; the minimum "
                        f"interval between fires is {min_interval_s} s"
            )
        previous = current
    return first


def _latest(expr: str, zone_name: str, due: datetime, now: datetime) -> datetime:
    """The last fire time at or before `now`, and not before `due`: looked for in the last
    hour, day, month, year, then since `due`, so its cost follows the ticks near now."""
    for back in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367),
                 None):
        since = now - back if back is not None else due
        clipped = since <= due
        latest = None
        for tick in fire_times(expr, zone_name, due - timedelta(microseconds=1)
                               if clipped else since):
            if tick > now:
                break
            latest = tick
        if latest is not None or clipped:
            return max(latest or due, due)
    return due


def plan_fire(
    expr: str, zone_name: str, due: datetime, now: datetime, catch_up: CatchUp
) -> tuple[datetime, datetime, int]:
    """For a schedule due at `due` (<= now): (the fire time to fire, the next fire time,
    strictly after both the fire time and `due`, and the missed count for the fire's event).
    'all' fires every missed tick in turn (missed 0 each); 'once' fires the latest due tick
    for the whole missed window, and its missed count is every tick the fire stands for, the
    fired one included (0 when it stands for its own tick only), capped at MISSED_COUNT_CAP."""
    if catch_up == "all":
        return due, next_after(expr, zone_name, due), 0
    latest = _latest(expr, zone_name, due, now)
    following = next_after(expr, zone_name, max(latest, now))
    missed = 0
    if latest > due:
        missed = 1  # `due` itself
        for tick in fire_times(expr, zone_name, due):
            if missed >= MISSED_COUNT_CAP or tick > latest:
                break
            missed += 1  # up to and including `latest`, the tick that fires
    return latest, following, missed
