"""Cron expressions and time zones for schedules, through cronsim (see README, "Schedules").

cronsim follows Debian's cron through DST changes. An expression whose minute and hour fields
both start with a value (a fixed time such as `30 1 * * *`) is read on the wall clock: a time
repeated by a fall-back fires once, at its first occurrence; a time skipped by a
spring-forward fires once, at the first instant after the gap (02:30 in New York on the
spring-forward day fires at 03:00 EDT). An expression whose minute or hour starts with `*`
(`*/15 * * * *`, `0 * * * *`) follows elapsed time: it fires in both passes of a repeated hour
and not at all in a skipped one, whose wall times do not exist.

cronsim started inside a repeated hour's second pass reads a fixed time on the naive wall
clock and answers its first occurrence, an instant *before* the start. `fire_times` therefore
passes over every answer that is not strictly after the one before: a schedule's next fire time
is always strictly after its last one, which the sweep relies on to move each schedule on.

It is imported on first use only: neither `submit` nor `process` pays for it at start-up.
Every fire time leaves here in UTC; the database stores and compares nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from common.store.cron_grammar import compiled
from common.store.errors import InvalidInput

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

MAX_CRON_CHARS = 120
MAX_ZONE_CHARS = 64
# How many fire times the minimum-interval check looks at (cronsim does ~50,000 a second).
INTERVAL_SAMPLES = 1500
# How many missed ticks a catch-up counts before it says "at least".
MISSED_COUNT_CAP = 1000
# How many of cronsim's answers at or before the start `fire_times` passes over before it gives
# up: a repeated span of wall time holds at most one answer a minute, and none is a day long.
BACKWARD_ANSWERS_CAP = 1500

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


def _sim(expr: str, start: datetime, *, reverse: bool = False) -> Any:
    from cronsim import CronSim, CronSimError

    if len(expr) > MAX_CRON_CHARS or compiled().fullmatch(expr) is None:
        raise InvalidInput("cron", "not a cron expression this API accepts: 5 fields (minute "
                                   "hour day-of-month month day-of-week) separated by one space, "
                                   "numbers without leading zeros, ranges upwards, upper-case "
                                   "names, e.g. '*/15 9-17 * * MON-FRI'")
    try:
        return CronSim(expr, start, reverse=reverse)
    except CronSimError as exc:
        raise InvalidInput("cron", f"{exc} in {expr!r}") from None
    except (ValueError, TypeError, IndexError, KeyError):
        raise InvalidInput("cron", f"cannot be parsed: {expr!r}") from None


def _step(it: Any) -> datetime | None:
    try:
        value: datetime = next(it)
    except (StopIteration, ValueError, OverflowError):
        return None
    return value.astimezone(UTC)


def fire_times(expr: str, zone_name: str, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in UTC, each strictly after the one before; ends
    when cronsim finds no more. An answer at or before the last one given (cronsim inside a
    repeated hour, see the module's docstring) is passed over, at most BACKWARD_ANSWERS_CAP in
    a row; past that, InvalidInput('cron') rather than a time that does not move on."""
    it = _sim(expr, after.astimezone(zone(zone_name)))
    last = after.astimezone(UTC)
    backward = 0
    while (found := _step(it)) is not None:
        if found <= last:
            backward += 1
            if backward > BACKWARD_ANSWERS_CAP:
                raise InvalidInput("cron", f"no fire time moves on after {last:%Y-%m-%d %H:%M} "
                                           "UTC")
            continue
        backward = 0
        last = found
        yield found


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
    latest = _step(_sim(expr, (now + timedelta(seconds=1)).astimezone(zone(zone_name)),
                        reverse=True))
    if latest is None or latest < due or latest > now:
        latest = due
    following = next_after(expr, zone_name, max(latest, now))
    missed = 0
    if latest > due:
        missed = 1  # `due` itself
        for tick in fire_times(expr, zone_name, due):
            if missed >= MISSED_COUNT_CAP or tick > latest:
                break
            missed += 1  # up to and including `latest`, the tick that fires
    return latest, following, missed
