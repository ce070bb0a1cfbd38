"""Measures google-re2 against Python's re on the shipped filters' regexes (a benchmark, not a test).

RE2 takes time linear in the line whatever the regex, but accepts no look-around, no
back-reference, no atomic group and no possessive repeat. Every shipped failregex has <HOST>,
whose expansion ends in look-aheads (parsers/regexlist.py: an address is never cut out of a
longer token, and a colon after it must be a port's), so the counts printed are:

- the regexes RE2 accepts as they are;
- those it accepts once <HOST>'s look-aheads are taken out ("bare"), which adopting RE2 would
  need, with the same checks made in Python on each match.

Then, per filter (the failregexes of all its modes in one alternation, matched at the start of
each message as the filter runs them), lines/s of:

- re on the regexes as shipped (what runs today);
- re on the bare regexes, and RE2 on the bare regexes (the same regexes in both engines);
- RE2 on the bare regexes with every group made non-capturing ("gate"): whether a line
  matches at all, which RE2 answers without tracking groups (a design that would let RE2
  turn away the lines that do not match, and re extract the address from those that do);

over a realistic corpus (sshd: the sshd lines of tests/bench/gen_authlog.py's auth.log; every
filter: the messages of its sample log tests/filters/NAME.log, repeated to at least 2,000) and
over the adversarial lines agent/regexprobe.py builds for the filter, at 64 KiB. Filters whose
bare alternation RE2 refuses (atomic groups, possessive repeats, other look-arounds) are
listed without figures. It also counts the lines on which RE2 and re (bare) disagree: match or
not, or the address text taken.

Usage: .venv/bin/python tests/bench/bench_re2.py [--lines N] [--filters NAME ...]
google-re2 is not a dependency of the project: `.venv/bin/pip install google-re2`. Without
it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_authlog  # noqa: E402  (sits next to this script, which is not in a package)
from agent.regexprobe import MAX_MESSAGE, message_of, trials  # noqa: E402
from parsers.filter import FilterRegex  # noqa: E402
from parsers.filterfile import SHIPPED_DIR, load_filter, modes_of  # noqa: E402
from parsers.regexlist import expand  # noqa: E402
from parsers.syslog import file_line_tag_and_message  # noqa: E402
from tests.filters.test_samples import sample_messages  # noqa: E402

try:
    import re2
except ImportError:
    re2 = None

SAMPLES = ROOT / "tests" / "filters"
MIN_SAMPLE_LINES = 2_000
# The look-aheads at the end of <HOST>'s expansion (the same for <ADDR>, <IP4>, <IP6>).
_HOST = expand("<HOST>")
HOST_END = _HOST[_HOST.index(")(?!") + 1:]
_GROUP = re.compile(r"\(\?P<(\w+)>|\(\?P=(\w+)\)")


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """RE2 logs every pattern it refuses to stderr (through absl) besides raising."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def re2_accepts(pattern: str) -> bool:
    with quiet_stderr():
        try:
            re2.compile(pattern)
        except re2.error:
            return False
    return True


def alternation(patterns: list[str]) -> tuple[str, list[str]]:
    """One alternation of the patterns, each one's groups renamed NAME_i; and the host groups."""
    parts, hosts = [], []
    for i, pattern in enumerate(patterns):
        def rename(m: re.Match[str], i: int = i) -> str:
            return f"(?P<{m[1]}_{i}>" if m[1] else f"(?P={m[2]}_{i})"

        parts.append(f"(?:{_GROUP.sub(rename, pattern)})")
        if "(?P<host>" in pattern:
            hosts.append(f"host_{i}")
    return "|".join(parts), hosts


@dataclass
class Engines:
    """The filter's failregexes as one alternation: shipped (re), bare (re and RE2)."""

    shipped: re.Pattern[str]
    bare: re.Pattern[str]
    fast: object  # the bare alternation in RE2
    gate: object  # the same without capturing groups
    hosts: list[str]

    def all(self) -> tuple:
        return self.shipped, self.bare, self.fast, self.gate


def failregexes(name: str) -> list[FilterRegex]:
    path = SHIPPED_DIR / f"{name}.toml"
    found = {rx.where: rx for mode in modes_of(path)
             for rx in load_filter(path, mode=mode, accounts=lambda account: 1000).regexes}
    return [rx for rx in found.values() if "failregex" in rx.where]


def host_of(m, hosts: list[str]) -> str | None:
    if m is None:
        return None
    return next((m.group(h) for h in hosts if m.group(h) is not None), "")


def rate(match: Callable, messages: list[str], repeat: int = 3) -> float:
    """Lines per second, best of `repeat` passes."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        for message in messages:
            match(message)
        best = min(best, time.perf_counter() - started)
    return len(messages) / best if best > 0 else math.inf


def rates_on_the_fly(engines: Engines, lines: Iterable[str]) -> tuple[list[float], int, int]:
    """Lines/s of the engines over lines made one at a time (64 KiB lines are not kept), the
    count of lines, and of those on which RE2 and re (bare) disagree."""
    seconds = [0.0] * 4
    count = differ = 0
    for message in lines:
        results = []
        for i, engine in enumerate(engines.all()):
            started = time.perf_counter()
            results.append(engine.match(message))
            seconds[i] += time.perf_counter() - started
        count += 1
        differ += host_of(results[1], engines.hosts) != host_of(results[2], engines.hosts)
    return [count / s if s > 0 else math.inf for s in seconds], count, differ


def disagreements(engines: Engines, messages: list[str]) -> int:
    return sum(host_of(engines.bare.match(m), engines.hosts) != host_of(engines.fast.match(m), engines.hosts)
               for m in messages)


def authlog_messages(lines: int, tags: frozenset[str]) -> list[str]:
    messages = []
    for line in gen_authlog.generate(lines, gen_authlog.DEFAULT_SEED):
        parsed = file_line_tag_and_message(line)
        if isinstance(parsed, tuple) and parsed[0] in tags:
            messages.append(parsed[1])
    return messages


def fmt(rate_: float) -> str:
    return f"{rate_:>12,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="auth.log lines generated for sshd")
    parser.add_argument("--filters", nargs="*", default=None, help="only these filters")
    args = parser.parse_args(argv)
    if re2 is None:
        print("bench_re2: google-re2 is not installed (it is no dependency of jailwarden); to measure, run "
              "`.venv/bin/pip install google-re2`. Nothing measured.")
        return 0
    names = args.filters or sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    total = as_is = bare_ok = 0
    refused: dict[str, list[str]] = {}
    rows = []
    for name in names:
        regexes = failregexes(name)
        shipped = [rx.regex.pattern for rx in regexes]
        bare = [pattern.replace(HOST_END, "") for pattern in shipped]
        total += len(regexes)
        as_is += sum(map(re2_accepts, shipped))
        fits = [re2_accepts(pattern) for pattern in bare]
        bare_ok += sum(fits)
        refused[name] = [rx.where for rx, ok in zip(regexes, fits, strict=True) if not ok]
        if not all(fits):
            rows.append((name, None))
            continue
        shipped_alt, hosts = alternation(shipped)
        bare_alt, _ = alternation(bare)
        gate_alt = _GROUP.sub(lambda m: "(?:" if m[1] else "", bare_alt)
        with quiet_stderr():
            engines = Engines(re.compile(shipped_alt), re.compile(bare_alt), re2.compile(bare_alt),
                              re2.compile(gate_alt), hosts)
        corpus = sample_messages(name)
        corpus = corpus * max(1, math.ceil(MIN_SAMPLE_LINES / max(1, len(corpus))))
        real = [rate(engine.match, corpus) for engine in engines.all()]
        real_differ = disagreements(engines, corpus)
        generated = None
        if name == "sshd":
            authlog = authlog_messages(args.lines, load_filter(SHIPPED_DIR / "sshd.toml").syslog)
            generated = ([rate(engine.match, authlog) for engine in engines.all()],
                         len(authlog), disagreements(engines, authlog))
        lines = (message_of(trial.shape, MAX_MESSAGE) for trial in trials(regexes, sample_messages(name)))
        adversarial = rates_on_the_fly(engines, lines)
        rows.append((name, (len(corpus), real, real_differ, generated, adversarial)))
        print(f"  {name}: done", file=sys.stderr, flush=True)

    print(f"failregexes of the shipped filters (all modes): {total}; RE2 accepts {as_is} as they are, "
          f"{bare_ok} without <HOST>'s look-aheads")
    for name, where in refused.items():
        if where:
            print(f"  refused even bare: {name}: {', '.join(where)}")
    print()
    header = f"{'filter':<20} {'corpus':<22} {'lines':>7} {'re shipped/s':>12} {'re bare/s':>12} {'re2 bare/s':>12}" \
             f" {'re2 gate/s':>12} {'re2/re':>7} {'gate/re':>7} {'differ':>6}"
    print(header)
    sums = {}
    for name, result in rows:
        if result is None:
            print(f"{name:<20} (RE2 refuses some of its regexes even bare)")
            continue
        samples, real, real_differ, generated, (adv_rates, adv_count, adv_differ) = result
        corpora = [("sample log", samples, real, real_differ)]
        if generated is not None:
            corpora.insert(0, (f"auth.log ({args.lines:,})", generated[1], generated[0], generated[2]))
        corpora.append(("adversarial 64 KiB", adv_count, adv_rates, adv_differ))
        for label, count, rates, differ in corpora:
            print(f"{name:<20} {label:<22} {count:>7,} {fmt(rates[0])} {fmt(rates[1])} {fmt(rates[2])}"
                  f" {fmt(rates[3])} {rates[2] / rates[0]:>6.2f}x {rates[3] / rates[0]:>6.2f}x {differ:>6}")
            kind = label.split(" (")[0]
            times = sums.setdefault(kind, [0, 0.0, 0.0, 0.0, 0.0])
            times[0] += count
            for i in range(4):
                times[i + 1] += count / rates[i]
    print()
    for kind, (count, *seconds) in sums.items():
        shipped_rate, bare_rate, fast_rate, gate_rate = (count / s for s in seconds)
        print(f"all filters, {kind:<20} {count:>9,} lines: re shipped {shipped_rate:,.0f}/s, re bare "
              f"{bare_rate:,.0f}/s, re2 bare {fast_rate:,.0f}/s ({fast_rate / shipped_rate:.2f}x), re2 gate "
              f"{gate_rate:,.0f}/s ({gate_rate / shipped_rate:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
