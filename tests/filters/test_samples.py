"""Every shipped filter against its annotated sample log, in every mode it has.

Each data line of `tests/filters/NAME.log` is preceded by `# expect: VERDICT`:
`none`, `host=ADDR [user=NAME]` (all modes) or `MODE: host=ADDR` (that mode and none other).
A line is checked twice: through test-filter's fast path and through the path the daemon
takes (LogEvent, then Filter.match); both must give the expected verdict.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.lines import LineError, event_from_line
from agent.testfilter import FilterTester
from parsers.filterfile import find_filter, load_filter, modes_of

HERE = Path(__file__).parent
NOW = time.mktime((2026, 11, 25, 12, 0, 0, 0, 0, -1))


@dataclass(frozen=True)
class Sample:
    file: str
    lineno: int
    line: str
    mode: str | None  # None: the expectation holds in every mode
    host: str | None
    user: str | None


def read_samples(path: Path) -> list[Sample]:
    samples = []
    pending: str | None = None
    pending_at = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("# expect:"):
            assert pending is None, f"{path.name}:{pending_at}: annotation without a line"
            pending, pending_at = line[len("# expect:"):].strip(), lineno
            continue
        if not line.strip() or line.startswith("#"):
            continue
        assert pending is not None, f"{path.name}:{lineno}: data line without '# expect:'"
        mode = None
        verdict = pending
        if ":" in verdict.split("=", 1)[0]:
            mode, verdict = (part.strip() for part in verdict.split(":", 1))
        host = user = None
        if verdict != "none":
            assert verdict.startswith("host="), f"{path.name}:{pending_at}: bad annotation {pending!r}"
            host, _, rest = verdict[len("host="):].partition(" ")
            if rest:
                assert rest.startswith("user="), f"{path.name}:{pending_at}: bad annotation {pending!r}"
                user = rest[len("user="):]
        samples.append(Sample(path.name, lineno, line, mode, host, user))
        pending = None
    assert pending is None, f"{path.name}: annotation at line {pending_at} without a line"
    return samples


def cases():
    for log in sorted(HERE.glob("*.log")):
        path = find_filter(log.stem)
        for mode in modes_of(path):
            for sample in read_samples(log):
                yield pytest.param(log.stem, mode, sample, id=f"{log.stem}-{mode}-{sample.lineno}")


_filters: dict[tuple[str, str], object] = {}


def compiled(name: str, mode: str):
    if (name, mode) not in _filters:
        _filters[name, mode] = load_filter(find_filter(name), mode=mode)
    return _filters[name, mode]


@pytest.mark.parametrize("name,mode,sample", list(cases()))
def test_sample_line_verdict(name: str, mode: str, sample: Sample) -> None:
    flt = compiled(name, mode)
    expected = sample.host if sample.mode in (None, mode) else None
    expected = str(ipaddress.ip_address(expected)) if expected else None
    where = f"{sample.file}:{sample.lineno} ({mode})"

    event = event_from_line(sample.line, NOW)
    assert not isinstance(event, LineError), f"{where}: {event.reason}"
    failure = flt.match(event)
    got = str(failure.address) if failure else None
    assert got == expected, f"{where}: daemon path reported {got}, expected {expected}\n{sample.line}"
    if failure and sample.user is not None and sample.mode in (None, mode):
        assert failure.captures.get("user") == sample.user, where

    verdicts = []
    tester = FilterTester(flt, NOW, report=lambda lineno, line, v: verdicts.append((v.kind, v.address)))
    tester.run([sample.line + "\n"])
    (verdict, address), = verdicts
    got_fast = str(address) if verdict == "fail" else None
    assert got_fast == expected, f"{where}: test-filter reported {got_fast} ({verdict}), expected {expected}"


def test_every_shipped_filter_has_a_sample_log() -> None:
    shipped = {p.stem for p in (Path(find_filter("sshd")).parent).glob("*.toml")}
    samples = {p.stem for p in HERE.glob("*.log")}
    assert shipped <= samples, f"filters without a sample log: {sorted(shipped - samples)}"
