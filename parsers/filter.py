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

from parsers.regexlist import Alternative, Regex, RegexList, expand
from parsers.syslog import SyslogError, file_line_tag_and_message

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Per filter: address texts already parsed, and their verdicts. Big enough for the distinct
# attackers of a busy day; a flood of unique addresses clears it rather than growing it.
ADDRESS_CACHE_MAX = 8192
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


class FilterRegex(NamedTuple):
    """One of a filter's regexes on its own, as the filter runs it (for checks of one regex at a time)."""

    where: str  # its place in the filter file: "failregex[2]", "modes.aggressive.ignoreregex[0]"
    source: str  # as written
    regex: re.Pattern[str]
    searched: bool = False  # searched anywhere in the message (Fail2Ban's way), not matched at its start


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
    # The longest message its regexes search (None: every message, whole).
    longest_line: int | None = None

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
        self._fail = RegexList(file, "failregex", list(failregex), need_host=True)
        self._ignore = RegexList(file, "ignoreregex", list(ignoreregex), need_host=False)
        # Each regex as written, with its place in the file (kept for `regexes`).
        self._sources = [(entry.where or f"{key}[{i}]", entry.regex) if isinstance(entry, Regex)
                         else (f"{key}[{i}]", entry)
                         for key, entries in (("failregex", failregex), ("ignoreregex", ignoreregex))
                         for i, entry in enumerate(entries)]
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
    def failregex_alternatives(self) -> list[Alternative]:
        return self._fail.alternatives

    @property
    def regexes(self) -> list[FilterRegex]:
        """Each failregex and ignoreregex on its own, placeholders expanded, compiled as the filter
        runs it (matched at the start of the message)."""
        return [FilterRegex(where, source, re.compile(expand(source[1:] if source.startswith("^") else source)))
                for where, source in self._sources]

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

    def verdict_of(self, m: re.Match[str], alternative: Alternative, source: str, start: int,
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
