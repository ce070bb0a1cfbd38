"""Timestamps in plain log lines: where a line's date is and what time it names.

Fail2Ban finds the date in a line, cuts it out and matches its regexes against the rest, so
where the date is found decides what the regexes see. `DateDetector` does that with either
the common formats of log files (syslog, ISO 8601, Apache, epoch, MySQL, TAI64N...) or a
filter's `datepattern`: strptime-style directives (`%Y-%m-%d %H:%M:%S`) inside a regex, with
the forms `{^LN-BEG}` (at the start of the line), `{UNB}` (no word boundaries), `{DATE}` (any
common format, at that place), `{EPOCH}`/`{LEPOCH}`, `EPOCH` and `TAI64N`, and `{NONE}`.

No clock: a date without a year or a day is completed from the `now` the caller passes.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
                "october", "november", "december")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ZONE_ABBREVIATION = r"[A-Z](?:[A-Z]{2,4})?"
_OFFSET = r"[+-][01]\d(?::?\d\d)?"


def _names(values: tuple[str, ...]) -> str:
    return "|".join(sorted(values, key=len, reverse=True))


# What each directive matches; the group name says what it sets. The "Ex" forms are exact
# (two digits where the plain form also takes one).
DIRECTIVES = {
    "a": rf"(?P<a>{_names(_DAYS)})", "A": rf"(?P<A>{_names(_DAY_NAMES)})",
    "b": rf"(?P<b>{_names(_MONTHS)})", "B": rf"(?P<B>{_names(_MONTH_NAMES)})",
    "p": r"(?P<p>am|pm)",
    "d": r"(?P<d>3[01]|[12]\d|[0 ]?[1-9])", "m": r"(?P<m>1[0-2]|0?[1-9])",
    "Y": r"(?P<Y>\d{4})", "y": r"(?P<y>\d\d)",
    "H": r"(?P<H>2[0-3]|[01]?\d)", "k": r" ?(?P<H>2[0-9]|[01]?\d)",
    "I": r"(?P<I>1[0-2]|0?[1-9])", "l": r" ?(?P<I>1[0-2]|\d)",
    "M": r"(?P<M>[0-5]?\d)", "S": r"(?P<S>6[01]|[0-5]?\d)", "f": r"(?P<f>\d{1,6})",
    "j": r"(?P<j>36[0-6]|3[0-5]\d|[12]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
    "w": r"(?P<w>[0-6])", "U": r"(?P<U>5[0-3]|[0-4]\d|\d)", "W": r"(?P<W>5[0-3]|[0-4]\d|\d)",
    "z": rf"(?P<z>Z|UTC|GMT|{_OFFSET})", "Z": r"(?P<Z>Z|[A-Z]{3,5})",
    "ExZ": rf"(?P<Z>{_ZONE_ABBREVIATION})",
    "Exz": rf"(?P<z>(?:{_ZONE_ABBREVIATION})?{_OFFSET}|{_ZONE_ABBREVIATION})",
    "Exd": r"(?P<d>3[01]|[12]\d|0[1-9])", "Exm": r"(?P<m>1[0-2]|0[1-9])",
    "ExH": r"(?P<H>2[0-3]|[01]\d)", "Exk": r" ?(?P<H>2[0-3]|[01]?\d)", "Exl": r" ?(?P<I>1[0-2]|\d)",
    "ExM": r"(?P<M>[0-5]\d)", "ExS": r"(?P<S>6[01]|[0-5]\d)",
    # Years of this century only: an attacker's digits elsewhere in a line are less likely one.
    "ExY": r"(?P<Y>20\d\d)", "Exy": r"(?P<y>\d\d)",
}  # fmt: skip
# Locale-dependent composites, in the C locale.
_COMPOSITES = {"c": "%a %b %d %H:%M:%S %Y", "x": "%m/%d/%y", "X": "%H:%M:%S"}
_DIRECTIVE = re.compile(r"%(%|Ex[A-Za-z]|[A-Za-z])")
_NAME_DIRECTIVES = re.compile(r"(?<!%)%[aAbBpc]")

# Offsets in minutes of the zone abbreviations a %Z may name (fixed: CET never becomes CEST).
_ZONES = {
    "Z": 0, "UT": 0, "UTC": 0, "GMT": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "MET": 60,
    "CEST": 120, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180, "IST": 330, "SGT": 480,
    "HKT": 480, "AWST": 480, "JST": 540, "KST": 540, "ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660,
    "NZST": 720, "NZDT": 780, "HST": -600, "AKST": -540, "AKDT": -480, "PST": -480, "PDT": -420,
    "MST": -420, "MDT": -360, "CST": -360, "CDT": -300, "EST": -300, "EDT": -240, "AST": -240,
    "ADT": -180, "NST": -210, "NDT": -150, "BRT": -180, "ART": -180,
}  # fmt: skip
_ZONE_WITH_OFFSET = re.compile(r"([A-Z]*)([+-])(\d\d):?(\d\d)?$")

# The formats tried when a filter sets no datepattern, in this order.
COMMON_FORMATS = (
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",  # ISO 8601 and kin
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",  # syslog, asctime, Apache error log
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",  # Apache access log, BIND
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",  # MySQL
    r"%b %d, %ExY %I:%M:%S %p",  # Tomcat
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",  # compact ISO 8601
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
)

_TIME_CACHE_SIZE = 4096
_LINE_BEGIN = "{^LN-BEG}"
_UNBOUND = "{UNB}"
_EPOCH_PLACEHOLDER = re.compile(r"(?<!\\)\{(L?)EPOCH\}", re.IGNORECASE)
_DATE_PLACEHOLDER = re.compile(r"(?<!\\)\{DATE\}", re.IGNORECASE)
_EPOCH = r"\d{10,11}\b(?:\.\d{3,6})?"
_LONG_EPOCH = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"
# Patterns that need no word boundary in front or behind (they are anchored or say so).
_NO_BOUND_BEFORE = re.compile(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)")
_NO_BOUND_AFTER = re.compile(r"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$")
_STARS = re.compile(r"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$")
_CAPTURING_GROUP = re.compile(r"(?<!\(\?)(?<!\\)\((?!\?)")
_ANCHORED_START = re.compile(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))")
_ANCHORED_END = re.compile(r"(?<![\\|])(?:\$\)?)$")
_GLOBAL_FLAGS = re.compile(r"\(\?[a-z]+\)")
_SPLIT_GROUP = re.compile(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$", re.DOTALL)


class DateError(ValueError):
    """A datepattern that cannot be used."""


@dataclass(slots=True, frozen=True)
class DateTemplate:
    """One way of finding a date: group 1 of `regex` is the date text that is cut out."""

    name: str
    regex: re.Pattern[str]
    anchored: bool  # to the start or the end of the line: its match needs no comparing
    kind: str = "pattern"  # "pattern", "epoch", "long-epoch" or "tai64n"
    value_group: int = 1  # the group holding the number of an epoch


def _expand_directives(pattern: str) -> str:
    def directive(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "%":
            return "%"
        if key in _COMPOSITES:
            return _expand_directives(_COMPOSITES[key])
        if key not in DIRECTIVES:
            raise DateError(f"unknown date directive %{key}")
        return DIRECTIVES[key]

    return _DIRECTIVE.sub(directive, pattern)


def _bounded(regex: str, before: bool | str, after: bool) -> tuple[str, bool]:
    """The regex with Fail2Ban's boundaries: a word boundary (or, with before="start", the
    start of the line, after up to two non-word characters) and a word boundary behind.
    Returns the regex and whether it is anchored to the start or end of the line."""
    regex = regex.strip()
    flags = _GLOBAL_FLAGS.search(regex)
    if flags is not None:
        regex = regex[:flags.start()] + regex[flags.end():]
    bound_before = before if before and not _NO_BOUND_BEFORE.search(regex) else False
    bound_after = after and not _NO_BOUND_AFTER.search(regex)
    if not _CAPTURING_GROUP.search(regex):
        # The cut-out is group 1: without a group of its own, the whole date is it.
        regex = _SPLIT_GROUP.sub(r"\1(\2)\3", regex)
    anchored = False
    if bound_before == "start":
        regex = r"^(?:\W{0,2})?" + regex
        anchored = True
    elif bound_before:
        regex = r"(?=^|\b|\W)" + regex
    if bound_after:
        regex += r"(?=\b|\W|$)"
    anchored = anchored or bool(_ANCHORED_START.search(regex)) or bool(_ANCHORED_END.search(regex))
    regex = _STARS.sub(lambda m: m.group().replace("**", ""), regex)
    if flags is not None:
        regex = flags.group() + regex
    return regex, anchored


def _compile(name: str, regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as error:
        raise DateError(f"datepattern {name!r} does not compile: {error}") from None


def _epoch_template(name: str, line_begin: bool, long: bool) -> DateTemplate:
    number = _LONG_EPOCH if long else _EPOCH
    kind = "long-epoch" if long else "epoch"
    if line_begin:
        regex, _ = _bounded(rf"((?P<square>(?<=^\[))?{number})(?(square)(?=\]))", "start", True)
        return DateTemplate(name, _compile(name, regex), True, kind)
    # At the start of the line, in "[...]" there, or as an audit record's "audit(EPOCH:N)".
    regex, _ = _bounded(rf"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))"
                        rf"{number})(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))", False, True)
    return DateTemplate(name, _compile(name, regex), False, kind)


def template(pattern: str) -> DateTemplate:
    """The template for one datepattern line."""
    key = pattern if "%" in pattern else pattern.upper()
    if "EPOCH" in key:
        placeholder = _EPOCH_PLACEHOLDER.search(pattern)
        if placeholder is not None:
            long = bool(placeholder.group(1))
            number = _LONG_EPOCH if long else _EPOCH
            body = _EPOCH_PLACEHOLDER.sub(lambda m: f"({number})", pattern)
            regex, anchored = _bounded(f"({body})", True, True)
            return DateTemplate(pattern, _compile(pattern, regex), anchored,
                                "long-epoch" if long else "epoch", value_group=2)
        for long in (False, True):
            word = "LEPOCH" if long else "EPOCH"
            if key == word:
                return _epoch_template(pattern, False, long)
            if key in (_LINE_BEGIN + word, "^" + word):
                return _epoch_template(pattern, True, long)
    if key in ("TAI64N", _LINE_BEGIN + "TAI64N", "^TAI64N"):
        regex, anchored = _bounded("@[0-9a-f]{24}", "start" if key != "TAI64N" else False, True)
        return DateTemplate(pattern, _compile(pattern, regex), anchored, "tai64n")
    before: bool | str = True
    after = True
    body = pattern
    if body.startswith(_UNBOUND):
        body, before, after = body[len(_UNBOUND):], False, False
    if before and body.startswith(_LINE_BEGIN):
        body, before = body[len(_LINE_BEGIN):], "start"
    regex = _expand_directives(body)
    if _NAME_DIRECTIVES.search(body):
        regex = "(?i)" + regex  # month and day names in any case
    regex, anchored = _bounded(regex, before, after)
    return DateTemplate(pattern, _compile(pattern, regex), anchored)


def _unbound(pattern: str) -> str:
    for prefix in (_UNBOUND, _LINE_BEGIN):
        if pattern.startswith(prefix):
            pattern = pattern[len(prefix):]
    return pattern


@dataclass(slots=True, frozen=True)
class DateMatch:
    start: int  # the date text is line[start:end]
    end: int
    time: float | None  # None: no valid date (or an empty one, where the pattern allows none)


class DateDetector:
    """Finds the date in a line with a filter's datepattern (None: the common formats)."""

    def __init__(self, datepattern: str | None = None) -> None:
        self.none = False
        # The times of date texts already read: a log repeats each second many times.
        self._times: dict[tuple[str, str, float], float | None] = {}
        lines = [line.strip() for line in (datepattern or "").split("\n") if line.strip()]
        self.templates: list[DateTemplate] = []
        if not lines:
            self._add_common(anchored_only=False)
        for line in lines:
            key = line if "%" in line else line.upper()
            if key in (_LINE_BEGIN, "{DEFAULT}"):
                self._add_common(anchored_only=key == _LINE_BEGIN)
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
                firsts.append(template(_LINE_BEGIN + pattern))
            rest.append(common)
        for found in firsts + rest:
            if found.anchored or not anchored_only:
                self._add(found)

    def _add_at_placeholder(self, pattern: str) -> None:
        for common in COMMON_FORMATS:
            if common in ("EPOCH", "TAI64N"):
                continue  # only the directive formats take the place of {DATE}
            unbound = _unbound(common)
            self._add(template(_DATE_PLACEHOLDER.sub(lambda m, text=unbound: text, pattern)))

    def find(self, line: str, now: float) -> DateMatch | None:
        """Where the line's date is and its time (`now` completes a date without a year)."""
        if self.none:
            return None
        reserve: tuple[re.Match[str], DateTemplate] | None = None
        last = len(self.templates) - 1
        for index, candidate in enumerate(self.templates):
            m = candidate.regex.search(line)
            if m is None:
                continue
            # A match at the very start wins; one further in may be a date-like part of the
            # message, so the nearest of those is kept in reserve.
            if candidate.anchored or m.start() <= 1 or index == last:
                return DateMatch(m.start(1), m.end(1), self._time(m, candidate, now))
            if reserve is None or m.start() < reserve[0].start():
                reserve = (m, candidate)
        if reserve is None:
            return None
        m, candidate = reserve
        return DateMatch(m.start(1), m.end(1), self._time(m, candidate, now))

    def _time(self, m: re.Match[str], found: DateTemplate, now: float) -> float | None:
        if m.start(1) == m.end(1):
            return None  # a pattern that allows a line without a date found none
        key = (found.name, m.group(0), now)
        if key not in self._times:
            if len(self._times) >= _TIME_CACHE_SIZE:
                self._times.clear()
            self._times[key] = _time_of(m, found, now)
        return self._times[key]


def _time_of(m: re.Match[str], found: DateTemplate, now: float) -> float | None:
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
        return _time_from_fields(m.groupdict(), now)
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


def _time_from_fields(fields: dict[str, str | None], now: float) -> float:
    value = {key: text for key, text in fields.items() if text is not None}
    today = datetime.fromtimestamp(now)
    year = month = day = None
    if "Y" in value:
        year = int(value["Y"])
    elif "y" in value:
        year = 2000 + int(value["y"])
    if "m" in value:
        month = int(value["m"])
    elif "b" in value:
        month = _MONTHS.index(value["b"].lower()[:3]) + 1
    elif "B" in value:
        month = _MONTH_NAMES.index(value["B"].lower()) + 1
    if "d" in value:
        day = int(value["d"])
    hour = int(value.get("H", 0))
    if "I" in value:
        hour = int(value["I"]) % 12 + (12 if value.get("p", "").lower() == "pm" else 0)
    minute, second = int(value.get("M", 0)), int(value.get("S", 0))
    offset = None
    zone = value.get("z") or value.get("Z")
    if zone is not None:
        offset = _zone_offset(zone.upper())
    guessed_year = year is None
    year = today.year if year is None else year
    if (month is None or day is None) and "j" in value:
        ordinal = datetime(year, 1, 1) + timedelta(days=int(value["j"]) - 1)
        month, day = ordinal.month, ordinal.day
    guessed_day = month is None and day is None
    if guessed_day:
        month, day = today.month, today.day
    if month is None or day is None:
        raise ValueError("a date needs a month and a day")
    result = datetime(year, month, day, hour, minute, second)
    if offset is not None:
        result -= timedelta(minutes=offset)
        reference = datetime.utcfromtimestamp(now)
    else:
        reference = today
    if guessed_day and result > reference:
        result -= timedelta(days=1)  # a time of day later than now is yesterday's
    if guessed_year and result > reference + timedelta(days=1):
        result = result.replace(year=year - 1)  # "Dec 31" read in January
    if offset is not None:
        return float(calendar.timegm(result.timetuple()))
    return time.mktime(result.timetuple())
