"""Which program a Fail2Ban filter is for, in the terms the router indexes: its `journalmatch`
as journal match groups, and its `_daemon` as syslog tags when that regex stands for a few
literal names (`sshd`, `(?:dovecot(?:-auth)?|auth)`) rather than a pattern (`\\S*`)."""

from __future__ import annotations

import re
import shlex

from parsers.accounts import AccountLookup, uids
from parsers.errors import FilterError

# Which strings a regex such as "(?:dovecot(?:-auth)?|auth)" matches is read from its parse
# tree. Python has no public API for that; re._parser is the one place it exists (3.11+). A
# Python where it is missing or has changed shape still reads a plain name ("sshd"), and any
# other _daemon then gives no syslog tags (the loader's note says how to name them).
try:
    from re import _constants as _c, _parser as _p
except ImportError:  # pragma: no cover - not in any Python 3.11-3.13
    _c = _p = None

_FIELD = re.compile(r"[A-Z0-9_]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_MAX_TAGS = 64


def journal_groups(text: str, file: str,
                   accounts: AccountLookup | None = None) -> tuple[dict[str, frozenset[str]], ...]:
    """journalmatch as journalctl reads it: `FIELD=value` terms, `+` between alternatives (and
    each line an alternative); within one, different fields must all match, and the values
    of a field repeated are alternatives. `_UID` may name accounts, as in a TOML filter
    (`parsers.accounts`); an alternative whose accounts all are absent here is left out."""
    groups: list[dict[str, frozenset[str]]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            tokens = shlex.split(line)
        except ValueError as error:
            raise FilterError(file, "journalmatch", f"cannot split {line!r} into terms: {error}") from None
        current: dict[str, set[str]] = {}
        for token in tokens + ["+"]:
            if token == "+":
                group = {field: frozenset(values) for field, values in current.items()}
                if "_UID" in group:
                    group["_UID"] = uids(file, "journalmatch", group["_UID"], accounts)
                if group and group.get("_UID", True) and group not in groups:
                    groups.append(group)
                current = {}
                continue
            field, equals, value = token.partition("=")
            if not equals or not _FIELD.fullmatch(field):
                raise FilterError(file, "journalmatch", f"{token!r} is not a FIELD=value term (field names are "
                                                        "A-Z, 0-9 and _; '+' separates alternatives)")
            current.setdefault(field, set()).add(value)
    return tuple(groups)


def daemon_tags(pattern: str) -> frozenset[str] | None:
    """The names a `_daemon` regex matches, if it matches only a few fixed names; else None."""
    if _PLAIN_NAME.fullmatch(pattern):
        return frozenset({pattern})
    if _p is None:
        return None
    try:
        parsed = _p.parse(pattern)
        if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
            return None
        names = _strings(list(parsed))
    except (re.error, AttributeError, TypeError, ValueError, IndexError):
        return None  # not a regex, or a parser of another shape than this code knows
    if not names or "" in names:
        return None
    return frozenset(names)


def _strings(items: list) -> set[str] | None:
    """Every string a sequence of parsed regex items matches, or None if not a few fixed ones."""
    results = {""}
    for op, argument in items:
        choices = _choices(op, argument)
        if choices is None:
            return None
        results = {head + tail for head in results for tail in choices}
        if len(results) > _MAX_TAGS:
            return None
    return results


def _choices(op, argument) -> set[str] | None:
    if op is _c.LITERAL:
        return {chr(argument)}
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = argument
        return None if add_flags or del_flags else _strings(list(body))
    if op is _c.BRANCH:
        found: set[str] = set()
        for branch in argument[1]:
            strings = _strings(list(branch))
            if strings is None:
                return None
            found |= strings
        return found
    if op is _c.IN:
        if any(kind is not _c.LITERAL for kind, _ in argument):
            return None
        return {chr(value) for _, value in argument}
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        low, high, body = argument
        if high > 1:
            return None
        strings = _strings(list(body))
        if strings is None:
            return None
        return strings | {""} if low == 0 else strings
    return None
