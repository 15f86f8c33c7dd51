"""Cron expressions and time zones for schedules, through cronsim (docs/scheduling.md).

cronsim follows Debian's cron, DST included: a time skipped by a spring-forward fires once just
after the jump, and a time repeated by a fall-back fires once. It is imported on first use only:
neither `submit` nor `process` pays for it at start-up.

Every fire time leaves here in UTC; the database stores and compares nothing else.
"""

from __future__ import annotations

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


def next_after(expr: str, zone_name: str, after: datetime) -> datetime:
    """The first fire time strictly after `after` (UTC)."""
    found = _step(_sim(expr, after.astimezone(zone(zone_name))))
    if found is None:
        raise InvalidInput("cron", "never fires")
    return found


def check(expr: str, zone_name: str, now: datetime, min_interval_s: int) -> datetime:
    """Validate a schedule's expression and zone against the minimum interval; returns its
    next fire time. The interval is checked over the next INTERVAL_SAMPLES fire times (and a
    DST change in them is counted in real seconds, as the jobs would be)."""
    tz = zone(zone_name)
    it = _sim(expr, now.astimezone(tz))
    first = previous = _step(it)
    if first is None:
        raise InvalidInput("cron", "never fires")
    for _ in range(INTERVAL_SAMPLES):
        current = _step(it)
        if current is None:
            break
        gap = (current - previous).total_seconds() if previous else min_interval_s
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
    """For a schedule due at `due` (<= now): (the fire time to fire, the next fire time after
    it, how many ticks this fire stands for beyond itself). 'all' fires every missed tick in
    turn; 'once' fires the latest due tick for the whole missed window."""
    tz = zone(zone_name)
    if catch_up == "all":
        return due, next_after(expr, zone_name, due), 0
    latest = _step(_sim(expr, (now + timedelta(seconds=1)).astimezone(tz), reverse=True))
    if latest is None or latest < due:
        latest = due
    following = next_after(expr, zone_name, max(latest, now))
    missed = 0
    if latest > due:
        it = _sim(expr, due.astimezone(tz))
        missed = 1  # `due` itself
        while missed < MISSED_COUNT_CAP and (tick := _step(it)) is not None and tick < latest:
            missed += 1
    return latest, following, missed
