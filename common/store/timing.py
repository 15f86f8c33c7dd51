"""When a job may first run: `run_at` (RFC 3339 with an offset) or `delay_s`, never both.

The limit on how far ahead is stated on the date as written: `run_at`'s calendar date may be
at most MAX_RUN_AHEAD_DAYS days after today's UTC date. A rule on the written date (not on the
instant) is one a JSON Schema pattern can state exactly, so the OpenAPI document built today
says precisely which `run_at` values are accepted (`run_at_pattern`); the instant it names is
then at most a day (an offset) further out. A time in the past means now.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

from common.store.errors import InvalidInput

# RFC 3339 section 5.6 `date-time`, minus leap seconds (`:60`: Python has no such instant).
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12][0-9]|3[01])"
RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))$"
)
MAX_RUN_AT_CHARS = 64


def _up_to(value: str) -> str:
    """A regex for fixed-width digit strings <= `value` (same width)."""
    below = _below(value)
    return f"(?:{value}|{below})" if below else value


def _below(value: str) -> str | None:
    """A regex for fixed-width digit strings < `value`, or None if there are none."""
    parts = []
    for i, digit in enumerate(value):
        if digit != "0":
            low = "0" if digit == "1" else f"0-{int(digit) - 1}"
            parts.append(value[:i] + f"[{low}]" + "[0-9]" * (len(value) - i - 1))
    return "(?:" + "|".join(parts) + ")" if parts else None


def cutoff(today: date, max_days: int) -> date:
    return today + timedelta(days=max_days)


def run_at_pattern(today: date, max_days: int) -> str:
    """The JSON Schema pattern of the `run_at` values accepted while `today` is today (UTC):
    RFC 3339 date-times whose written date is on or before today + max_days."""
    last = cutoff(today, max_days)
    y, m, d = f"{last.year:04d}", f"{last.month:02d}", f"{last.day:02d}"
    dates = [f"{y}-{m}-{_up_to(d)}"]
    if (months := _below(m)) is not None:
        dates.append(f"{y}-{months}-{_DAY}")
    if (years := _below(y)) is not None:
        dates.append(f"{years}-{_MONTH}-{_DAY}")
    return f"^(?:{'|'.join(dates)})[Tt]{_TIME}{_OFFSET}$"


def parse_run_at(text: str) -> tuple[date, datetime | None]:
    """(the date as written, the instant in UTC). The instant is None when it lies before the
    first instant Python can hold (year 1 with a positive offset): it is in the past anyway."""
    match = RFC3339.fullmatch(text)
    if match is None:
        raise InvalidInput("run_at", "must be an RFC 3339 date-time with an offset, e.g. "
                                     "2026-12-01T09:30:00+01:00 or 2026-12-01T08:30:00Z")
    (year, month, day, hour, minute, second, frac, zulu, sign, oh, om) = match.groups()
    try:
        written = date(int(year), int(month), int(day))
        local = datetime(written.year, written.month, written.day, int(hour), int(minute),
                         int(second), int((frac or "0")[:6].ljust(6, "0")))
        if zulu:
            offset = timedelta(0)
        else:
            offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
            if abs(offset) >= timedelta(days=1):
                raise ValueError("offset")
    except ValueError:
        raise InvalidInput("run_at", "is not a valid date and time (RFC 3339)") from None
    try:
        instant = local.replace(tzinfo=timezone(offset)).astimezone(UTC)
    except OverflowError:
        if written.year == 1:
            return written, None  # before the year 1 in UTC: long past
        instant = datetime.max.replace(tzinfo=UTC)  # after 9999-12-31: refused as too far
    return written, instant


def resolve_not_before(
    run_at: str | None, delay_s: int | None, *, max_days: int, now: datetime
) -> tuple[datetime | None, float | None]:
    """(absolute not_before, or a delay for the database's clock); (None, None) means now.
    Raises InvalidInput naming the field for a time too far ahead."""
    if run_at is not None:
        written, instant = parse_run_at(run_at)
        last = cutoff(now.astimezone(UTC).date(), max_days)
        if written > last:
            raise InvalidInput("run_at", f"at most {max_days} days ahead: its date, as written, "
                                         f"must be on or before {last.isoformat()}")
        if instant is None or instant <= now:
            return None, None
        return instant, None
    if delay_s is not None:
        if delay_s > max_days * 86_400:
            raise InvalidInput("delay_s", f"at most {max_days * 86_400} seconds "
                                          f"({max_days} days)")
        return None, (float(delay_s) if delay_s > 0 else None)
    return None, None
