"""Timestamps in plain log lines: where a line's date is and what time it names.

Fail2Ban finds the date in a line, cuts it out and matches its regexes against the rest, so
where the date is found decides what the regexes see. `DateDetector` does that with a
filter's datepattern (its templates are built by `parsers.date_templates`) or, without one,
with the common formats of log files, and reads the time the date names.

No clock: a date without a year or a day is completed from the `now` the caller passes, as
`parsers.epochs` does for every reader; a date without a zone is read in the detector's `tz`
(None: the local zone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from parsers.date_templates import (
    COMMON_FORMATS,
    LINE_BEGIN,
    MONTH_NAMES,
    MONTHS,
    DateError,
    DateTemplate,
    template,
    unbound,
)
from parsers.epochs import epoch_of, is_ahead, year_of

__all__ = ["DateDetector", "DateError", "DateMatch"]

# Offsets in minutes of the zone abbreviations a %Z may name (fixed: CET never becomes CEST).
# Abbreviations that stand for different zones in different places (IST: India, Ireland or
# Israel; BST: British summer or Bangladesh; MET) are left out: their time is unknown.
_ZONES = {
    "Z": 0, "UT": 0, "UTC": 0, "GMT": 0, "WET": 0, "WEST": 60, "CET": 60,
    "CEST": 120, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180, "SGT": 480,
    "HKT": 480, "AWST": 480, "JST": 540, "KST": 540, "ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660,
    "NZST": 720, "NZDT": 780, "HST": -600, "AKST": -540, "AKDT": -480, "PST": -480, "PDT": -420,
    "MST": -420, "MDT": -360, "CST": -360, "CDT": -300, "EST": -300, "EDT": -240, "AST": -240,
    "ADT": -180, "NST": -210, "NDT": -150, "BRT": -180, "ART": -180,
}  # fmt: skip
_ZONE_WITH_OFFSET = re.compile(r"([A-Z]*)([+-])(\d\d):?(\d\d)?$")
_TIME_CACHE_SIZE = 4096
_DATE_PLACEHOLDER = re.compile(r"(?<!\\)\{DATE\}", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class DateMatch:
    start: int  # the date text is line[start:end]
    end: int
    time: float | None  # None: no valid date (or an empty one, where the pattern allows none)


class DateDetector:
    """Finds the date in a line with a filter's datepattern (None: the common formats)."""

    def __init__(self, datepattern: str | None = None, tz: tzinfo | None = None) -> None:
        self.none = False
        self.tz = tz
        # The times of date texts already read: a log repeats each second many times.
        self._times: dict[tuple[str, str, float], float | None] = {}
        lines = [line.strip() for line in (datepattern or "").split("\n") if line.strip()]
        self.templates: list[DateTemplate] = []
        if not lines:
            self._add_common(anchored_only=False)
        for line in lines:
            key = line if "%" in line else line.upper()
            if key in (LINE_BEGIN, "{DEFAULT}"):
                self._add_common(anchored_only=key == LINE_BEGIN)
            elif _DATE_PLACEHOLDER.search(key):
                self._add_at_placeholder(line)
            elif key == "{NONE}":
                self.none = True
            else:
                self._add(template(line))

    def _add(self, found: DateTemplate) -> None:
        if all(existing.name != found.name for existing in self.templates):
            self.templates.append(found)

    def _add_common(self, anchored_only: bool) -> None:
        # Each format that is not anchored already is first tried at the start of the line.
        firsts, rest = [], []
        for pattern in COMMON_FORMATS:
            common = template(pattern)
            if not common.anchored and not pattern.startswith("^"):
                firsts.append(template(LINE_BEGIN + pattern))
            rest.append(common)
        for found in firsts + rest:
            if found.anchored or not anchored_only:
                self._add(found)

    def _add_at_placeholder(self, pattern: str) -> None:
        for common in COMMON_FORMATS:
            if common in ("EPOCH", "TAI64N"):
                continue  # only the directive formats take the place of {DATE}
            text = unbound(common)
            self._add(template(_DATE_PLACEHOLDER.sub(lambda m, text=text: text, pattern)))

    def find(self, line: str, now: float) -> DateMatch | None:
        """Where the line's date is and its time (`now` completes a date without a year)."""
        if self.none:
            return None
        nearest: tuple[re.Match[str], DateTemplate] | None = None
        for candidate in self.templates:
            m = candidate.regex.search(line)
            if m is None:
                continue
            # A match at the very start wins; one further in may be a date-like part of the
            # message (an attacker's text), so the nearest to the start of all is taken.
            if candidate.anchored or m.start() <= 1:
                return DateMatch(m.start(1), m.end(1), self._time(m, candidate, now))
            if nearest is None or m.start() < nearest[0].start():
                nearest = (m, candidate)
        if nearest is None:
            return None
        m, candidate = nearest
        return DateMatch(m.start(1), m.end(1), self._time(m, candidate, now))

    def _time(self, m: re.Match[str], found: DateTemplate, now: float) -> float | None:
        if m.start(1) == m.end(1):
            return None  # a pattern that allows a line without a date found none
        key = (found.name, m.group(0), now)
        if key not in self._times:
            if len(self._times) >= _TIME_CACHE_SIZE:
                self._times.clear()
            self._times[key] = _time_of(m, found, now, self.tz)
        return self._times[key]


def _time_of(m: re.Match[str], found: DateTemplate, now: float, tz: tzinfo | None) -> float | None:
    if found.kind == "tai64n":
        # TAI64N: "@4000000" then the seconds in hex, then nanoseconds.
        return float(int(m.group(1)[2:17], 16))
    if found.kind in ("epoch", "long-epoch"):
        text = m.group(found.value_group)
        value = float(text)
        if found.kind == "long-epoch" and len(text) >= 13:
            value /= 1_000_000 if len(text) >= 16 and "." not in text else 1000
        return value
    try:
        return _time_from_fields(m.groupdict(), now, tz)
    except (ValueError, OverflowError, KeyError):
        return None


def _zone_offset(text: str) -> int:
    """Minutes east of UTC for "Z", "UTC", "+0200", "+02:00", "CET", "CET+1"..."""
    if text in _ZONES:
        return _ZONES[text]
    m = _ZONE_WITH_OFFSET.match(text)
    if m is None:
        raise KeyError(text)
    abbreviation, sign, hours, minutes = m.groups()
    offset = int(hours) * 60 + int(minutes or 0)
    base = _ZONES[abbreviation] if abbreviation else 0
    return base + (-offset if sign == "-" else offset)


def _time_from_fields(fields: dict[str, str | None], now: float, tz: tzinfo | None) -> float:
    """The epoch the directives' groups name. Raises ValueError (or KeyError, for an unknown
    zone) when they name no time."""
    value = {key: text for key, text in fields.items() if text is not None}
    zone = value.get("z") or value.get("Z")
    if zone is not None:
        tz = timezone(timedelta(minutes=_zone_offset(zone.upper())))
    year = month = day = None
    if "Y" in value:
        year = int(value["Y"])
    elif "y" in value:
        year = 2000 + int(value["y"])
    if "m" in value:
        month = int(value["m"])
    elif "b" in value:
        month = MONTHS.index(value["b"].lower()[:3]) + 1
    elif "B" in value:
        month = MONTH_NAMES.index(value["B"].lower()) + 1
    if "d" in value:
        day = int(value["d"])
    hour = int(value.get("H", 0))
    if "I" in value:
        hour = int(value["I"]) % 12 + (12 if value.get("p", "").lower() == "pm" else 0)
    clock = (hour, int(value.get("M", 0)), int(value.get("S", 0)))
    guessed_year = year is None
    if guessed_year:
        year = year_of(now, tz)
        if year is None:
            raise ValueError("now is out of range")
    if (month is None or day is None) and "j" in value:
        ordinal = datetime(year, 1, 1) + timedelta(days=int(value["j"]) - 1)
        month, day = ordinal.month, ordinal.day
    if month is None and day is None:
        # A time of day alone is today's, or yesterday's when later than now.
        today = datetime.fromtimestamp(now, tz)
        found = epoch_of(year if not guessed_year else today.year, today.month, today.day, *clock, tz)
        if found is not None and found > now:
            yesterday = today - timedelta(days=1)
            found = epoch_of(year if not guessed_year else yesterday.year, yesterday.month, yesterday.day,
                             *clock, tz)
    elif month is None or day is None:
        raise ValueError("a date needs a month and a day")
    else:
        found = epoch_of(year, month, day, *clock, tz)
        if guessed_year and (found is None or is_ahead(found, now)):
            found = epoch_of(year - 1, month, day, *clock, tz)  # "Dec 31" read in January
    if found is None:
        raise ValueError("no such date")
    return found
