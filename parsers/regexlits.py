"""The literal text a regex cannot match without, for cheap prefiltering of messages."""

from __future__ import annotations

import re

# re's own parser gives the pattern's structure. It is private: should a later Python move
# it, filters only lose their prefilter.
try:
    from re import _constants as _c, _parser as _p
except ImportError:  # pragma: no cover - no such Python yet
    _c = _p = None


def required_literal(pattern: str) -> str | None:
    """The longest run of literal characters every match of `pattern` contains, or None.

    Only runs that are certain are taken: text in the top-level sequence or in plain groups
    of it. Alternations, optional parts and repeats end a run. A pattern with case-insensitive
    parts gives None (a plain substring test would then be wrong).
    """
    if _p is None:
        return None
    try:
        parsed = _p.parse(pattern)
    except re.error:
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    runs: list[str] = []
    current: list[str] = []
    if not _collect(parsed, runs, current):
        return None
    runs.append("".join(current))
    best = max(runs, key=len)
    return best or None


def _collect(sequence: object, runs: list[str], current: list[str]) -> bool:
    for op, arg in sequence:
        if op is _c.LITERAL:
            current.append(chr(arg))
        elif op is _c.SUBPATTERN:
            add_flags = arg[1]
            if add_flags & re.IGNORECASE:
                return False
            if not _collect(arg[3], runs, current):
                return False
        elif op is _c.AT:
            continue  # anchors match no text and do not end a run
        else:
            runs.append("".join(current))
            current.clear()
    return True
