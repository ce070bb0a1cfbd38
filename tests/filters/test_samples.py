"""Every shipped filter against its annotated sample log, in every mode it has.

Each data line of `tests/filters/NAME.log` is preceded by `# expect: VERDICT`:
`none`, `host=ADDR [user=NAME] [trusted|untrusted]` (all modes) or `MODE: host=ADDR ...` (that
mode and none other). A line is checked twice: through test-filter's fast path and through the
path the daemon takes (LogEvent, then Filter.match); both must give the expected verdict, and
the daemon's failure must be trusted (or not) as the line says. A journal line that names an
address must say; for syslog and file lines, which the daemon never trusts by their tag, the
word is optional.

Filters name the accounts their daemons run as ("postfix", "www-data"), which the daemon looks
up on its host. Here they are looked up in ACCOUNTS instead, so the verdicts do not depend on
the machine running the tests: the journal samples' _UID values are written for that table.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.lines import LineError, event_from_line
from agent.testfilter import FilterTester
from parsers.filter import is_trusted_match
from parsers.filterfile import find_filter, load_filter, modes_of

HERE = Path(__file__).parent
NOW = time.mktime((2026, 11, 25, 12, 0, 0, 0, 0, -1))

# The host the samples were written for: a Debian 12 machine with every daemon the filters
# cover installed (Grafana from its own apt repository, Gitea's binary run as "git"). daemon
# and www-data have the uids Debian's base-passwd fixes; the others are system uids as adduser
# handed them out there. The Fedora/RHEL-only names the filters also list (apache, nginx,
# named, exim, lighttpd, openvpn...) have no account on it and so match nothing, as on a real
# Debian host: a Fedora sample's uid (48, 89...) is nobody's here.
ACCOUNTS = {
    "daemon": 1,
    "www-data": 33,
    "postfix": 107,
    "Debian-exim": 108,
    "bind": 109,
    "mysql": 110,
    "haproxy": 111,
    "courier": 112,
    "asterisk": 113,
    "grafana": 115,
    "git": 116,
    "postgres": 117,
}


@dataclass(frozen=True)
class Sample:
    file: str
    lineno: int
    line: str
    mode: str | None  # None: the expectation holds in every mode
    host: str | None
    user: str | None
    trusted: bool | None  # None: the line does not say


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
        host = user = trusted = None
        if verdict != "none":
            assert verdict.startswith("host="), f"{path.name}:{pending_at}: bad annotation {pending!r}"
            for word, meaning in ((" trusted", True), (" untrusted", False)):
                if verdict.endswith(word):
                    verdict, trusted = verdict[:-len(word)], meaning
            host, _, rest = verdict[len("host="):].partition(" ")
            if rest:
                assert rest.startswith("user="), f"{path.name}:{pending_at}: bad annotation {pending!r}"
                user = rest[len("user="):]
        samples.append(Sample(path.name, lineno, line, mode, host, user, trusted))
        pending = None
    assert pending is None, f"{path.name}: annotation at line {pending_at} without a line"
    return samples


def sample_messages(name: str) -> list[str]:
    """The messages of a filter's sample log, as the daemon would see them."""
    messages = []
    for line in (HERE / f"{name}.log").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            event = event_from_line(line, NOW)
            if not isinstance(event, LineError):
                messages.append(event.message)
    return messages


def cases():
    for log in sorted(HERE.glob("*.log")):
        path = find_filter(log.stem)
        for mode in modes_of(path):
            for sample in read_samples(log):
                yield pytest.param(log.stem, mode, sample, id=f"{log.stem}-{mode}-{sample.lineno}")


_filters: dict[tuple[str, str], object] = {}


def compiled(name: str, mode: str):
    if (name, mode) not in _filters:
        _filters[name, mode] = load_filter(find_filter(name), mode=mode, accounts=ACCOUNTS.get)
    return _filters[name, mode]


@pytest.mark.parametrize("name,mode,sample", list(cases()))
def test_sample_line_verdict(name: str, mode: str, sample: Sample) -> None:
    flt = compiled(name, mode)
    expected = sample.host if sample.mode in (None, mode) else None
    expected = str(ipaddress.ip_address(expected)) if expected else None
    where = f"{sample.file}:{sample.lineno} ({mode})"

    event = event_from_line(sample.line, NOW)
    assert not isinstance(event, LineError), f"{where}: {event.reason}"
    if event.source == "journal" and sample.host is not None:
        assert sample.trusted is not None, f"{where}: a journal sample must say `trusted` or `untrusted`"
    failure = flt.match(event)
    got = str(failure.address) if failure else None
    assert got == expected, f"{where}: daemon path reported {got}, expected {expected}\n{sample.line}"
    if failure and sample.user is not None and sample.mode in (None, mode):
        assert failure.captures.get("user") == sample.user, where
    if failure and sample.trusted is not None:
        assert failure.trusted == sample.trusted, \
            f"{where}: the failure is {'' if failure.trusted else 'un'}trusted\n{sample.line}"

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


def _with_trusted_journal_identity() -> list[str]:
    return [name for name in sorted(p.stem for p in HERE.glob("*.log"))
            if any(is_trusted_match(group) for group in compiled(name, "normal").journal)]


@pytest.mark.parametrize("name", _with_trusted_journal_identity())
def test_trusted_journal_identity_is_shown_by_a_sample(name: str) -> None:
    """A filter whose journal identity can be trusted has a journal sample that is, and when the
    identity names accounts, the uid of one of them (from ACCOUNTS) is what makes it so."""
    flt = compiled(name, "normal")
    account_uids = {uid for group in flt.journal if is_trusted_match(group)
                    for uid in group.get("_UID", ()) if int(uid) in ACCOUNTS.values()}
    trusted = [sample for sample in read_samples(HERE / f"{name}.log")
               if sample.trusted and sample.line.startswith("{")]
    assert trusted, f"{name}.log: no journal sample marked trusted"
    if account_uids:
        uids = {json.loads(sample.line).get("_UID") for sample in trusted}
        assert uids & account_uids, f"{name}.log: no trusted sample has the uid of an account the filter names"
