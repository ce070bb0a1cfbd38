"""Filters: which log entries a jail cares about and the address each failure names.

A filter is a TOML file (see `parsers/filters/*.toml`, read by `parsers.filterfile`), compiled
for one mode into a `Filter`; `Filter.match(event)` checks the entry's identity (trusted
journal fields, or the syslog tag) and then runs the message through one combined,
start-anchored regex.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

from parsers import regexlits
from parsers.syslog import SyslogError, file_line_tag_and_message

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

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
# Per filter: address texts already parsed, and their verdicts. Big enough for the distinct
# attackers of a busy day; a flood of unique addresses clears it rather than growing it.
ADDRESS_CACHE_MAX = 8192
# A literal shorter than this is in nearly every message: testing for it costs more than it saves.
_MIN_LITERAL = 3
_REPEATED = re.compile(r"message repeated ([1-9][0-9]{0,5}) times: \[ ?(.*)\]$")

# Journal fields journald sets from the kernel's view of the sending process, which that
# process cannot choose. Not among them: _COMM and _CMDLINE (a process renames itself with
# prctl(PR_SET_NAME) or by rewriting argv), SYSLOG_IDENTIFIER and every field without "_".
# Alone, most still do not prove who wrote an entry: any user may run /usr/sbin/sshd, and
# without libpam-systemd a user's login stays in ssh.service's cgroup. The uid does: journald
# takes it from the socket's credentials.
TRUSTED_JOURNAL_FIELDS = frozenset({
    "_SYSTEMD_UNIT", "_SYSTEMD_SLICE", "_SYSTEMD_CGROUP", "_EXE", "_UID", "_GID", "_TRANSPORT",
    "_CAP_EFFECTIVE", "_SELINUX_CONTEXT", "_AUDIT_LOGINUID",
})  # fmt: skip

JournalMatch = Mapping[str, frozenset[str]]


def is_trusted_match(match: JournalMatch) -> bool:
    """Does matching this group prove which program wrote the entry? Yes when it pins the uid
    and every other field is one journald takes from the kernel (`_EXE`, `_SYSTEMD_UNIT`...),
    or when it admits only root (`_UID = ["0"]`), who could forge anything anyway."""
    if "_UID" not in match:
        return False
    return set(match) <= TRUSTED_JOURNAL_FIELDS or match["_UID"] == frozenset({"0"})


class FilterError(Exception):
    """A filter that cannot be used, with the file, the place in it and the reason."""

    def __init__(self, file: str, where: str, reason: str) -> None:
        super().__init__(f"{file}: {where}: {reason}" if where else f"{file}: {reason}")
        self.file = file
        self.where = where
        self.reason = reason


class Event(Protocol):
    """What a filter reads of a log entry (agent.events.LogEvent satisfies it)."""

    time: float
    source: str
    message: str
    fields: Mapping[str, str]


@dataclass(slots=True, frozen=True)
class Failure:
    """One failed attempt attributed to one address."""

    address: Address
    filter: str
    time: float
    message: str
    captures: Mapping[str, str] = field(default_factory=dict)
    counts: bool = True  # False: evidence of an attempt that another line counts
    repeat: int = 1  # one log line for this many identical failures
    # The program's identity came from fields the writer cannot forge (see Filter.identify).
    trusted: bool = False


class Verdict(NamedTuple):
    """What a filter made of one message: "fail" (with the address), "ignored" or "miss";
    readers of whole lines add "other" (another program's line) and "error" (unparsable).

    `detail` is the address as the message wrote it for a failure (counting by it is cheaper
    than by address), and the reason for an error. A tuple, not a dataclass: one is made for
    every candidate line, and tuples are made fastest.
    """

    kind: str
    address: Address | None = None
    captures: Mapping[str, str] | None = None
    detail: str = ""
    counts: bool = True
    repeat: int = 1  # how many times the service logged it ("message repeated N times")


MISS = Verdict("miss")
IGNORED = Verdict("ignored")
OTHER = Verdict("other")


@dataclass(slots=True, frozen=True)
class Regex:
    """A failregex with options; `count=False` marks a line that names the address of an
    attempt the service also logs in another line, which is the one that counts."""

    regex: str
    count: bool = True
    where: str = ""  # its place in the filter file, for errors ("modes.aggressive.failregex[2]")


@dataclass(slots=True, frozen=True)
class _Alternative:
    host_group: str | None
    counts: bool  # False: the service logs the same attempt again in a line that counts
    captures: tuple[tuple[str, str], ...]  # (name the filter wrote, name in the combined regex)


def expand(regex: str) -> str:
    """The regex with its placeholders replaced by their capture groups."""
    return _PLACEHOLDER_RE.sub(lambda m: _PLACEHOLDERS[m.group(0)], regex)


def _rename_groups(regex: str, index: int) -> str:
    # Python's re forbids a group name twice in one pattern, so each alternative's names get
    # a suffix; _Alternative maps them back.
    def rename(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f"(?P<{m.group(1)}__{index}>"
        if m.group(2) is not None:
            return f"(?P={m.group(2)}__{index})"
        return f"(?({m.group(3)}__{index})"

    return _GROUP_RE.sub(rename, regex)


def normalise(address: Address) -> Address:
    """The address with IPv4-mapped IPv6 (``::ffff:192.0.2.1``) turned into plain IPv4."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def captured_address(text: str) -> Address | None:
    """The address a <HOST> capture names (brackets dropped, normalised), None if none."""
    if text.startswith("["):
        text = text[1:-1]
    try:
        return normalise(ipaddress.ip_address(text))
    except ValueError:
        return None


class _RegexList:
    """A list of start-anchored regexes compiled into one alternation, plus a literal prefilter."""

    def __init__(self, file: str, key: str, regexes: list[str | Regex], need_host: bool) -> None:
        self.alternatives: list[_Alternative] = []
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
            self.alternatives.append(_Alternative(host, counts, names))
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


class Filter:
    """One filter compiled for one mode."""

    # Do its regexes take time linear in the message, whoever wrote it? Ours are written and
    # checked to; a Fail2Ban filter's may not (some take a minute on a 64 KiB line), and then an
    # entry that counts in none of its jails is not worth examining.
    linear = True
    # Lines too long to be searched (a Fail2Ban filter's regexes search at most MAX_LINE
    # characters); ours read every line whole.
    lines_too_long = 0
    # Does it read a log file's lines whole, finding the date and the program itself (a
    # Fail2Ban filter), rather than as syslog lines whose tag says the program?
    whole_lines = False
    # Do its verdicts depend on earlier lines (a Fail2Ban filter's maxlines, <F-MLFID>)?
    stateful = False
    # What the user should know about how jailwarden reads it (a Fail2Ban filter's features).
    notes: tuple[str, ...] = ()

    def __init__(self, name: str, *, description: str = "", mode: str = "normal",
                 journal: tuple[JournalMatch, ...] | JournalMatch = (),
                 syslog: frozenset[str] = frozenset(),
                 failregex: list[str | Regex], ignoreregex: list[str] = (), file: str = "<filter>",
                 journal_declared: bool = False) -> None:
        self.name = name
        self.description = description
        self.mode = mode
        self.file = file
        # Alternatives: an entry is the filter's when it matches every field of one of them.
        groups = [journal] if isinstance(journal, Mapping) else list(journal)
        self.journal: tuple[dict[str, frozenset[str]], ...] = tuple(
            {key: frozenset(values) for key, values in group.items()} for group in groups if group)
        self._journal_trust = tuple(is_trusted_match(group) for group in self.journal)
        self.syslog = frozenset(syslog)
        # Journal entries are known by their syslog tag only in a filter that declares no journal
        # identity; one whose groups all named accounts absent from this host matches none.
        self.journal_routes: tuple[dict[str, frozenset[str]], ...] = self.journal or (
            () if journal_declared or not self.syslog else ({"SYSLOG_IDENTIFIER": self.syslog},))
        self._fail = _RegexList(file, "failregex", list(failregex), need_host=True)
        self._ignore = _RegexList(file, "ignoreregex", list(ignoreregex), need_host=False)
        # Failures without captures by address text, one table per `counts`: the same few
        # addresses fail again and again, and a lookup is cheaper than a new Verdict.
        self._failures: tuple[dict[str, Verdict], dict[str, Verdict]] = ({}, {})
        self._addresses: dict[str, Address | None] = {}

    def __repr__(self) -> str:
        return f"Filter({self.name!r}, mode={self.mode!r})"

    @property
    def files(self) -> list[Path]:
        """The files the filter was built from (a reload compares them)."""
        return [Path(self.file)]

    @property
    def failregex_pattern(self) -> str:
        """The failregex alternation (groups renamed, `_N` wrapping the N-th), for embedding."""
        return self._fail.pattern

    @property
    def failregex_alternatives(self) -> list[_Alternative]:
        return self._fail.alternatives

    @property
    def literals(self) -> tuple[str, ...] | None:
        """The prefilter: a message containing none of these cannot match (None: no prefilter)."""
        return self._fail.literals

    def identify(self, event: Event) -> bool | None:
        """Is this entry from a program the filter is for, and how sure is that?

        None: not this filter's program. True: the identity rests on what the writer cannot
        forge (journal fields journald takes from the kernel; a syslog sender the source
        trusts). False: only on what the writer claims (a syslog tag in the journal).
        Journal entries are matched against the filter's `journal` alternatives; a filter
        that declares none falls back to its syslog tags, which any local user can write.
        """
        fields = event.fields
        if event.source == "journal" and (self.journal or not self.journal_routes):
            matched = None
            for group, trusted in zip(self.journal, self._journal_trust, strict=True):
                for key, values in group.items():
                    if fields.get(key) not in values:
                        break
                else:
                    # Any trusted alternative that matches makes the entry trusted.
                    if trusted and getattr(event, "trusted", False):
                        return True
                    matched = False
            return matched
        if fields.get("SYSLOG_IDENTIFIER") in self.syslog:
            return event.source != "journal" and getattr(event, "trusted", False)
        return None

    def applies_to(self, event: Event) -> bool:
        """Is this entry from a program the filter is for (however sure)?"""
        return self.identify(event) is not None

    def examine(self, message: str, captures: bool = True) -> Verdict:
        """The verdict on a message, identity aside (`captures=False` skips the named groups)."""
        if message.startswith("message repeated "):
            # rsyslog's RepeatedMsgReduction wraps N identical consecutive messages in one
            # line; the program's own message is inside, and it happened N times.
            repeated = _REPEATED.match(message)
            if repeated is not None:
                verdict = self.examine(repeated.group(2), captures)
                times = int(repeated.group(1))
                return verdict._replace(repeat=times) if verdict.kind == "fail" and times > 1 else verdict
        m = self._fail.match(message)
        if m is None:
            return MISS
        return self.verdict_of(m, self._fail.by_group[m.lastindex], message, 0, captures)

    def examine_event(self, event: Event, captures: bool = True, trusted: bool | None = None) -> Verdict:
        """The verdict on a journal or syslog entry, identity aside: its message's. (`trusted`
        matters to filters that keep state across entries.)"""
        return self.examine(event.message, captures)

    def examine_line(self, line: str, now: float, captures: bool = True) -> Verdict:
        """The verdict on a line of a log file, a classic syslog line: "other" when its tag is
        none of the filter's, "error" (with the reason) when it is no such line. Its date
        decides nothing here; `now` is for filters that read dates (`whole_lines`)."""
        parsed = file_line_tag_and_message(line)
        if isinstance(parsed, SyslogError):
            return Verdict("error", detail=parsed.reason)
        tag, message = parsed
        if tag not in self.syslog:
            return OTHER
        return self.examine(message, captures)

    def verdict_of(self, m: re.Match[str], alternative: _Alternative, source: str, start: int,
                   captures: bool = True) -> Verdict:
        """The verdict once a failregex alternative matched the message that starts at `start`
        in `source`: the address checked, ignoreregex applied, the named groups collected."""
        text = m.group(alternative.host_group)
        if self._ignore.regex is not None and self._ignore.match(source, start) is not None:
            return IGNORED if self._address(text) is not None else MISS
        if captures and alternative.captures:
            address = self._address(text)
            if address is None:
                return MISS
            named = {name: value for name, group in alternative.captures
                     if (value := m.group(group)) is not None}
            return Verdict("fail", address, named, text, alternative.counts)
        known = self._failures[alternative.counts]
        verdict = known.get(text)
        if verdict is None:
            address = self._address(text)
            if address is None:
                return MISS
            if len(known) >= ADDRESS_CACHE_MAX:
                known.clear()
            verdict = known[text] = Verdict("fail", address, None, text, alternative.counts)
        return verdict

    def _address(self, text: str) -> Address | None:
        # None for 999.1.1.1 and the like: shaped like an address, but not one.
        if text in self._addresses:
            return self._addresses[text]
        if len(self._addresses) >= ADDRESS_CACHE_MAX:
            self._addresses.clear()
        address = self._addresses[text] = captured_address(text)
        return address

    def match(self, event: Event) -> Failure | None:
        """The failure this entry records, or None."""
        trusted = self.identify(event)
        if trusted is None:
            return None
        verdict = self.examine(event.message)
        if verdict.kind != "fail":
            return None
        return Failure(verdict.address, self.name, event.time, event.message, verdict.captures or {},
                       verdict.counts, verdict.repeat, trusted)
