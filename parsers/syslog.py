"""Syslog formats: RFC 5424 and RFC 3164 messages and rsyslog file lines (TCP framing is in
parsers.framing).

Bytes or text in, records out: no I/O and no clock. Times that carry no year or zone are
resolved against the ``now`` and ``tz`` the caller passes. Nothing here raises on bad input;
malformed input comes back as a `SyslogError` saying what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import NamedTuple

from parsers.epochs import epoch_of, is_ahead, year_of

__all__ = ["SyslogError", "SyslogMessage", "file_line_tag_and_message",
           "parse_file_line", "parse_message"]

StructuredData = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

EXCERPT_CHARS = 80
# RFC 3164 §4.3.3: a message that arrives without PRI is to be treated as user.notice.
_NO_PRI_FACILITY, _NO_PRI_SEVERITY = 1, 5
# Bounds the minute memo: a normal log needs a handful of entries, and a flood of forged
# timestamps only costs recomputation once the memo is cleared.
_MINUTE_CACHE_LIMIT = 4096
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_HEADER_FIELDS = ("TIMESTAMP", "HOSTNAME", "APP-NAME", "PROCID", "MSGID", "STRUCTURED-DATA")

# Groups: minute and seconds of a traditional "Mmm dd hh:mm:ss" (day space-padded, zero-padded
# or bare), or minute, seconds and offset of an RFC 3339 stamp (rsyslog's high-precision form;
# the offset is optional here so a zoneless ISO stamp is read in `tz`).
_TRADITIONAL = (r"((?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?:[ \d]\d|\d) \d\d:\d\d)"
                r":(\d\d(?:\.\d{1,9})?)")
_RFC3339_TEXT = r"(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d):(\d\d(?:\.\d{1,9})?)([Zz]|[+-]\d\d:\d\d)?"
_TIMESTAMP = f"(?:{_TRADITIONAL}|{_RFC3339_TEXT})"
# A TAG ends at "[", ":" or a space; groups: tag, pid, colon.
_TAG_CHAR = r"[^\s\[:]"
_TAG = rf"({_TAG_CHAR}+)(?:\[([^\s\]]*)\])?(:)? ?"
# The same grammar for matchers that embed it (parsers.fileline): what comes before the tag,
# what a tag character is, and what may follow the tag before the message. ASCII semantics.
FILE_LINE_HEAD = _TIMESTAMP + r" \S+ "
FILE_LINE_TAG_CHAR = _TAG_CHAR
FILE_LINE_AFTER_TAG = r"(?:\[[^\s\]]*\])?:? ?"
_BSD_TIMESTAMP = re.compile(_TIMESTAMP + " ", re.ASCII)
_BSD_TAG = re.compile(_TAG, re.ASCII)
_FILE_LINE = re.compile(_TIMESTAMP + r" (\S+) (?:" + _TAG + ")?", re.ASCII)
_RFC3339 = re.compile(_RFC3339_TEXT, re.ASCII)
_SD_NAME = r'[^\s=\]"]+'
_SD_VALUE = r'"((?:[^"\\]|\\.)*+)"'
_SD_ELEMENT = re.compile(rf"\[({_SD_NAME})((?: {_SD_NAME}={_SD_VALUE})*+)\]", re.ASCII | re.DOTALL)
_SD_PARAM = re.compile(rf" ({_SD_NAME})={_SD_VALUE}", re.ASCII | re.DOTALL)
# RFC 5424 §6.3.3: only \" \\ \] are escapes; any other backslash stays as it is.
_SD_ESCAPE = re.compile(r'\\(["\\\]])')


class SyslogMessage(NamedTuple):
    """One parsed syslog message or file line; header parts that are absent are None.

    A NamedTuple rather than a frozen dataclass: one is built for every candidate line of a
    log, and a frozen dataclass's ten object.__setattr__ calls cost about five times more.
    """

    format: str
    message: str
    facility: int | None = None
    severity: int | None = None
    timestamp: float | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: StructuredData = ()

    def fields(self) -> dict[str, str]:
        """The journal-style fields a LogEvent carries for this message; only those present."""
        present = (("SYSLOG_IDENTIFIER", self.app_name), ("SYSLOG_PID", self.procid),
                   ("SYSLOG_FACILITY", self.facility), ("PRIORITY", self.severity),
                   ("_HOSTNAME", self.hostname), ("SYSLOG_MSGID", self.msgid))
        return {name: str(value) for name, value in present if value is not None}


@dataclass(slots=True, frozen=True)
class SyslogError:
    """A message that could not be parsed: why, and the start of it for the log line."""

    reason: str
    excerpt: str


class _Malformed(Exception):
    """Carries a reason from inside the RFC 5424 parser up to parse_message."""


def excerpt(raw: bytes | bytearray | str) -> str:
    # repr() escapes control characters, so an attacker's bytes cannot forge log lines.
    text = raw[:EXCERPT_CHARS] if isinstance(raw, str) else bytes(raw[:EXCERPT_CHARS]).decode(
        "utf-8", "backslashreplace")
    return repr(text)[1:-1][:EXCERPT_CHARS]


def parse_message(data: bytes | str, now: float, tz: tzinfo | None = None) -> SyslogMessage | SyslogError:
    """Parse one syslog message (a UDP datagram or one TCP frame), RFC 5424 or RFC 3164.

    "<PRI>1 " starts RFC 5424; anything else is RFC 3164, whose header parts are all
    optional. `tz` (None: the local zone) and `now` resolve timestamps lacking a zone or year.
    """
    # Invalid UTF-8 becomes U+FFFD rather than an error: the rest of the line may still hold
    # the attacker's address. Interior NULs become U+FFFD too, so nothing that treats NUL as
    # the end of a string (sqlite, C libraries) sees a shortened message; trailing NULs are
    # a trailer some senders add, dropped like CR and LF.
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    text = text.rstrip("\r\n\x00")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.strip():
        return SyslogError("empty message", excerpt(text))
    if text[0] != "<":
        return SyslogMessage("rfc3164", text, _NO_PRI_FACILITY, _NO_PRI_SEVERITY)
    close = text.find(">", 1, 5)
    if close < 0:
        head = text[1:5]
        too_long = len(head) == 4 and head.isascii() and head.isdigit()
        return SyslogError("PRI has more than 3 digits" if too_long else
                           "PRI is not closed by '>' after at most 3 digits", excerpt(text))
    digits = text[1:close]
    if not (digits.isascii() and digits.isdigit()):  # isdigit() alone accepts "²", which int() rejects
        return SyslogError(f"PRI {digits!r} is not a number", excerpt(text))
    pri = int(digits)
    if pri > 191:
        return SyslogError(f"PRI value {pri} out of range 0-191", excerpt(text))
    if text.startswith("1 ", close + 1):
        try:
            return _parse_rfc5424(text, close + 3, pri >> 3, pri & 7, tz)
        except _Malformed as malformed:
            return SyslogError(str(malformed), excerpt(text))
    return _parse_rfc3164(text, close + 1, pri >> 3, pri & 7, now, tz)


def _parse_rfc5424(text: str, start: int, facility: int, severity: int, tz: tzinfo | None) -> SyslogMessage:
    parts = text[start:].split(" ", 5)
    if len(parts) < 6:
        raise _Malformed(f"RFC 5424 header has {len(parts)} of its 6 fields after VERSION "
                         "(TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA)")
    for name, value in zip(_HEADER_FIELDS, parts, strict=True):
        if not value:
            raise _Malformed(f"RFC 5424 {name} is empty (a space too many in the header)")
    stamp, hostname, app_name, procid, msgid = (None if part == "-" else part for part in parts[:5])
    match = _RFC3339.fullmatch(stamp) if stamp is not None else None
    timestamp = _iso_epoch(*match.groups(), tz) if match is not None else None
    structured_data, end = _parse_structured_data(parts[5])
    # MSG follows one separating space. rsyslog forwards RFC 3164 input as "- -  msg",
    # keeping the space that followed the tag's colon, so leading spaces are dropped: no
    # message worth matching starts with one. The BOM only marks MSG as UTF-8.
    message = parts[5][end + 1:].lstrip(" ").removeprefix("\ufeff")
    return SyslogMessage("rfc5424", message, facility, severity, timestamp, hostname, app_name, procid, msgid,
                    structured_data)


def _parse_structured_data(rest: str) -> tuple[StructuredData, int]:
    """Return the SD elements at the start of `rest` and the index just past them."""
    if rest[0] == "-":
        elements: StructuredData = ()
        end = 1
    elif rest[0] == "[":
        found = []
        end = 0
        while end < len(rest) and rest[end] == "[":
            match = _SD_ELEMENT.match(rest, end)
            if match is None:
                raise _Malformed(f"malformed STRUCTURED-DATA element at '{excerpt(rest[end:end + 40])}'")
            params = tuple((name, _SD_ESCAPE.sub(r"\1", value) if "\\" in value else value)
                           for name, value in _SD_PARAM.findall(match[2]))
            found.append((match[1], params))
            end = match.end()
        elements = tuple(found)
    else:
        raise _Malformed("STRUCTURED-DATA is neither '-' nor '[...]'")
    if end < len(rest) and rest[end] != " ":
        raise _Malformed("STRUCTURED-DATA is not followed by a space before MSG")
    return elements, end


def _parse_rfc3164(
    text: str, start: int, facility: int, severity: int, now: float, tz: tzinfo | None,
) -> SyslogMessage:
    stamp = _BSD_TIMESTAMP.match(text, start)
    if stamp is None:
        # Without a timestamp there is no HOSTNAME either (RFC 3164 §4.3.2), and only
        # "tag[pid]" or "tag:" is clearly a tag; a bare first word may belong to the message.
        tag = _BSD_TAG.match(text, start)
        if tag is not None and (tag[2] is not None or tag[3] is not None):
            return SyslogMessage("rfc3164", text[tag.end():], facility, severity, None, None, tag[1], tag[2] or None)
        return SyslogMessage("rfc3164", text[start:], facility, severity)
    prefix, seconds, iso, iso_seconds, offset = stamp.groups()
    if prefix is not None:
        timestamp = _traditional_epoch(prefix, seconds, now, tz)
    else:
        timestamp = _iso_epoch(iso, iso_seconds, offset, tz)
    position = stamp.end()
    space = text.find(" ", position)
    word = text[position:] if space < 0 else text[position:space]
    hostname = None
    # Local senders (logger, /dev/log) omit HOSTNAME, so their first word is already the
    # "tag[pid]:" or "tag:". A hostname, even an IPv6 literal, never ends in ":" or holds "[".
    if word and not word.endswith(":") and "[" not in word:
        hostname = word
        if space < 0:
            return SyslogMessage("rfc3164", "", facility, severity, timestamp, hostname)
        position = space + 1
    tag = _BSD_TAG.match(text, position)
    if tag is None:
        return SyslogMessage("rfc3164", text[position:], facility, severity, timestamp, hostname)
    return SyslogMessage("rfc3164", text[tag.end():], facility, severity, timestamp, hostname, tag[1], tag[2] or None)


def parse_file_line(line: str, now: float, tz: tzinfo | None = None) -> SyslogMessage | SyslogError:
    """Parse one line of a syslog file as rsyslog writes it (/var/log/auth.log).

    "Mmm dd hh:mm:ss HOST TAG[PID]: MSG", or the same with an RFC 3339 timestamp (rsyslog's
    high-precision template). Runs on every line of a log, so it is one regex match plus
    memoised time arithmetic.
    """
    line, match = _match_file_line(line)
    if match is None:
        return SyslogError(_NOT_A_FILE_LINE, excerpt(line))
    prefix, seconds, iso, iso_seconds, offset, hostname, tag, pid, _ = match.groups()
    if prefix is not None:
        timestamp = _traditional_epoch(prefix, seconds, now, tz)
    else:
        timestamp = _iso_epoch(iso, iso_seconds, offset, tz)
    return SyslogMessage("file", line[match.end():], None, None, timestamp, hostname, tag, pid or None)


def file_line_tag_and_message(line: str) -> tuple[str | None, str] | SyslogError:
    """The tag and message parse_file_line would give, without dating the line.

    For readers that only need to know who logged what (test-filter's counting): the same
    grammar and the same errors, a third of the cost.
    """
    line, match = _match_file_line(line)
    if match is None:
        return SyslogError(_NOT_A_FILE_LINE, excerpt(line))
    return match.group(_FILE_LINE_TAG), line[match.end():]


_NOT_A_FILE_LINE = ("not a syslog file line: expected 'Mmm dd hh:mm:ss HOST TAG: MSG' "
                    "or an RFC 3339 timestamp, then HOST")
_FILE_LINE_TAG = 7


def _match_file_line(line: str) -> tuple[str, re.Match[str] | None]:
    line = line.rstrip("\r\n")
    if "\x00" in line:
        line = line.replace("\x00", "\ufffd")
    return line, _FILE_LINE.match(line)


# Epoch of the start of a minute, keyed by its text, the year or offset, and the zone; None
# marks an impossible date. Only the seconds differ between the lines of a busy log, so the
# datetime work happens about once a minute instead of on every line.
_minute_epochs: dict[tuple[str, int | str | None, tzinfo | None], float | None] = {}
_SECONDS = {f"{second:02d}": float(second) for second in range(61)}


def _traditional_epoch(prefix: str, seconds: str, now: float, tz: tzinfo | None) -> float | None:
    """Epoch of "Mmm dd hh:mm" + seconds in the year `parsers.epochs` infers from `now`: the
    year of `now`, or the year before if that is ahead."""
    second = _SECONDS.get(seconds)
    if second is None:
        second = float(seconds)
        if second >= 61:
            return None
    year = year_of(now, tz)
    if year is None:
        return None
    # The minute memo's lookup is inlined: this runs once per line of every log file read.
    key = (prefix, year, tz)
    base = _minute_epochs.get(key)
    if base is None:
        base = _minute_start(key)
    # Also falls back when the date does not exist this year (Feb 29 read in a common year).
    if base is None or is_ahead(base + second, now):
        base = _minute_start((prefix, year - 1, tz))
    return None if base is None else base + second


def _iso_epoch(minute: str, seconds: str, offset: str | None, tz: tzinfo | None) -> float | None:
    """Epoch of an RFC 3339 stamp; one without an offset is read in `tz`."""
    second = float(seconds)
    if second >= 61:  # 60 is a leap second, which RFC 3339 allows
        return None
    key = (minute, offset, None) if offset else (minute, None, tz)
    base = _minute_epochs.get(key)
    if base is None:
        base = _minute_start(key)
    return None if base is None else base + second


def _minute_start(key: tuple[str, int | str | None, tzinfo | None]) -> float | None:
    """Memoised epoch of ("Mmm dd hh:mm", year, tz) or ("YYYY-MM-DDThh:mm", offset or None, tz)."""
    try:
        return _minute_epochs[key]
    except KeyError:
        pass
    text, year_or_offset, zone = key
    epoch: float | None = None
    if isinstance(year_or_offset, int):
        month, day, clock = text.split()
        epoch = epoch_of(year_or_offset, _MONTHS[month], int(day), int(clock[:2]), int(clock[3:]), 0, zone)
    else:
        try:
            moment = datetime.fromisoformat((text + (year_or_offset or "")).upper())
            if year_or_offset is None:
                moment = moment.replace(tzinfo=zone)
            # A naive datetime (zone None) converts through the local zone, as the caller asked.
            epoch = moment.timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    if len(_minute_epochs) >= _MINUTE_CACHE_LIMIT:
        _minute_epochs.clear()
    _minute_epochs[key] = epoch
    return epoch
