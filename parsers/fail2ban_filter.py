"""The `Filter` a Fail2Ban filter becomes, and the line Fail2Ban's journal reader builds.

A journal or syslog entry is matched as the line Fail2Ban's journal reader builds from its
fields, `HOSTNAME IDENTIFIER[PID]: MESSAGE`; a line of a log file has its date found and cut
out first (`parsers.dates`); either then goes through Fail2Ban's matching
(`parsers.fail2ban_match`). Host names are never resolved: a failure naming a host rather
than an address is reported as unusable and counts nowhere.

A line longer than `MAX_LINE` characters is not searched at all (a "miss" saying so, counted
in `lines_too_long`): some of Fail2Ban's regexes take time that grows with the cube of the
length (minutes on a 64 KiB line anyone can write to the journal), and no real log line is
that long. It is not cut short either: a cut line ends where the writer chose, so a regex
anchored at the end would take an address written just before the cut for the one the
service wrote after it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Mapping
from pathlib import Path

from parsers.dates import DateDetector
from parsers.fail2ban_match import LineMatcher, Outcome
from parsers.filter import ADDRESS_CACHE_MAX, IGNORED, MISS, Event, Failure, Filter, FilterRegex, Verdict, normalise

# The longest line Fail2Ban's regexes search (8 KiB is more than any service writes).
MAX_LINE = 8192
_TOO_LONG = f"longer than {MAX_LINE:,} characters: not searched"
_FULL_PREFIX = {4: 32, 6: 128}
# Address texts longer than this (a host name, an <F-ID>) are judged anew rather than kept.
_JUDGED_TEXT_MAX = 64


def journal_line(fields: Mapping[str, str], message: str) -> str:
    """The line Fail2Ban's journal reader makes of an entry: `HOSTNAME IDENTIFIER[PID]: MESSAGE`
    (identifier SYSLOG_IDENTIFIER else _COMM, pid SYSLOG_PID else _PID; a kernel entry gets
    its monotonic time after the tag), newlines written as "\\n"."""
    parts = []
    host = fields.get("_HOSTNAME")
    if host:
        parts.append(host)
    identifier = fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM")
    if identifier:
        pid = fields.get("SYSLOG_PID") or fields.get("_PID")
        if pid:
            try:
                pid = str(int(pid, 0))
            except ValueError:
                pass
            identifier = f"{identifier}[{pid}]"
        parts.append(identifier + ":")
        if identifier == "kernel":
            monotonic = fields.get("_SOURCE_MONOTONIC_TIMESTAMP") or fields.get("__MONOTONIC_TIMESTAMP")
            if monotonic and monotonic.isdigit():
                parts.append(f"[{int(monotonic) / 1e6:12.6f}]")
    parts.append(message)
    return " ".join(parts).replace("\n", "\\n")


def _program(fields: Mapping[str, str], trusted: bool) -> Hashable:
    # Multi-line state is kept per writing program (host and identifier), see fail2ban_match,
    # and apart for entries whose identity can be forged: a local user who writes as
    # "sshd[PID]" must never change what sshd's own lines of that pid left.
    return (trusted, fields.get("_HOSTNAME"), fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM"))


class Fail2BanFilter(Filter):
    """A Fail2Ban filter, usable wherever a `Filter` is: `match(event)` for journal and syslog
    entries, `examine_line(line, now)` for the lines of a log file (date cut out first)."""

    linear = False  # Fail2Ban's own regexes: some backtrack for long on long lines
    whole_lines = True  # its regexes find the program in the line (after the date is cut out)
    longest_line = MAX_LINE

    def __init__(self, name: str, *, file: str, files: list[Path], mode: str, parameters: Mapping[str, str],
                 journal: tuple, syslog: frozenset[str], matcher: LineMatcher, dates: DateDetector,
                 journal_matcher: LineMatcher | None = None, notes: tuple[str, ...] = (),
                 journal_declared: bool = False) -> None:
        super().__init__(name, description=f"Fail2Ban filter {name}", mode=mode, journal=journal,
                         syslog=syslog, failregex=[], file=file, journal_declared=journal_declared)
        self._files = list(files)
        self.parameters = dict(parameters)
        self.notes = notes
        self.dates = dates
        self._matcher = matcher
        # Fail2Ban reads the journal with logtype = journal, which some filters match differently.
        self._journal_matcher = journal_matcher or matcher
        self.lines_too_long = 0  # lines longer than MAX_LINE, not searched
        self._last_time: float | None = None  # of the last line of a file that had a date
        self._judged: dict[tuple, tuple] = {}  # address groups -> (address, text, reason)
        # The data a failure carries: every <F-NAME> group of the filter's regexes (earlier lines
        # of a multi-line failure may have set them), <F-ALT_NAME> merged into NAME.
        regexes = [r for m in (matcher, self._journal_matcher) for r in [m.prefregex, *m.failregex] if r is not None]
        self._captures = tuple(dict.fromkeys(
            [group for r in regexes for group in r.captures] + [base for r in regexes for _, base in r.alternates]))
        # Its verdicts depend on earlier lines (maxlines, multi-line failure ids).
        self.stateful = any(m.maxlines > 1 or any("mlfid" in r.regex.groupindex for r in m.failregex + [m.prefregex]
                                                   if r is not None) for m in (matcher, self._journal_matcher))

    def __repr__(self) -> str:
        return f"Fail2BanFilter({self.name!r}, mode={self.mode!r})"

    @property
    def files(self) -> list[Path]:
        """The files read: the filter's .conf, its includes, .local and .d/ overrides."""
        return list(self._files)

    @property
    def regexes(self) -> list[FilterRegex]:
        """Its prefregex, failregexes and ignoreregexes, each once (the journal's, where they
        differ, marked so), searched as Fail2Ban searches them."""
        found: dict[str, FilterRegex] = {}
        for matcher, label in ((self._matcher, ""), (self._journal_matcher, " (logtype = journal)")):
            places = [("prefregex", matcher.prefregex)] if matcher.prefregex is not None else []
            places += [(f"{key}[{i}]", regex) for key, regexes in (("failregex", matcher.failregex),
                                                                    ("ignoreregex", matcher.ignoreregex))
                       for i, regex in enumerate(regexes)]
            for where, regex in places:
                found.setdefault(regex.regex.pattern, FilterRegex(where + label, regex.source, regex.regex, True))
        return list(found.values())

    def _too_long(self, text: str) -> bool:
        if len(text) <= MAX_LINE:
            return False
        self.lines_too_long += 1
        return True

    def examine(self, message: str, captures: bool = True) -> Verdict:
        """The verdict on a message taken as a whole line without a date."""
        if self._too_long(message):
            return Verdict("miss", detail=_TOO_LONG)
        return self._verdict(self._matcher.process(message, 0.0, "message"), captures)

    def examine_line(self, line: str, now: float, captures: bool = True) -> Verdict:
        """The verdict on a line of a log file: its date (found as Fail2Ban finds it) is cut
        out and the regexes search the rest; `now` completes dates without a year."""
        line = line.rstrip("\r\n")
        if self._too_long(line):
            return Verdict("miss", detail=_TOO_LONG)
        found = self.dates.find(line, now)
        text = line if found is None else line[:found.start] + line[found.end:]
        if found is not None and found.time is not None:
            self._last_time = when = found.time
        else:
            # A line without a date of its own (part of a multi-line message) is as old as the
            # last line that had one.
            when = self._last_time if self._last_time is not None else now
        return self._verdict(self._matcher.process(text, when, ""), captures)

    def examine_event(self, event: Event, captures: bool = True, trusted: bool | None = None) -> Verdict:
        """The verdict on a journal or syslog entry, identity aside; `trusted` (by default
        `identify`'s answer) keeps the multi-line state of entries whose writer could be anyone
        apart from that of entries whose writer is proven."""
        if trusted is None:
            trusted = bool(self.identify(event))
        text = journal_line(event.fields, event.message)
        if self._too_long(text):
            return Verdict("miss", detail=_TOO_LONG)
        matcher = self._journal_matcher if event.source == "journal" else self._matcher
        return self._verdict(matcher.process(text, event.time, _program(event.fields, trusted)), captures)

    def match(self, event: Event) -> Failure | None:
        """The failure this entry records, or None: identity first, then Fail2Ban's matching
        of the line its journal reader would build from the entry."""
        trusted = self.identify(event)
        if trusted is None:
            return None
        verdict = self.examine_event(event, trusted=trusted)
        if verdict.kind != "fail":
            return None
        return Failure(verdict.address, self.name, event.time, event.message, verdict.captures or {},
                       verdict.counts, verdict.repeat, trusted)

    def _verdict(self, outcome: Outcome, captures: bool) -> Verdict:
        if outcome.kind == "ignored":
            return IGNORED
        if outcome.kind != "fail":
            return MISS
        groups = outcome.groups
        key = (groups.get("ip4"), groups.get("ip6"), groups.get("dns"), groups.get("fid"), groups.get("cidr"))
        found = self._judged.get(key)
        if found is None:
            found = _failure_address(groups)
            # The same attackers fail again and again; a long text is no address anyway.
            if all(text is None or len(text) <= _JUDGED_TEXT_MAX for text in key):
                if len(self._judged) >= ADDRESS_CACHE_MAX:
                    self._judged.clear()
                self._judged[key] = found
        address, text, reason = found
        named = _captured(groups, self._captures) if captures else None
        if address is None:
            return Verdict("miss", None, {"host": text, **(named or {})}, reason)
        return Verdict("fail", address, named or None, str(address))


def _failure_address(groups: Mapping[str, object]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                                                             str, str]:
    """The address a failure names, the text it was taken from, and why there is none."""
    for group in ("ip4", "ip6", "dns", "fid"):
        text = groups.get(group)
        if text is not None:
            break
    text = str(text)
    try:
        address = normalise(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        what = "a host name (names are never resolved)" if group == "dns" else "not an IP address"
        return None, text, f"{text!r} is {what}"
    cidr = groups.get("cidr")
    if cidr is not None and group in ("ip4", "ip6") and int(cidr) < _FULL_PREFIX[address.version]:
        return None, text, f"{text}/{cidr} is a network: jailwarden bans single addresses"
    return address, text, ""


def _captured(groups: Mapping[str, object], names: tuple[str, ...]) -> dict[str, str]:
    return {name: groups[name] for name in names if isinstance(groups.get(name), str)}
