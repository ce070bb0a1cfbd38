"""One entry of `journalctl -o json` output (one JSON object per line) as fields and a message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_MICROSECONDS = re.compile(r"[0-9]{1,19}")


@dataclass(slots=True, frozen=True)
class JournalRecord:
    fields: dict[str, str]
    message: str
    time: float | None  # __REALTIME_TIMESTAMP in seconds, None when absent


@dataclass(slots=True, frozen=True)
class JournalJsonError:
    reason: str
    excerpt: str


def _value(raw: object) -> str | None:
    # journalctl writes a value that is not valid UTF-8 as an array of byte values, and a field
    # that occurs several times as an array of values; the first occurrence is the one kept.
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and raw:
        if all(isinstance(b, int) and 0 <= b <= 255 for b in raw):
            return bytes(raw).decode("utf-8", errors="replace")
        return _value(raw[0])
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)
    return None


def parse_journal_json(line: str) -> JournalRecord | JournalJsonError:
    """Parse one line; a malformed line gives a JournalJsonError, never an exception."""
    excerpt = line[:80]
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as error:
        return JournalJsonError(f"not valid JSON: {error}", excerpt)
    if not isinstance(data, dict):
        return JournalJsonError("not a JSON object", excerpt)
    fields: dict[str, str] = {}
    for key, raw in data.items():
        value = _value(raw)
        if value is not None:
            fields[key] = value
    message = fields.pop("MESSAGE", None)
    if message is None:
        return JournalJsonError("no MESSAGE field", excerpt)
    when = None
    stamp = fields.get("__REALTIME_TIMESTAMP")
    # ASCII digits only, at most 19 (microseconds fit in 64 bits): str.isdigit() would let
    # "²" or a 5,000-digit number through to int() and the division.
    if stamp is not None and _MICROSECONDS.fullmatch(stamp):
        when = int(stamp) / 1_000_000
    return JournalRecord(fields, message, when)
