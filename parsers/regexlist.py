"""Failregex lists: placeholders such as <HOST> expanded, every regex anchored at the start of
the message and compiled with the others into one alternation, plus a literal prefilter."""

from __future__ import annotations

import re
from dataclasses import dataclass

from parsers import regexlits
from parsers.errors import FilterError

# <HOST> never resolves names: a name is attacker-influenced (reverse DNS) and resolving it
# would let the attacker choose whom we ban. <HOST> and <ADDR> are therefore the same.
_IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_IP6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:" + _IP4 + r"|[0-9A-Fa-f]{0,4})"
# <HOST> takes any run of hex digits, colons and dots and leaves the judging to
# ipaddress (a token that is no address gives no failure). Besides being faster than spelling
# out both families, this never lets the regex engine back off the address the service
# wrote last to an earlier, attacker-written one because the last one failed a stricter pattern.
_ANY_IP = r"[0-9A-Fa-f:.]*[0-9A-Fa-f]"
# The look-aheads stop a match inside a longer token (203.0.113.5 in 203.0.113.55 or 1.2.3.4.5).
# A colon may follow only as the start of a port (":51234", then neither an address character
# nor a colon and a hex digit), which the regex must then match itself: Apache 2.4 writes
# "[client ADDR:PORT]", IPv6 included and unbracketed, so "<HOST>:\d+" takes 2001:db8::7 from
# 2001:db8::7:5555 (the port is the last group); Gitea writes "from ADDR:PORT: reason".
_END = r"(?!\w)(?!:(?!\d{1,5}(?![\w.]|:[0-9A-Fa-f])))(?!\.[0-9A-Fa-f])"
_PLACEHOLDERS = {
    "<HOST>": rf"(?P<host>{_ANY_IP}|\[{_ANY_IP}\]){_END}",
    "<ADDR>": rf"(?P<host>{_ANY_IP}|\[{_ANY_IP}\]){_END}",
    "<IP4>": rf"(?P<host>{_IP4}){_END}",
    "<IP6>": rf"(?P<host>{_IP6}|\[{_IP6}\]){_END}",
}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in _PLACEHOLDERS))
_GROUP_RE = re.compile(r"\(\?P<([A-Za-z_]\w*)>|\(\?P=([A-Za-z_]\w*)\)|\(\?\(([A-Za-z_]\w*)\)")
# Flags written at the start of a regex apply to the whole pattern; inside the combined
# alternation they must become scoped, "(?i)x" -> "(?i:x)".
_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
# Numbered groups would point at another alternative's groups once the list is combined.
_NUMBERED_REFERENCE = re.compile(r"(?<!\\)\\[1-9]|\(\?\(\d")
# A literal shorter than this is in nearly every message: testing for it costs more than it saves.
_MIN_LITERAL = 3


@dataclass(slots=True, frozen=True)
class Regex:
    """A failregex with options; `count=False` marks a line that names the address of an
    attempt the service also logs in another line, which is the one that counts."""

    regex: str
    count: bool = True
    where: str = ""  # its place in the filter file, for errors ("modes.aggressive.failregex[2]")


@dataclass(slots=True, frozen=True)
class Alternative:
    host_group: str | None
    counts: bool  # False: the service logs the same attempt again in a line that counts
    captures: tuple[tuple[str, str], ...]  # (name the filter wrote, name in the combined regex)


def expand(regex: str) -> str:
    """The regex with its placeholders replaced by their capture groups."""
    return _PLACEHOLDER_RE.sub(lambda m: _PLACEHOLDERS[m.group(0)], regex)


def _rename_groups(regex: str, index: int) -> str:
    # Python's re forbids a group name twice in one pattern, so each alternative's names get
    # a suffix; Alternative maps them back.
    def rename(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f"(?P<{m.group(1)}__{index}>"
        if m.group(2) is not None:
            return f"(?P={m.group(2)}__{index})"
        return f"(?({m.group(3)}__{index})"

    return _GROUP_RE.sub(rename, regex)


class RegexList:
    """A list of start-anchored regexes compiled into one alternation, plus a literal prefilter."""

    def __init__(self, file: str, key: str, regexes: list[str | Regex], need_host: bool) -> None:
        self.alternatives: list[Alternative] = []
        parts = []
        literals: list[str] | None = []
        for i, entry in enumerate(regexes):
            where = f"{key}[{i}]"
            raw, counts = entry, True
            if isinstance(entry, Regex):
                raw, counts, where = entry.regex, entry.count, entry.where or where
            if not isinstance(raw, str):
                raise FilterError(file, where, f"expected a string, got {type(raw).__name__}")
            placeholders = _PLACEHOLDER_RE.findall(raw)
            if need_host and not placeholders:
                raise FilterError(file, where, "no <HOST> placeholder: a failure must name an address")
            if len(placeholders) > 1:
                raise FilterError(file, where, f"{len(placeholders)} address placeholders; a regex may have one")
            # Every regex is anchored at the start of the message already; a leading "^" is
            # dropped so the regex also works inside a longer pattern (parsers.fileline).
            expanded = expand(raw[1:] if raw.startswith("^") else raw)
            try:
                compiled = re.compile(expanded)
            except re.error as error:
                raise FilterError(file, where, f"does not compile: {error}") from None
            if _NUMBERED_REFERENCE.search(raw):
                raise FilterError(file, where, "numbered back-references (\\1, (?(1)...)) are not supported: "
                                               "name the group, (?P<name>...) and (?P=name)")
            flags = _LEADING_FLAGS.match(expanded)
            if flags is not None:
                # A verbose regex may end in a "# comment": close the group on a new line.
                end = "\n)" if "x" in flags.group(1) else ")"
                expanded = f"(?{flags.group(1)}:{expanded[flags.end():]}{end}"
            if any(name.startswith("_") or "__" in name for name in compiled.groupindex):
                raise FilterError(file, where, "group names starting with '_' or holding '__' are reserved")
            names = tuple((name, f"{name}__{i}") for name in compiled.groupindex if name != "host")
            host = f"host__{i}" if "host" in compiled.groupindex else None
            self.alternatives.append(Alternative(host, counts, names))
            parts.append(f"(?P<_{i}>{_rename_groups(expanded, i)})")
            if literals is not None:
                literal = regexlits.required_literal(expanded)
                literals = literals + [literal] if literal and len(literal) >= _MIN_LITERAL else None
        # The alternatives with their groups renamed, for patterns that embed this list.
        self.pattern = "|".join(parts)
        try:
            re.compile(self.pattern)
        except re.error as error:  # each regex compiled alone; only their combination is left
            raise FilterError(file, key, f"the regexes do not compile together: {error}") from None
        self.regex = re.compile(self.pattern) if parts else None
        # The wrapper group of the alternative that matched closes last, so it is m.lastindex.
        self.by_group = {self.regex.groupindex[f"_{i}"]: alternative
                         for i, alternative in enumerate(self.alternatives)} if parts else {}
        # One regex without a usable literal means any message could match: no prefilter then.
        self.literals = tuple(sorted(set(literals), key=len)) if literals else None

    def match(self, source: str, start: int = 0) -> re.Match[str] | None:
        """A match of the message that starts at `start` in `source`."""
        if self.regex is None:
            return None
        if self.literals is not None:
            # Testing all of `source` can only let more through, never fewer.
            for literal in self.literals:
                if literal in source:
                    break
            else:
                return None
        return self.regex.match(source, start)
