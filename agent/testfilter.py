"""`jailwarden test-filter`: run one filter over a log and count what it finds.

Every line gets one verdict: "skip" (blank or comment), "other" (not from a program the
filter is for), "error" (a line from such a program that could not be parsed, or an
unreadable JSON/syslog line), "fail", "ignored" or "miss".

Classic file lines take a fast path: a line that does not contain any of the filter's syslog
tags cannot be from its program and is not parsed at all. The verdicts are the same as
`agent.lines.event_from_line` followed by `Filter.match` (a test holds them to that).
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from dataclasses import dataclass, field
from typing import Callable, Iterable

from agent.lines import LineError, event_from_line
from parsers.filter import Address, Filter, Verdict, parse_address
from parsers.fileline import ERROR, OTHER, FileLineMatcher

# report(lineno, line, verdict, address, captures, reason, counts)
Reporter = Callable[[int, str, str, "Address | None", dict, str, bool], None]


@dataclass(slots=True)
class Summary:
    lines: int = 0
    skipped: int = 0
    other: int = 0
    errors: int = 0
    matched: int = 0
    uncounted: int = 0  # matched lines whose regex is marked count = false
    ignored: int = 0
    missed: int = 0
    addresses: Counter = field(default_factory=Counter)


_BLOCK = 65536
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

    def run(self, lines: Iterable[str], first_lineno: int = 1) -> Summary:
        """Read `lines` (numbered from `first_lineno`) and add their verdicts to the summary."""
        classic = FileLineMatcher(self.filter).verdict
        tags = self.filter.syslog
        probes = _probes(tags) or ("\n",)  # a journal-only filter: no classic line is its program's
        single = probes[0] if len(probes) == 1 else None
        now = self.now
        report = self.report
        want_captures = report is not None
        counts: Counter[str] = Counter()  # every verdict but the fast path's "other"
        texts: Counter[str] = Counter()  # failures by address text; merged into addresses below
        lineno = first_lineno - 1
        source = iter(lines)
        # Blocks of lines so that progress costs nothing per line.
        while block := list(islice(source, _BLOCK)):
            for lineno, line in enumerate(block, lineno + 1):
                first = line[:1]
                reason = ""
                if first in _NOT_CLASSIC:
                    if first == "{" or first == "<":
                        result, reason = self._general(line, want_captures)
                    elif first == "#" or not line or line.isspace():
                        result = SKIP
                    else:  # a classic line that starts with a space: not well-formed
                        result, reason = classic(line, want_captures)
                elif (single not in line) if single is not None else not any(p in line for p in probes):
                    # The common case, counted at the end as what is left over.
                    if report is not None:
                        report(lineno, line, "other", None, None, "", True)
                    continue
                else:
                    result, reason = classic(line, want_captures)
                kind = result.kind
                counts[kind] += 1
                if kind == "fail":
                    texts[result.text] += 1
                    if not result.counts:
                        counts["uncounted"] += 1
                if report is not None:
                    report(lineno, line, kind, result.address, result.captures, reason, result.counts)
            if self.progress is not None:
                self.progress(lineno)
        s = self.summary
        total = lineno - first_lineno + 1
        s.lines += total
        s.skipped += counts["skip"]
        s.errors += counts["error"]
        s.matched += counts["fail"]
        s.uncounted += counts["uncounted"]
        s.ignored += counts["ignored"]
        s.missed += counts["miss"]
        s.other += total - sum(counts.values()) + counts["uncounted"] + counts["other"]
        for text, count in texts.items():
            s.addresses[parse_address(text)] += count
        return s

    def _general(self, line: str, want_captures: bool) -> tuple[Verdict, str]:
        event = event_from_line(line, self.now)
        if isinstance(event, LineError):
            return ERROR, event.reason
        if not self.filter.applies_to(event):
            return OTHER, ""
        return self.filter.examine(event.message, want_captures), ""
