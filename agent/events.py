"""The one record that sources produce and everything after them consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(slots=True, frozen=True)
class LogEvent:
    """One log entry, whatever it came from.

    `fields` holds journal fields as journald gave them; for syslog, `SYSLOG_IDENTIFIER`,
    `SYSLOG_PID`, `SYSLOG_FACILITY`, `PRIORITY`, `_HOSTNAME` and `_SOURCE_ADDRESS`.
    `trusted` says whether the identifying fields were set by something the attacker cannot
    forge (journald's underscore fields, or a syslog sender on the allow list).
    """

    time: float
    source: str
    message: str
    fields: Mapping[str, str] = field(default_factory=dict)
    trusted: bool = False
