"""Naming a Fail2Ban filter: "fail2ban:NAME[key=value, ...]" or the path of its .conf or
.local. Kept apart from the loader (`parsers.fail2ban`) so that recognising a reference costs
no more than a string test."""

from __future__ import annotations

import re
from pathlib import Path

from parsers.errors import FilterError

DEFAULT_DIR = Path("/etc/fail2ban")
PREFIX = "fail2ban:"
_REFERENCE = re.compile(r"^([^\[]+?)\s*(?:\[(.*)\])?\s*$", re.DOTALL)
# key=value, key="value" or key='value'; separated by commas (or "][", as in NAME[a=1][b=2]).
_PARAMETER = re.compile(r"\s*([\w\-.]+)=(?:\"([^\"]*)\"|'([^']*)'|([^,\]]*))\s*(?:,|\]\s*\[|$)", re.DOTALL)


def is_fail2ban_reference(reference: str) -> bool:
    """Is this filter reference a Fail2Ban filter ("fail2ban:NAME[...]", or a .conf/.local path)?"""
    if reference.startswith(PREFIX):
        return True
    m = _REFERENCE.match(reference)
    return m is not None and m.group(1).endswith((".conf", ".local"))


def parse_reference(reference: str) -> tuple[str, dict[str, str]]:
    """The filter name (or path) and the parameters of "fail2ban:NAME[key=value, ...]"."""
    text = reference.removeprefix(PREFIX)
    m = _REFERENCE.match(text)
    if m is None:
        raise FilterError(reference, "", "expected NAME or NAME[key=value, ...]")
    name, options = m.group(1), m.group(2)
    parameters: dict[str, str] = {}
    position = 0
    while options is not None and position < len(options.rstrip()):
        item = _PARAMETER.match(options, position)
        if item is None or item.end() == position:
            raise FilterError(reference, "", f"cannot read the parameters at {options[position:position + 25]!r}: "
                                             'expected key=value, key="value" or key=\'value\', separated by commas')
        key = item.group(1)
        value = next(v for v in item.group(2, 3, 4) if v is not None)
        parameters[key] = value.strip() if item.group(4) is not None else value
        position = item.end()
    return name, parameters


def filter_base(reference: str, directory: Path) -> Path:
    """The path without suffix that Fail2Ban reads NAME.conf, NAME.local... from: for
    "fail2ban:NAME" (a subdirectory allowed), inside `directory`/filter.d and never outside it;
    for the path of a .conf or .local, that path."""
    name, _ = parse_reference(reference)
    if "\x00" in name:
        raise FilterError(reference, "", "a file name cannot hold a NUL character")
    if name.endswith((".conf", ".local")):
        name = name.rsplit(".", 1)[0]
    if not reference.startswith(PREFIX):
        return Path(name)
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise FilterError(reference, "", f"{name!r} is not a name inside DIR/filter.d ({directory / 'filter.d'}): "
                                         "no '..', not absolute; to read a filter elsewhere, give the path of its "
                                         ".conf without 'fail2ban:'")
    return directory / "filter.d" / path
