"""Text lines of any supported format turned into LogEvents (for test-filter and file input).

A line is detected on its own: `{` starts a `journalctl -o json` entry, `<` a syslog message
with its PRI (RFC 5424 or 3164), anything else a classic syslog file line.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.events import LogEvent
from parsers.journal_json import JournalJsonError, parse_journal_json
from parsers.syslog import SyslogError, parse_file_line, parse_message


@dataclass(slots=True, frozen=True)
class LineError:
    reason: str


def event_from_line(line: str, now: float) -> LogEvent | LineError:
    """The LogEvent a line records; `now` dates lines without a year or without a time."""
    line = line.rstrip("\r\n")
    first = line[:1]
    if first == "{":
        record = parse_journal_json(line)
        if isinstance(record, JournalJsonError):
            return LineError(f"journal JSON: {record.reason}")
        when = record.time if record.time is not None else now
        return LogEvent(when, "journal", record.message, record.fields, trusted=True)
    if first == "<":
        parsed = parse_message(line, now)
        source = "syslog"
    else:
        parsed = parse_file_line(line, now)
        source = "file"
    if isinstance(parsed, SyslogError):
        return LineError(f"{source}: {parsed.reason}")
    when = parsed.timestamp if parsed.timestamp is not None else now
    return LogEvent(when, source, parsed.message, parsed.fields(), trusted=False)
