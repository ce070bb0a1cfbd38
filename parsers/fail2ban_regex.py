"""Fail2Ban's regexes: its tags (`<HOST>`, `<F-USER>...</F-USER>`, `<SKIPLINES>`...) turned
into Python groups, compiled one by one, and the split of a multi-line buffer into the lines
a match used and the lines it left.

The groups keep Fail2Ban's names (`ip4`, `ip6`, `dns`, `cidr`, `fid`, `fport`, and each
`<F-NAME>` as `name` in lower case), so filters that refer to them work unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parsers import regexlits

_TAG = re.compile(r"</?[\w\-]+/?>")
_CUSTOM = re.compile(r"^(/?)F-([A-Z0-9_\-]+)$")
# A group that starts with global flags, "((?i)x)" or "(?:(?i)x)", made "(?i:x)": Python
# allows global flags only at the very start of a pattern.
_GROUP_FLAGS = re.compile(r"(?<!\\)\((?:\?:)?\(\?([a-z]+)\)")

IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
# The shape of an IPv6 address, loosely (groups of hex digits between single or double
# colons), as Fail2Ban matches it; whether it is one is for ipaddress to judge afterwards.
IP6 = r"(?:[0-9a-fA-F]{1,4}:{1,2}|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
_IP4_GROUP = rf"(?:::f{{4,6}}:)?(?P<ip4>{IP4})"  # an IPv4-mapped IPv6 address counts as IPv4
_IP6_GROUP = rf"(?P<ip6>{IP6})"
_DNS_GROUP = r"(?P<dns>[\w\-.^_]*\w)"
_CIDR_GROUP = r"(?P<cidr>\d+)"
_ADDR = rf"\[?(?:{_IP4_GROUP}|{_IP6_GROUP})\]?"
_SUBNET = rf"\[?(?:{_IP4_GROUP}|{_IP6_GROUP})(?:/{_CIDR_GROUP})?\]?"
_FIXED_TAGS = {
    "IP4": _IP4_GROUP, "IP6": _IP6_GROUP, "ADDR": _ADDR, "CIDR": _CIDR_GROUP, "SUBNET": _SUBNET,
    "DNS": _DNS_GROUP, "F-ID/": r"(?P<fid>\S+)", "F-PORT/": r"(?P<fport>\w+)",
}  # fmt: skip
_FIXED_TAGS |= {f"F-{tag}/": _FIXED_TAGS[tag] for tag in ("IP4", "IP6", "ADDR", "CIDR", "SUBNET", "DNS")}
_GROUP_ALIASES = {"id": "fid", "port": "fport"}
_SELF_CLOSING_DATA = {"F-ID/": "fid", "F-PORT/": "fport"}
_ALTERNATE = re.compile(r"^alt_(.+?)(?:_\d+)?$")

# Groups that identify a failure; a failregex (or its prefregex) needs one of them.
FAILURE_ID_GROUPS = ("fid", "ip4", "ip6", "dns", "mlfid")
# Groups with a meaning to the matching itself, not data about the failure.
CONTROL_GROUPS = frozenset({"ip4", "ip6", "dns", "cidr", "mlfid", "nofail", "mlfforget", "mlfgained", "content"})
USEDNS = ("yes", "warn", "no", "raw")


class RegexError(ValueError):
    """A regex that cannot be used, with the reason."""


@dataclass(slots=True, frozen=True)
class Fail2BanRegex:
    """One compiled regex and what its tags made of it."""

    source: str  # as written, tags and all
    regex: re.Pattern[str]
    captures: tuple[str, ...]  # the groups of <F-NAME> tags that carry data (user, alt_user...)
    skiplines: tuple[str, ...]  # the groups <SKIPLINES> became
    uses_subnet: bool  # <CIDR> or <SUBNET>: a match may name a network
    # (alt_NAME[_N], NAME): a value the first group stands in with when the second is empty.
    alternates: tuple[tuple[str, str], ...] = ()
    # Text every match contains: a buffer without it is not searched at all.
    literal: str | None = None

    def groups(self, m: re.Match[str]) -> dict:
        """The named groups of a match, with alternates (<F-ALT_USER> for <F-USER>) merged in."""
        found = m.groupdict()
        for group, base in self.alternates:
            value = found.get(group)
            if value and not found.get(base):
                found[base] = value
        return found

    def has_failure_id(self) -> bool:
        return any(group in self.regex.groupindex for group in FAILURE_ID_GROUPS)


def is_tag(name: str) -> bool:
    """Is `<name>` one of Fail2Ban's regex tags (rather than a reference to an option)?"""
    return name in ("HOST", "SKIPLINES") or name in _FIXED_TAGS or _CUSTOM.match(name) is not None


def translate(regex: str, usedns: str = "warn") -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The Python regex for a Fail2Ban regex, its data groups and its <SKIPLINES> groups."""
    opened: set[str] = set()
    captures: list[str] = []
    skiplines: list[str] = []

    def replace(m: re.Match[str]) -> str:
        tag = m.group()
        name = tag[1:-1]
        if name == "HOST":
            # A name is matched too (and reported as unusable) unless usedns = no.
            return _ADDR if usedns == "no" else rf"(?:{_ADDR}|{_DNS_GROUP})"
        if name == "SKIPLINES":
            group = f"skiplines{len(skiplines)}"
            skiplines.append(group)
            return rf"\n(?P<{group}>(?:(?:.*\n)*?))"
        if name in _FIXED_TAGS:
            data = _SELF_CLOSING_DATA.get(name)
            if data is not None and data not in captures:
                captures.append(data)
            return _FIXED_TAGS[name]
        custom = _CUSTOM.match(name)
        if custom is None:
            return tag  # not a tag of ours: "<>" in a regex, a named group's "<name>"...
        closing, custom_name = custom.groups()
        if closing:
            return ")" if custom_name in opened else tag
        opened.add(custom_name)
        group = _GROUP_ALIASES.get(custom_name.lower(), custom_name.lower())
        if group not in CONTROL_GROUPS and group not in captures:
            captures.append(group)
        return f"(?P<{group}>"

    translated = _TAG.sub(replace, regex)
    translated = _GROUP_FLAGS.sub(lambda m: f"(?{m.group(1)}:", translated)
    return translated, tuple(captures), tuple(skiplines)


def compile_regex(regex: str, usedns: str = "warn", multiline: bool = False) -> Fail2BanRegex:
    """A Fail2Ban regex compiled (multi-line: `^` and `$` also at each line of the buffer)."""
    if not regex.strip():
        raise RegexError("empty regex")
    translated, captures, skiplines = translate(regex, usedns)
    try:
        compiled = re.compile(translated, re.MULTILINE if multiline else 0)
    except re.error as error:
        raise RegexError(f"does not compile: {error}") from None
    subnet = "cidr" in compiled.groupindex
    alternates = []
    for group in sorted(compiled.groupindex):
        m = _ALTERNATE.match(group)
        if m is not None:
            base = m.group(1).lower()
            alternates.append((group, _GROUP_ALIASES.get(base, base)))
    literal = regexlits.required_literal(translated)
    return Fail2BanRegex(regex, compiled, captures, skiplines, subnet, tuple(alternates),
                         literal if literal and len(literal) >= 3 else None)


def buffer_text(lines: list[str]) -> str:
    """The text regexes search: the buffered lines, each ending in a newline."""
    return "\n".join(lines) + "\n"


def split_lines(m: re.Match[str], skiplines: tuple[str, ...], lines: list) -> tuple[list, list]:
    """The buffered `lines` a match used and those it left, in order. `lines` are entries whose
    first item is the line's text; lines the match only skipped over (<SKIPLINES>) are left."""
    if len(lines) <= 1:
        return list(lines), []
    text = m.string
    first_start = text.rfind("\n", 0, m.start() + 1) + 1
    last_newline = text.find("\n", max(m.end() - 1, 0))
    last_end = len(text) if last_newline < 0 else last_newline + 1
    first = text.count("\n", 0, first_start)
    last = text.count("\n", 0, last_end)
    used = list(lines[first:last])
    left = list(lines[:first])
    skipped = [line for group in skiplines if (part := m.group(group)) for line in part.splitlines()]
    position = 0
    for skipped_line in skipped:
        for offset, entry in enumerate(used[position:]):
            if entry[0] == skipped_line:
                left.append(used.pop(position + offset))
                position += offset
                break
    left.extend(lines[last:])
    return used, left
