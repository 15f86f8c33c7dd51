"""The cron expressions the API accepts, as one regular expression.

The OpenAPI document states it as `cron`'s pattern and the store checks it before cronsim
parses anything, so the two always agree: every expression the pattern admits is one cronsim
accepts (ranges run upwards, steps are 1-99, a day-of-month of only 30/31 cannot meet a month
too short for it), and nothing else is taken. The grammar is Debian cron's five fields, with
numbers written without leading zeros, upper-case names (JAN-DEC, SUN-SAT), `L` and `LW` in
day-of-month, `5L` (last Friday) and `MON#2` (second Monday) in day-of-week, fields separated
by one space.
"""

from __future__ import annotations

import re
from functools import lru_cache

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
STEP = "[1-9][0-9]?"


def num_range(lo: int, hi: int) -> str:
    """Canonical decimal numbers in [lo, hi] (at most two digits)."""
    parts = []
    for tens in range(lo // 10, hi // 10 + 1):
        first = lo % 10 if tens == lo // 10 else 0
        last = hi % 10 if tens == hi // 10 else 9
        units = str(first) if first == last else f"[{first}-{last}]"
        parts.append((str(tens) if tens else "") + units)
    return "(?:" + "|".join(parts) + ")"


def _tokens(lo: int, hi: int, names: list[str], first_name: int) -> list[tuple[str, int]]:
    """(text, value) for every way to write one value: numbers, then names."""
    out = [(str(v), v) for v in range(lo, hi + 1)]
    return out + [(name, first_name + i) for i, name in enumerate(names)]


def _items(lo: int, hi: int, names: list[str] | None = None, first_name: int = 0,
           starts: tuple[int, int] | None = None) -> str:
    """Values and upward ranges of a field whose values run lo..hi, each with an optional
    step; with `starts`, only those whose first value lies in that span."""
    first, last = starts or (lo, hi)
    tokens = _tokens(lo, hi, names or [], first_name)
    named = tokens[hi - lo + 1:]
    alts = [num_range(first, last)] + [n for n, v in named if first <= v <= last]
    for text, start in tokens:
        if first <= start <= last:
            ends = [num_range(start, hi)] + [n for n, v in named if v >= start]
            alts.append(f"{text}-(?:{'|'.join(ends)})")
    return f"(?:(?:{'|'.join(alts)})(?:/{STEP})?)"


def _list(first: str, item: str) -> str:
    return f"{first}(?:,{item})*"


@lru_cache(maxsize=1)
def cron_pattern() -> str:
    star = f"\\*(?:/{STEP})?"
    minute_item = f"(?:{star}|{_items(0, 59)})"
    hour_item = f"(?:{star}|{_items(0, 23)})"
    month_item = f"(?:{star}|{_items(1, 12, MONTHS, 1)})"
    day_names = "|".join(DAYS)
    dow_plain = f"(?:{_items(0, 7, DAYS, 0)}|[0-7]L|(?:[0-7]|{day_names})#[1-5])"
    dow_item = f"(?:{star}|{dow_plain})"
    # cronsim refuses a day-of-month whose every value is 30 or 31 when the weekday does not
    # widen it (the weekday field starts with `*`) and no month in the field is long enough:
    # such days go only with month `*`, or with a weekday field that does not start with `*`.
    low_day = f"(?:{star}|L|LW|{_items(1, 31, starts=(1, 29))})"
    high_day = _items(1, 31, starts=(30, 31))
    any_day = f"(?:{low_day}|{high_day})"
    day_with_low = f"(?:{high_day},)*{_list(low_day, any_day)}"
    day_high_only = _list(high_day, high_day)
    minute, hour = _list(minute_item, minute_item), _list(hour_item, hour_item)
    month, dow = _list(month_item, month_item), _list(dow_item, dow_item)
    dow_not_star = _list(dow_plain, dow_item)
    return (f"^{minute} {hour} (?:{day_with_low} {month} {dow}|{day_high_only} \\* {dow}|"
            f"{day_high_only} {month} {dow_not_star})$")


@lru_cache(maxsize=1)
def compiled() -> re.Pattern[str]:
    return re.compile(cron_pattern())
