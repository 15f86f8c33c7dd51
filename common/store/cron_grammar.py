"""The cron expressions the API accepts, as one regular expression, and what is wrong with one
it does not.

The OpenAPI document states the pattern as `cron`'s and the store checks it before cronsim
parses anything, so the two always agree: every expression the pattern admits is one cronsim
accepts (ranges run upwards, steps are 1-99, a day-of-month of only 30/31 cannot meet a month
too short for it), and it admits the forms cron users write: Debian cron's five fields, numbers
with or without one leading zero (`00`, `05`), month and day names in any case (`mon`, `Jan`),
`L` and `LW` in day-of-month, `5L` (last Friday) and `MON#2` (second Monday) in day-of-week,
fields separated by spaces or tabs. cronsim reads a little more, refused here to keep the
pattern one that a contract tester can generate from quickly (an unbounded repeat makes its
examples longer than the 120-character limit, a larger pattern makes each one slower):
several leading zeros (`007`), steps past 99, spaces around the expression, ranges that mix a
number and a name (`1-MAR`); and Unicode letters that upper-case to ASCII (U+017F, the long s,
for the s of `sun`), which no one means. `explain` says, for an expression the pattern refuses,
which field is wrong.
"""

from __future__ import annotations

import re
from functools import lru_cache

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
ZEROS = "0?"  # one leading zero: `05` (cronsim reads any number of them)
STEP = f"{ZEROS}[1-9][0-9]?"
GAP = "[ \t]+"
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
RULES = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT (0 and 7 are Sunday), 5L (the last Friday) or MON#2 "
                   "(the second Monday)",
}


def any_case(name: str) -> str:
    """`mon` as `[Mm][Oo][Nn]`: a JSON Schema pattern has no flags."""
    return "".join(f"[{c.upper()}{c.lower()}]" for c in name)


def num_range(lo: int, hi: int) -> str:
    """Decimal numbers in [lo, hi] (at most two significant digits), one leading zero
    allowed."""
    parts = []
    for tens in range(lo // 10, hi // 10 + 1):
        first = lo % 10 if tens == lo // 10 else 0
        last = hi % 10 if tens == hi // 10 else 9
        units = str(first) if first == last else f"[{first}-{last}]"
        parts.append((str(tens) if tens else "") + units)
    return f"{ZEROS}(?:" + "|".join(parts) + ")"


def _items(lo: int, hi: int, names: list[str] | None = None, first_name: int = 0,
           starts: tuple[int, int] | None = None) -> str:
    """Values and upward ranges of a field whose values run lo..hi, each with an optional
    step; with `starts`, only those whose first value lies in that span. A range is written in
    numbers (1-5) or in names (MON-FRI), not mixed (cronsim reads `1-MAR` too; no one writes
    it, and allowing it would double the pattern's size)."""
    first, last = starts or (lo, hi)
    named = [(any_case(name), first_name + i) for i, name in enumerate(names or [])]
    alts = [num_range(first, last)] + [n for n, v in named if first <= v <= last]
    for start in range(first, last + 1):
        alts.append(f"{ZEROS}{start}-{num_range(start, hi)}")
    for text, start in named:
        if first <= start <= last:
            ends = [n for n, v in named if v >= start]
            alts.append(f"{text}-(?:{'|'.join(ends)})")
    return f"(?:(?:{'|'.join(alts)})(?:/{STEP})?)"


def _list(first: str, item: str) -> str:
    return f"{first}(?:,{item})*"


@lru_cache(maxsize=1)
def _parts() -> dict[str, str]:
    star = f"\\*(?:/{STEP})?"
    minute_item = f"(?:{star}|{_items(0, 59)})"
    hour_item = f"(?:{star}|{_items(0, 23)})"
    month_item = f"(?:{star}|{_items(1, 12, MONTHS, 1)})"
    day_names = "|".join(any_case(d) for d in DAYS)
    dow_plain = (f"(?:{_items(0, 7, DAYS, 0)}|{ZEROS}[0-7][Ll]"
                 f"|(?:{ZEROS}[0-7]|{day_names})#{ZEROS}[1-5])")
    dow_item = f"(?:{star}|{dow_plain})"
    # cronsim refuses a day-of-month whose every value is 30 or 31 when the weekday does not
    # widen it (the weekday field starts with `*`) and no month in the field is long enough:
    # such days go only with month `*`, or with a weekday field that does not start with `*`.
    low_day = f"(?:{star}|[Ll]|[Ll][Ww]|{_items(1, 31, starts=(1, 29))})"
    high_day = _items(1, 31, starts=(30, 31))
    any_day = f"(?:{low_day}|{high_day})"
    return {
        "minute": _list(minute_item, minute_item),
        "hour": _list(hour_item, hour_item),
        "day-of-month": _list(any_day, any_day),
        "month": _list(month_item, month_item),
        "day-of-week": _list(dow_item, dow_item),
        "day_with_low": f"(?:{high_day},)*{_list(low_day, any_day)}",
        "day_high_only": _list(high_day, high_day),
        "dow_not_star": _list(dow_plain, dow_item),
    }


@lru_cache(maxsize=1)
def cron_pattern() -> str:
    p = _parts()
    month, dow = p["month"], p["day-of-week"]
    return (f"^{p['minute']}{GAP}{p['hour']}{GAP}"
            f"(?:{p['day_with_low']}{GAP}{month}{GAP}{dow}"
            f"|{p['day_high_only']}{GAP}\\*{GAP}{dow}"
            f"|{p['day_high_only']}{GAP}{month}{GAP}{p['dow_not_star']})$")


@lru_cache(maxsize=1)
def compiled() -> re.Pattern[str]:
    return re.compile(cron_pattern())


@lru_cache(maxsize=1)
def _field_patterns() -> dict[str, re.Pattern[str]]:
    return {name: re.compile(_parts()[name]) for name in FIELDS}


def explain(expr: str) -> str:
    """Why the pattern refuses `expr`, naming the field."""
    if re.search(r"[^ \t0-9A-Za-z*,/#-]", expr):
        return ("may contain only ASCII digits, month and day names, the characters * , - / "
                "# and spaces or tabs between the fields")
    if expr != expr.strip(" \t"):
        return "has spaces or tabs around it; write the five fields alone"
    fields = expr.split()
    if len(fields) != len(FIELDS):
        return (f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; a cron expression "
                f"has 5: {' '.join(FIELDS)}")
    for name, value in zip(FIELDS, fields, strict=True):
        if _field_patterns()[name].fullmatch(value) is None:
            return (f"the {name} field {value!r} is not valid: values {RULES[name]}; a list "
                    "(1,15), an upward range (1-5), a step of 1-99 (*/15 or 1-30/5), or *; "
                    "at most one leading zero")
    return (f"the day-of-month field {fields[2]!r} has only days no month in the month field "
            f"{fields[3]!r} reaches (e.g. 31 in April)")
