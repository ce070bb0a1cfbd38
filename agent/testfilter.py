"""`jailwarden test-filter`: run one filter over a log and count what it finds.

Every line gets one verdict: "skip" (blank or comment), "other" (not from a program the
filter is for), "error" (a line from such a program that could not be parsed, or an
unreadable JSON/syslog line), "fail", "ignored" or "miss".

Classic file lines take a fast path: a line that does not contain any of the filter's syslog
tags cannot be from its program and is not parsed at all, and the rest are matched by
`parsers.fileline`. The verdicts are the same as `agent.lines.event_from_line` followed by
`Filter.match` (tests hold them to that).

A Fail2Ban filter (`parsers.fail2ban`, `Filter.whole_lines`) reads every line whole, as
Fail2Ban reads a log file: the date is found and cut out and the regexes search the rest;
entries (JSON, RFC 5424) are matched as the line Fail2Ban's journal reader would build from
them, and a line that starts like one but is none (murmur's "<W>2019-...", an XML log) is
read as a plain line. When the filter names its program, a classic syslog line that names
none of its syslog tags is "other", as the daemon would never route it there.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Callable, Iterable, Iterator

from agent.lines import LineError, event_from_line
from parsers.filter import OTHER, Filter, Verdict, captured_address
from parsers.fileline import FileLineMatcher
from parsers.syslog import SyslogError, file_line_tag_and_message

# report(lineno, line, verdict): "error" verdicts carry the reason as their detail.
Reporter = Callable[[int, str, Verdict], None]


@dataclass(slots=True)
class Summary:
    lines: int = 0
    skipped: int = 0
    other: int = 0
    errors: int = 0
    matched: int = 0
    uncounted: int = 0  # matched lines whose regex is marked count = false
    counted: Counter = field(default_factory=Counter)  # failures towards maxretry, by address
    ignored: int = 0
    missed: int = 0
    addresses: Counter = field(default_factory=Counter)
    too_long: int = 0  # lines too long for the filter's regexes to search (counted as missed too)

    def add(self, other: Summary) -> None:
        """Add another part of the same log's counts to these."""
        for item in fields(self):
            mine = getattr(self, item.name)
            if isinstance(mine, Counter):
                mine.update(getattr(other, item.name))
            else:
                setattr(self, item.name, mine + getattr(other, item.name))


_BLOCK_LINES = 65536
_BLOCK_BYTES = 1 << 22
_NOT_CLASSIC = frozenset(["", "{", "<", "#", "\n", "\r", " ", "\t"])
SKIP = Verdict("skip")


def _probes(tags: Iterable[str]) -> tuple[str, ...]:
    # "sshd" in a line is implied by "sshd-session": testing the shorter tag is enough.
    tags = sorted(set(tags), key=len)
    kept: list[str] = []
    for tag in tags:
        if not any(shorter in tag for shorter in kept):
            kept.append(tag)
    return tuple(kept)


class FilterTester:
    """Counts one filter's verdicts over lines; `now` dates lines that carry no year."""

    def __init__(self, filter: Filter, now: float, report: Reporter | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.filter = filter
        self.now = now
        self.report = report
        self.progress = progress
        self.summary = Summary()
        probes = _probes(filter.syslog)
        tags = re.compile("|".join(map(re.escape, probes))).search if probes else _never
        if filter.whole_lines:
            # Every line is the filter's to judge: its regexes recognise the program themselves
            # (but a syslog line naming none of its tags is another program's).
            self._tags = tags if probes else None
            self._classic = self._whole_line
            self._has_probe = _always
            self._quick_probe = ""
        else:
            self._classic = FileLineMatcher(filter).verdict
            # With one probe, a line without it that starts like a classic line is "other" at
            # once, and a classic line with it goes straight to the matcher. With several (or
            # none: a journal-only filter) the quick probe is "", which is in every line, and
            # every line goes through judge().
            self._has_probe = tags
            self._quick_probe = probes[0] if len(probes) == 1 else ""

    def judge(self, line: str, captures: bool = True) -> Verdict:
        """The verdict on one line, whatever its format."""
        first = line[:1]
        if first in _NOT_CLASSIC:
            if first == "{" or first == "<":
                return self._general(line, captures)
            if first == "#" or not line or line.isspace():
                return SKIP
            # A line starting with a space is no well-formed classic line: it gets the
            # classic parse all the same, to be reported as unparsable.
        elif self._has_probe(line) is None:
            return OTHER
        return self._classic(line, captures)

    def run(self, lines: Iterable[str], first_lineno: int = 1) -> Summary:
        """Read `lines` (numbered from `first_lineno`; a text file or any iterable of lines)
        and add their verdicts to the summary."""
        too_long_before = self.filter.lines_too_long
        counts = self._counts = Counter()  # every verdict but "fail" and the quick path's "other"
        texts = self._texts = Counter()  # matched lines by (address text, counts)
        self._repeats = Counter()  # counted failures beyond one per line, by address text
        lineno = first_lineno - 1
        for block in _blocks(lines):
            if self.report is None:
                self._tally(block)
            else:
                self._report(block, lineno + 1)
            lineno += len(block)
            if self.progress is not None:
                self.progress(lineno)
        s = self.summary
        total = lineno - first_lineno + 1
        s.lines += total
        s.skipped += counts["skip"]
        s.errors += counts["error"]
        s.ignored += counts["ignored"]
        s.missed += counts["miss"]
        s.too_long += self.filter.lines_too_long - too_long_before
        s.other += total - sum(counts.values()) - sum(texts.values()) + counts["other"]
        for (text, counted), count in texts.items():
            address = captured_address(text)
            s.matched += count
            s.addresses[address] += count
            if counted:
                s.counted[address] += count + self._repeats[text]
            else:
                s.uncounted += count
        return s

    def _tally(self, block: list[str]) -> None:
        # The hot loop: most lines leave it after one substring test.
        quick_probe = self._quick_probe
        judge = self.judge
        classic = self._classic
        add = self._add
        for line in block:
            if quick_probe in line:
                add(classic(line, False) if quick_probe and line[:1] not in _NOT_CLASSIC else judge(line, False))
            elif line[:1] in _NOT_CLASSIC:
                add(judge(line, False))

    def _report(self, block: list[str], first_lineno: int) -> None:
        for lineno, line in enumerate(block, first_lineno):
            result = self.judge(line)
            self._add(result)
            self.report(lineno, line, result)

    def _add(self, result: Verdict) -> None:
        if result.kind == "fail":
            self._texts[result.detail, result.counts] += 1
            if result.repeat != 1 and result.counts:
                self._repeats[result.detail] += result.repeat - 1
        else:
            self._counts[result.kind] += 1

    def _whole_line(self, line: str, captures: bool = True) -> Verdict:
        if self._tags is not None and self._tags(line) is None \
                and not isinstance(file_line_tag_and_message(line), SyslogError):
            return OTHER
        return self.filter.examine_line(line, self.now, captures)

    def _general(self, line: str, captures: bool) -> Verdict:
        flt = self.filter
        event = event_from_line(line, self.now)
        if isinstance(event, LineError):
            # A plain line that only starts like an entry is still a line to a filter that reads them whole.
            return self._classic(line, captures) if flt.whole_lines else Verdict("error", detail=event.reason)
        trusted = flt.identify(event)
        if trusted is None:
            # A Fail2Ban filter without any identity (a web server's log filter) takes every entry.
            if not flt.whole_lines or flt.journal or flt.syslog:
                return OTHER
            trusted = False
        return flt.examine_event(event, captures, trusted)


def _never(line: str) -> None:
    return None


def _always(line: str) -> bool:
    return True


def _blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    # Whole blocks keep the per-line loop tight and let progress be reported per block.
    readlines = getattr(lines, "readlines", None)
    if readlines is not None:
        while block := readlines(_BLOCK_BYTES):
            yield block
        return
    source = iter(lines)
    while block := list(islice(source, _BLOCK_LINES)):
        yield block
