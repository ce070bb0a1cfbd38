"""Regex safety: a filter's regexes timed on adversarial lines (`parsers.adversarial`), and the
load-time check that marks a user's filter not linear when one of them is slow.

Anyone who can get a line into the log chooses how long our regexes spend on it: a remote
client through the user name, URL or user agent a service logs, a local user through the
journal or /dev/log, up to 64 KiB a line (`MAX_MESSAGE`). The shipped filters are held to
linear time by tests/unit/test_regex_safety.py. A user's filter (a local filter.d file, a
filter given by path, any "fail2ban:NAME" filter) is checked when it is loaded, by
`check_user_filter`, with the same adversarial lines.

Loading must stay fast, and a catastrophic regex takes minutes or years on one line, so the
check never starts with a long line. `probe` grows every line together, step by step, and
stops probing a regex at its first line that takes longer than `LOAD_BUDGET` (50 ms):

- Exponential backtracking (`(a+)+$`, `(\\w+\\s?)*$`) multiplies the time by some factor b
  for each character of the run: b is 2 to 3 for the usual nested repeats in Python's `re`,
  so 50 ms is crossed within 15 to 25 characters, and 60 would take hours. Up to 1 KiB the
  run grows by an eighth at a time (by one character below 16). The line that first crosses
  the budget then costs at most budget x b^(r/8) where b^r, the growth so far, is below
  budget / (the time of a tiny line, ~0.1 us): at most (5 x 10^5)^(1/8), about 5 times the
  budget, whatever b is. So a catastrophic regex costs the check well under a second.
- Polynomial backtracking (`.*x.*y` on a line full of x and no y: quadratic; one more such
  repeat: cubic) crosses the budget at a few thousand characters. Past 1 KiB the run
  doubles at each step, which multiplies a quadratic's time by 4 and a cubic's by 8: the
  crossing line costs at most 0.2 to 0.4 s.
- A linear regex takes a few milliseconds on a 64 KiB line (the slowest shipped ones, whose
  look-ahead tries a list of names at each character, about 30 ms on a 2-core VM), and with
  the doubling, all steps together cost about twice the last one. A machine slower than
  that must not turn such a regex into a warning: past 1 KiB, a line over the budget whose
  time grew no more than 2.8 times when the line doubled (linear: 2; quadratic: 4) is only
  slow when it takes more than `LOAD_LIMIT` (200 ms). Below 1 KiB any line over the budget
  is slow: no linear regex takes 50 ms on a line that short.

A line over the budget is timed again and the shorter time kept, so a pause of the machine
(another process, the garbage collector) does not fail a filter; a slow regex is as slow the
second time. A filter one of whose regexes is slow gets `linear = False`, which
agent.pipeline reads: where every jail that uses it requires trusted entries, entries whose
program identity could be forged are never run through it. Fail2Ban filters are not linear
anyway, and search at most their `longest_line` (8 KiB): they are probed up to that length,
and the warning tells the user which regex is slow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from parsers.adversarial import Shape, literal_words, regex_shapes, sample_shapes
from parsers.filter import Filter, FilterRegex
from parsers.filterfile import SHIPPED_DIR

MAX_MESSAGE = 64 * 1024  # the longest message the sources pass on (the syslog source's max_message)
# Seconds one line may take in one regex of a user's filter, unless the time grew only like the
# line (then up to LOAD_LIMIT): the slowest shipped regexes take ~30 ms on a 64 KiB line on a
# 2-core VM, and would take more than 50 ms on a slower machine without being any less linear.
LOAD_BUDGET = 0.05
LOAD_LIMIT = 0.2
# Time growth that still counts as linear when a line doubles (2, with room for noise; a
# quadratic regex's time grows by 4).
_LINEAR_GROWTH = 2.8
# Run length up to which lines grow by an eighth at a time; past it, by doubling.
_SLOW_GROWTH_UNTIL = 1024


@dataclass(slots=True, frozen=True)
class Timing:
    """How long one regex took on one adversarial line."""

    regex: FilterRegex
    shape: Shape  # what the line is made of
    length: int  # characters in the line
    seconds: float

    @property
    def message(self) -> str:
        return message_of(self.shape, self.length)

    def describe(self, source: bool = False) -> str:
        """"failregex[2] took 1.20 s on a 4,096-character line (what the line is made of)", with the
        regex as written after its place if `source`."""
        regex = f"{self.regex.where} {_excerpt(self.regex.source)}" if source else self.regex.where
        return f"{regex} took {_duration(self.seconds)} on a {self.length:,}-character line ({self.shape.label})"


@dataclass(slots=True, frozen=True)
class ProbeResult:
    """What `probe` found: the first line over the budget of each slow regex, the slowest line
    of the others, and how long probing took."""

    file: str
    slow: tuple[Timing, ...]
    slowest: Timing | None
    seconds: float

    def warning(self) -> str | None:
        """The warning for the user, None when no regex was slow."""
        if not self.slow:
            return None
        regexes = "; ".join(t.describe(source=True) for t in self.slow)
        return (f"filter {self.file}: a regex may backtrack for long on lines anyone can write: {regexes}. "
                f"The filter is treated as not linear: in jails that require trusted entries, entries whose "
                f"program could be forged are not run through it (rewrite the regex so that no two repeats, "
                f"nested or one after the other, can take the same text)")


@dataclass(slots=True, frozen=True)
class Trial:
    """An adversarial shape and the regexes it is run through."""

    shape: Shape
    regexes: tuple[FilterRegex, ...]
    # Made of a sample message: run only from 1 KiB on, when a regex that backtracks
    # exponentially has been caught on the lines built from it already.
    sample: bool = False


def trials(regexes: list[FilterRegex], samples: Iterable[str] = ()) -> list[Trial]:
    """The adversarial shapes for a filter's regexes: those built from a regex (run through it),
    and those made of the sample messages, run through the regexes that match the message (the
    others fail at its first words, however long it grows), or all of them if none does."""
    fixed = set().union(*(literal_words(rx.regex) for rx in regexes)) if regexes else set()
    found: dict[tuple[str, str, str], Trial] = {}
    for rx in regexes:
        for shape in regex_shapes(rx.regex):
            key = (shape.prefix, shape.unit, shape.suffix)
            if key in found:
                found[key] = replace(found[key], regexes=found[key].regexes + (rx,))
            else:
                found[key] = Trial(shape, (rx,))
    matching: dict[str, tuple[FilterRegex, ...]] = {}
    for shape in sample_shapes(samples, fixed):
        if shape.sample not in matching:
            run = [rx for rx in regexes if (rx.regex.search if rx.searched else rx.regex.match)(shape.sample)]
            matching[shape.sample] = tuple(run or regexes)
        found[shape.prefix, shape.unit, shape.suffix] = Trial(shape, matching[shape.sample], sample=True)
    return list(found.values())


def time_line(regex: FilterRegex, message: str, repeat: int = 1) -> float:
    """Seconds the regex takes on `message`, the fastest of `repeat` runs (run as the filter runs it)."""
    run = regex.regex.search if regex.searched else regex.regex.match
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        run(message)
        best = min(best, time.perf_counter() - started)
    return best


def message_of(shape: Shape, length: int) -> str:
    """The shape's message at `length` characters (its prefix and suffix alone if they are longer)."""
    return shape.message(max(0, length - shape.fixed))


def run_lengths(limit: int) -> Iterator[int]:
    """The run lengths `probe` steps through, ending at `limit`: by an eighth, then doubling."""
    run = 1
    while run < limit:
        yield run
        run = run * 2 if run >= _SLOW_GROWTH_UNTIL else min(run + max(1, run // 8), _SLOW_GROWTH_UNTIL)
    yield limit


def probe(flt: Filter, record: Callable[[Timing], None] | None = None) -> ProbeResult:
    """Time every regex of the filter on its adversarial lines (see the module's docstring), up
    to 64 KiB or the filter's `longest_line`; `record`, if given, is told every timing."""
    started = time.perf_counter()
    longest = min(MAX_MESSAGE, flt.longest_line or MAX_MESSAGE)
    slow, slowest = probe_regexes(flt.regexes, LOAD_BUDGET, longest=longest, record=record, limit=LOAD_LIMIT)
    return ProbeResult(flt.file, slow, slowest, time.perf_counter() - started)


def probe_regexes(regexes: list[FilterRegex], budget: float, samples: Iterable[str] = (),
                  longest: int = MAX_MESSAGE, record: Callable[[Timing], None] | None = None,
                  limit: float | None = None) -> tuple[tuple[Timing, ...], Timing | None]:
    """The first slow line of each slow regex, and the slowest line of the others: the regexes
    timed on their adversarial lines (and the `samples` stretched), all growing together up to
    `longest` characters. A line is slow when it takes longer than `budget`, unless its time
    only grew like its length since the step before and stays within `limit` (by default
    `budget`). A regex is no longer timed after its first slow line. `record`, if given, is
    told every timing."""
    limit = budget if limit is None else limit
    todo = [trial for trial in trials(regexes, samples) if trial.shape.fixed < longest]
    slow: dict[str, Timing] = {}
    slowest: Timing | None = None
    before: dict[tuple[int, str], float] = {}  # (trial, regex) -> seconds at the step before (doubling only)
    done = 0
    for run in run_lengths(longest):
        for index, trial in enumerate(todo):
            if trial.sample and run < _SLOW_GROWTH_UNTIL:
                continue  # see `Trial.sample`
            size = min(run, longest - trial.shape.fixed)
            if size <= done and size < run:
                continue  # timed at its full length already
            message = trial.shape.message(size)
            for rx in trial.regexes:
                if rx.where in slow:
                    continue
                seconds = time_line(rx, message)
                if seconds > budget:
                    # Once more: a pause of the machine is not the regex's doing.
                    seconds = min(seconds, time_line(rx, message))
                timing = Timing(rx, trial.shape, len(message), seconds)
                if record is not None:
                    record(timing)
                if seconds > limit or seconds > budget and not _linear(seconds, before.get((index, rx.where))):
                    slow[rx.where] = timing
                    continue
                if size >= _SLOW_GROWTH_UNTIL:
                    before[index, rx.where] = seconds
                if slowest is None or seconds > slowest.seconds:
                    slowest = timing
        done = run
    return tuple(slow.values()), slowest


def _linear(seconds: float, previous: float | None) -> bool:
    """Did a time grow no faster than its line since the step before (which doubled the line)?
    Not when the line is below 1 KiB (no step before is kept): a regex that takes tens of
    milliseconds on a line that short is not linear in any useful sense."""
    return previous is not None and seconds <= _LINEAR_GROWTH * previous


def is_shipped(flt: Filter) -> bool:
    """Is the filter one of ours (held to linear time by the tests), not the user's?"""
    shipped = SHIPPED_DIR.resolve()
    return all(Path(path).resolve().parent == shipped for path in flt.files)


def check_user_filter(flt: Filter) -> str | None:
    """Probe a filter the user supplied (not a shipped one): a slow regex makes it not linear,
    and the warning naming the file, the regex, the time and the line's length is returned."""
    if is_shipped(flt):
        return None
    warning = probe(flt).warning()
    if warning is not None:
        flt.linear = False
    return warning


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _excerpt(source: str, width: int = 100) -> str:
    """The regex as written, quoted, cut at `width` (escaped only if it holds unprintable characters)."""
    text = source if len(source) <= width else source[:width - 3] + "..."
    return f"'{text}'" if text.isprintable() else repr(text)
