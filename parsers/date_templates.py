"""Date templates: the regexes that find a date in a plain log line.

A template comes from a datepattern line: strptime-style directives (`%Y-%m-%d %H:%M:%S`)
inside a regex, with the forms `{^LN-BEG}` (at the start of the line), `{UNB}` (no word
boundaries), `{EPOCH}`/`{LEPOCH}` (a number at that place), `EPOCH`, `LEPOCH` and `TAI64N`.
`COMMON_FORMATS` are the formats of plain log files tried when a filter sets none. Reading
the time a match names is `parsers.dates`'s part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
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
    "b": rf"(?P<b>{_names(MONTHS)})", "B": rf"(?P<B>{_names(MONTH_NAMES)})",
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


# The pieces plain logs build their dates from.
_CLOCK = "%H:%M:%S"  # 21:59:59
_LOOSE_CLOCK = "%k:%M:%S"  # the hour may be space-padded: " 8:59:59"
_COMPACT_CLOCK = "%ExH%ExM%ExS"  # 215959
_MICROSECONDS = r"(?:\.%f)?"
_ANY_FRACTION = r"(?:[.,]%f)?"
_ZONE_AFTER = r"(?:\s*%z)?"
_DATE_TIME_GAP = "(?:T|  ?)"  # ISO's "T", or one or two spaces
_WEEKDAY = "(?:%a )?"


def _repeated_separator(first: str, second: str, third: str, separators: str) -> str:
    """Three date fields with the same separator between both pairs: 2026-01-23, 23/01/2026."""
    return f"{first}(?P<_sep>[{separators}]){second}(?P=_sep){third}"


# The formats of dates in plain log files, tried when a filter sets no datepattern (each is
# first tried at the very start of the line: see parsers.dates). Where two match at the same
# place, the earlier in this list wins: day-first numeric dates come before month-first ones
# ("01-02-2026 10:00:00" is the 1st of February), a month name without a zone before one with.
_FORMAT_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("month names: syslog, asctime, Apache's error log, a zone in front (monit)", (
        # Jan  3 21:59:59 | Sun Jan 23 21:59:59.011 2026
        rf"{_WEEKDAY}%b %d {_LOOSE_CLOCK}{_MICROSECONDS}(?: %ExY)?",
        # PDT Apr 16 21:05:29 | +00:00 Jan 23 21:59:59. After the form without a zone, which
        # then wins at the same place: names match in any case, and "Sun" is no zone.
        rf"(?:%Z|%z) {_WEEKDAY}%b %d {_LOOSE_CLOCK}{_MICROSECONDS}(?: %ExY)?",
        # Sun Jan 23 2026 21:59:59
        rf"{_WEEKDAY}%b %d %ExY {_LOOSE_CLOCK}{_MICROSECONDS}",
        # Jan 23, 2026 9:59:59 PM (Java)
        r"%b %d, %ExY %I:%M:%S %p",
        # Apr-27-26 02:33:06 (ASSP)
        rf"^%b-%d-%Exy {_LOOSE_CLOCK}",
    )),
    ("day and month name: Apache's access log, BIND, PHP", (
        # 23/Jan/2026:21:59:59 +0100 | 23-Jan-2026 21:59:59.252
        rf"{_repeated_separator('%d', '%b', '%ExY', '-/')}[ :]?{_CLOCK}{_MICROSECONDS}(?: %z)?",
    )),
    ("numbers, year first: ISO 8601, RFC 3339, syslog-ng", (
        # 2026-01-23T21:59:59.981746+01:00 | 2026/01/23 21:59:59 | 2026.01.23  8:59:59
        rf"{_repeated_separator('%ExY', '%m', '%d', '-/.')}{_DATE_TIME_GAP}{_CLOCK}{_ANY_FRACTION}{_ZONE_AFTER}",
        # 20260123T215959 | 20260123 215959
        rf"%ExY%Exm%Exd{_DATE_TIME_GAP}{_COMPACT_CLOCK}{_ANY_FRACTION}{_ZONE_AFTER}",
        # 260123 21:59:59 (MySQL before 5.7)
        rf"%Exy%Exm%Exd  ?{_CLOCK}",
    )),
    ("numbers, day or month first", (
        # 23/01/2026 21:59:59 | 23-01-26 21:59:59
        rf"{_repeated_separator('%d', '%m', '(?:%ExY|%Exy)', '-/')} {_LOOSE_CLOCK}",
        # 01-23-2026 21:59:59.252
        rf"%m-%d-%ExY {_LOOSE_CLOCK}{_MICROSECONDS}",
        # 01/23/2026:21:59:59 (cPanel)
        rf"%m/%d/%ExY:{_CLOCK}",
        # <01/23/26@21:59:59> at the start of the line
        rf"^<%m/%d/%Exy@{_CLOCK}>",
    )),
    ("a time of day alone, at the start of the line", (f"{{^LN-BEG}}{_CLOCK}",)),
    ("counters: seconds since 1970, TAI64N", ("EPOCH", "TAI64N")),
)
COMMON_FORMATS = tuple(pattern for _, patterns in _FORMAT_FAMILIES for pattern in patterns)

LINE_BEGIN = "{^LN-BEG}"
UNBOUND = "{UNB}"
_EPOCH_PLACEHOLDER = re.compile(r"(?<!\\)\{(L?)EPOCH\}", re.IGNORECASE)
_EPOCH = r"\d{10,11}\b(?:\.\d{3,6})?"
_LONG_EPOCH = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"


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


# Where a date may begin or end: not between two word characters.
_NOT_INSIDE_A_WORD = r"(?:(?<!\w)|(?!\w))"


def _inline_flags(regex: str) -> tuple[str, str]:
    """(the first global inline-flag group such as "(?i)", the regex without it)."""
    at = 0
    while (at := regex.find("(?", at)) != -1:
        end = at + 2
        while end < len(regex) and regex[end].isalpha() and regex[end].islower():
            end += 1
        if end > at + 2 and end < len(regex) and regex[end] == ")" and not _escaped(regex, at):
            return regex[at:end + 1], regex[:at] + regex[end + 1:]
        at += 2
    return "", regex


def _escaped(regex: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and regex[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _head(regex: str) -> int:
    """Where the pattern proper starts: after opening parentheses of plain groups."""
    at = 0
    while regex.startswith("(", at) and not regex.startswith("(?", at):
        at += 1
    return at


def _tail(regex: str) -> int:
    """Where the pattern proper ends: before closing parentheses."""
    end = len(regex)
    while end > 0 and regex[end - 1] == ")" and not _escaped(regex, end - 1):
        end -= 1
    return end


def _starts_unbounded(regex: str) -> bool:
    """Written to need no boundary in front: it starts at "^" (also as "(^" or "(?:^"), or with
    the "**" marker that says so."""
    rest = regex[_head(regex):]
    return rest.startswith(("^", "**", "(?:^")) or rest.lstrip("(").startswith("**")


def _ends_unbounded(regex: str) -> bool:
    """Written to need no boundary behind: it ends at "$" (or "$)"), at "\\b" or "\\s", or with
    the "**" marker."""
    if regex.endswith(("$", "$)")) and not _escaped(regex, regex.rindex("$")):
        return True
    if regex.endswith(("\\b", "\\s")) and not _escaped(regex, len(regex) - 2):
        return True
    return regex[:_tail(regex)].endswith("**")


def _without_markers(regex: str) -> str:
    """The "**" no-boundary markers taken out where they stand: first or last in the pattern."""
    head = _head(regex)
    after_head = head + len(regex[head:]) - len(regex[head:].lstrip("("))
    if regex.startswith("**", after_head):
        regex = regex[:after_head] + regex[after_head + 2:]
    tail = _tail(regex)
    if regex[:tail].endswith("**") and not _escaped(regex, tail - 2):
        regex = regex[:tail - 2] + regex[tail:]
    return regex


def _has_capturing_group(regex: str) -> bool:
    in_class = False
    for index, char in enumerate(regex):
        if _escaped(regex, index):
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(" and not regex.startswith("(?", index) and not regex.endswith("(?", 0, index):
            return True
    return False


def _grouped(regex: str) -> str:
    """The date part of the regex as group 1, leaving a leading "^" and a trailing "$" outside."""
    start = 1 if regex.startswith("^") else 0
    end = len(regex) - 1 if regex.endswith("$") and not _escaped(regex, len(regex) - 1) else len(regex)
    return f"{regex[:start]}({regex[start:end]}){regex[end:]}"


def _anchored(regex: str) -> bool:
    rest = regex[_head(regex):]
    if rest.startswith("(?:"):
        rest = rest[3:]
    if rest.startswith("^") and not rest.startswith("^|"):
        return True
    ending = regex.rstrip(")")
    return ending.endswith("$") and not _escaped(ending, len(ending) - 1) and not ending.endswith("|$")


def _bounded(regex: str, before: bool | str, after: bool) -> tuple[str, bool]:
    """The regex ready to search a line: group 1 is the date; in front of it the start of the
    line (before="start", allowing up to two non-word characters such as "[") or a word
    boundary, and a word boundary behind, unless the pattern says it needs none. Returns the
    regex and whether it is tied to the start or the end of the line."""
    flags, regex = _inline_flags(regex.strip())
    bound_before = before if before and not _starts_unbounded(regex) else False
    bound_after = after and not _ends_unbounded(regex)
    regex = _without_markers(regex)
    if not _has_capturing_group(regex):
        regex = _grouped(regex)
    if bound_before == "start":
        regex = r"^\W{0,2}" + regex
    elif bound_before:
        regex = _NOT_INSIDE_A_WORD + regex
    if bound_after:
        regex += _NOT_INSIDE_A_WORD
    return flags + regex, bound_before == "start" or _anchored(regex)


def _compile(name: str, regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as error:
        raise DateError(f"datepattern {name!r} does not compile: {error}") from None


def _epoch_template(name: str, line_begin: bool, long: bool) -> DateTemplate:
    """A bare epoch number where logs write one: first on the line, or alone in brackets there
    ("[1700000000.123]"); anywhere, also as an audit record's "audit(EPOCH:SERIAL)"."""
    number = _LONG_EPOCH if long else _EPOCH
    kind = "long-epoch" if long else "epoch"
    in_brackets = rf"(?<=^\[)(?={number}\])"
    if line_begin:
        return DateTemplate(name, _compile(name, rf"(?:^|{in_brackets})({number}){_NOT_INSIDE_A_WORD}"), True, kind)
    in_audit = rf"(?<=\baudit\()(?={number}:\d+\))"
    regex = rf"(?:^|{in_brackets}|{in_audit})({number}){_NOT_INSIDE_A_WORD}"
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
            if key in (LINE_BEGIN + word, "^" + word):
                return _epoch_template(pattern, True, long)
    if key in ("TAI64N", LINE_BEGIN + "TAI64N", "^TAI64N"):
        regex, anchored = _bounded("@[0-9a-f]{24}", "start" if key != "TAI64N" else False, True)
        return DateTemplate(pattern, _compile(pattern, regex), anchored, "tai64n")
    before: bool | str = True
    after = True
    body = pattern
    if body.startswith(UNBOUND):
        body, before, after = body[len(UNBOUND):], False, False
    if before and body.startswith(LINE_BEGIN):
        body, before = body[len(LINE_BEGIN):], "start"
    regex = _expand_directives(body)
    if _NAME_DIRECTIVES.search(body):
        regex = "(?i)" + regex  # month and day names in any case
    regex, anchored = _bounded(regex, before, after)
    return DateTemplate(pattern, _compile(pattern, regex), anchored)


def unbound(pattern: str) -> str:
    """The pattern without its {UNB} and {^LN-BEG} prefixes (to put it in another's place)."""
    for prefix in (UNBOUND, LINE_BEGIN):
        if pattern.startswith(prefix):
            pattern = pattern[len(prefix):]
    return pattern
