"""Fail2Ban's own filter corpus, shared by the regression test
(tests/integration/test_fail2ban_corpus.py) and the benchmark (tests/bench/bench_fail2ban_corpus.py).

Debian's fail2ban package carries the filters (etc/fail2ban/filter.d) and, for each, a
sample log whose lines are annotated with what Fail2Ban makes of them:
`# failJSON: {"match": true, "host": "192.0.2.1", ...}` above a line, `# filterOptions: [...]`
for the parameter sets (modes, logtypes) the following lines are checked with. The package
of the recorded version is fetched without installing it (`apt-get download fail2ban=VERSION`,
`dpkg-deb -x` into tests/.cache/fail2ban/); every filter is loaded with every parameter set,
and per filter the annotated lines on which jailwarden agrees are counted: no failure where
Fail2Ban has none, a failure with the same address where it has one.

Fail2Ban reports a host *name* (or text that is no valid address) where a line names one;
jailwarden never resolves names, so it reports such a match as unusable. Those lines are
counted apart, as "by design", when jailwarden matched the same line with the same host text.
Journal samples (logtype = journal) are also run as the journal entry they stand for, which
must give the same verdict as the line.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.events import LogEvent  # noqa: E402
from parsers.fail2ban import Fail2BanFilter, journal_line, load_fail2ban_filter  # noqa: E402
from parsers.errors import FilterError  # noqa: E402
from parsers.filter import Verdict  # noqa: E402

CACHE = ROOT / "tests" / ".cache" / "fail2ban"
# The counts tests/integration/test_fail2ban_corpus.py holds every filter to.
EXPECTED = ROOT / "tests" / "integration" / "fail2ban_corpus_expected.json"
LOGS = Path("usr/lib/python3/dist-packages/fail2ban/tests/files/logs")
FILTERS = Path("etc/fail2ban/filter.d")
TEST_NOW = 1124013600.0  # Fail2Ban's test clock: 2005-08-14 10:00:00 UTC
# The zone Fail2Ban's tests read local times in (the annotated times are in it).
TEST_ZONE = "CET-01CEST-02,M3.5.0,M10.5.0"
# The families whose every annotated line must agree.
TARGETED = re.compile(r"^(?:sshd|apache-.*|nginx-.*|postfix.*|dovecot|vsftpd|courier-.*|qmail|lighttpd-auth)$")
_ANNOTATION = re.compile(r"^#+ ?(failJSON|(?:file|filter)Options|addFILE):(.+)$")
# The only conditions the corpus uses: name == 'x', opts.get('k') == 'v' (or !=).
_CONDITION = re.compile(r"""^\s*(name|opts\.get\(['"]([\w.-]+)['"]\))\s*(==|!=)\s*['"]([^'"]*)['"]\s*$""")


# How long fetching and unpacking the package may take before the corpus counts as unavailable.
DOWNLOAD_SECONDS = 300
UNPACK_SECONDS = 120


class CorpusUnavailable(Exception):
    """The corpus could not be obtained (no apt, no network, no such version): the reason."""


def recorded() -> dict:
    """The recorded counts: {"fail2ban": VERSION, "filters": {NAME: [agree, by_design, total]},
    "times": [compared, equal]}."""
    return json.loads(EXPECTED.read_text())


def obtain_corpus(cache: Path = CACHE, version: str | None = None) -> Path:
    """The extracted package (filter.d and test logs), downloaded and unpacked once: Fail2Ban
    `version` (default: the recorded one) if not in the cache yet."""
    root = cache / "root"
    if (root / FILTERS).is_dir() and (root / LOGS).is_dir():
        return root
    version = version or recorded()["fail2ban"]
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise CorpusUnavailable("apt-get and dpkg-deb are needed to fetch Debian's fail2ban package")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / ".gitignore").write_text("*\n")
        with tempfile.TemporaryDirectory(dir=cache) as download:
            done = subprocess.run([apt, "download", f"fail2ban={version}"], cwd=download, capture_output=True,
                                  text=True, timeout=DOWNLOAD_SECONDS)
            debs = sorted(Path(download).glob("fail2ban_*.deb"))
            if done.returncode != 0 or not debs:
                raise CorpusUnavailable(f"apt-get download fail2ban={version} failed: "
                                        f"{(done.stderr or done.stdout).strip()[-300:]}")
            unpacked = cache / "unpacking"
            shutil.rmtree(unpacked, ignore_errors=True)
            subprocess.run([dpkg, "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True,
                           timeout=UNPACK_SECONDS)
            (unpacked / "VERSION").write_text(debs[0].name.split("_")[1] + "\n")  # fail2ban_VERSION_ARCH.deb
            shutil.rmtree(root, ignore_errors=True)
            unpacked.rename(root)
    except subprocess.TimeoutExpired as error:
        raise CorpusUnavailable(f"{' '.join(map(str, error.cmd))} took more than {error.timeout:g} s") from None
    except subprocess.CalledProcessError as error:
        output = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
        raise CorpusUnavailable(f"{' '.join(map(str, error.cmd))} failed: {output.strip()[-300:]}") from None
    except OSError as error:
        raise CorpusUnavailable(f"cannot fetch or unpack the package into {cache}: {error}") from None
    return root


def corpus_version(root: Path) -> str:
    version = root / "VERSION"
    return version.read_text().strip().split("_")[0] if version.is_file() else "unknown"


def _holds(condition: str, name: str, options: dict) -> bool:
    m = _CONDITION.match(condition)
    if m is None:
        raise ValueError(f"unsupported condition in the corpus: {condition!r}")
    value = name if m.group(1) == "name" else options.get(m.group(2))
    return (value == m.group(4)) == (m.group(3) == "==")


@dataclass(slots=True)
class Check:
    """One annotated line under one parameter set."""

    file: str
    lineno: int
    line: str
    options: dict
    expected: dict


def read_checks(logs: Path, name: str) -> list[Check]:
    """The annotated lines of a filter's sample logs, each with every parameter set it is checked with."""
    checks: list[Check] = []
    files = [name]
    index = 0
    # As in Fail2Ban's test, file options and the current parameter sets carry over to the
    # files a log adds (addFILE); until a filterOptions line, lines are checked without any.
    common: dict = {}
    option_sets: list[dict] = [{}]
    while index < len(files):
        path = logs / files[index]
        index += 1
        skip_block = False
        expected: dict | None = None
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            annotation = _ANNOTATION.match(raw)
            if annotation is not None:
                kind, data = annotation.group(1), json.loads(annotation.group(2))
                if kind == "fileOptions":
                    common = data
                elif kind == "filterOptions":
                    option_sets, skip_block = [], False
                    for options in data if isinstance(data, list) else [data]:
                        merged = {**common, **options}
                        if merged.get("test.condition") and not _holds(merged["test.condition"], name, merged):
                            skip_block = True
                        if not skip_block:
                            option_sets.append(merged)
                elif kind == "addFILE":
                    files.append(data)
                else:
                    expected = data
                continue
            if raw.startswith("#") or not raw.strip() or expected is None or skip_block:
                expected = None
                continue
            for options in option_sets:
                if expected.get("constraint") and not _holds(expected["constraint"], name, options):
                    continue
                checks.append(Check(files[index - 1], lineno, raw, options, expected))
            expected = None
    return checks


def _address(text: str):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.ipv4_mapped or address if address.version == 6 else address


@dataclass(slots=True)
class FilterResult:
    name: str
    total: int = 0
    agree: int = 0
    by_design: int = 0
    dated: int = 0  # matching lines with an annotated time
    time_agrees: int = 0
    journal: int = 0  # journal samples also run as a journal entry
    journal_same: int = 0  # of which the entry got the line's verdict
    error: str | None = None
    differences: list[dict] = field(default_factory=list)

    @property
    def agreeing(self) -> int:
        return self.agree + self.by_design


def time_agrees(flt: Fail2BanFilter, check: Check) -> bool | None:
    """Does the time jailwarden reads from a matching line equal the annotated one (None: no
    time to compare: not annotated, no date in the line, or a journal line whose time comes
    from the journal)?"""
    wanted = check.expected.get("time")
    if wanted is None or not check.expected.get("match") or check.options.get("logtype") == "journal":
        return None
    stamp = time.strptime(wanted.split(".")[0], "%Y-%m-%dT%H:%M:%S")
    expected = time.mktime(stamp) + (float("0." + wanted.split(".")[1]) if "." in wanted else 0.0)
    found = flt.dates.find(check.line, TEST_NOW)
    if found is None or found.start == found.end:
        return None  # a line of a multi-line failure without a date of its own: Fail2Ban takes an earlier line's
    return found.time is not None and abs(found.time - expected) < 1.0


# What Fail2Ban's journal reader writes before a message: "HOST IDENTIFIER[PID]: ".
_JOURNAL_PREFIX = re.compile(r"^(\S+) ([^\s\[:]+)(?:\[(\d+)\])?: ")


def journal_event(text: str) -> LogEvent:
    """The journal entry a journal sample line stands for: host, identifier and pid as fields
    when the line is what `journal_line` makes of them, else the whole line as the message."""
    m = _JOURNAL_PREFIX.match(text)
    if m is not None:
        fields = {"_HOSTNAME": m.group(1), "SYSLOG_IDENTIFIER": m.group(2)}
        if m.group(3) is not None:
            fields["SYSLOG_PID"] = m.group(3)
        if journal_line(fields, text[m.end():]) == text:
            return LogEvent(TEST_NOW, "journal", text[m.end():], fields, True)
    return LogEvent(TEST_NOW, "journal", text, {}, True)


def verdict(flt: Fail2BanFilter, check: Check) -> Verdict:
    """What jailwarden makes of a check's line, as Fail2Ban's test reads it."""
    if check.options.get("logtype") == "journal":
        # Fail2Ban's journal reader passes the time along: no date is looked for in the line.
        return flt.examine(check.options.get("test.prefix-line", "") + check.line)
    return flt.examine_line(check.line, TEST_NOW)


def judge(result: Verdict, check: Check) -> tuple[str, str]:
    """("agree" | "by-design" | "disagree", what jailwarden said) for one check."""
    unusable = result.kind == "miss" and result.captures is not None and "host" in result.captures
    said = (f"fail {result.address}" if result.kind == "fail" else
            f"unusable {result.captures['host']}" if unusable else result.kind)
    if not check.expected.get("match", False):
        return ("agree" if result.kind != "fail" and not unusable else "disagree"), said
    host = check.expected.get("host")
    wanted = _address(host) if host is not None else None
    if result.kind == "fail":
        return ("agree" if host is None or wanted == result.address else "disagree"), said
    if unusable and wanted is None and host is not None and result.captures["host"] == host:
        return "by-design", said
    return "disagree", said


def run_filter(root: Path, name: str) -> FilterResult:
    result = FilterResult(name)
    checks = read_checks(root / LOGS, name)
    filters: dict[str, Fail2BanFilter] = {}
    for check in checks:
        parameters = {k: v for k, v in check.options.items() if not k.startswith("test.")}
        key = json.dumps(parameters, sort_keys=True)
        result.total += 1
        try:
            if key not in filters:
                filters[key] = load_fail2ban_filter(str(root / FILTERS / f"{name}.conf"), require_identity=False,
                                                    parameters=parameters)
            flt = filters[key]
            outcome, said = judge(verdict(flt, check), check)
            timed = time_agrees(flt, check)
            if timed is not None:
                result.dated += 1
                result.time_agrees += timed
                if not timed:
                    result.differences.append({"file": check.file, "line": check.lineno, "options": check.options,
                                               "expected": check.expected, "jailwarden": "another time",
                                               "outcome": "time", "text": check.line})
            if check.options.get("logtype") == "journal":
                # The same line as the daemon gets it: an entry, its state kept per program.
                entry = journal_event(check.options.get("test.prefix-line", "") + check.line)
                as_entry = judge(flt.examine_event(entry), check)
                result.journal += 1
                result.journal_same += as_entry == (outcome, said)
                if as_entry != (outcome, said):
                    result.differences.append({"file": check.file, "line": check.lineno, "options": check.options,
                                               "expected": check.expected, "outcome": "journal entry",
                                               "jailwarden": f"{as_entry[1]} as an entry, {said} as a line",
                                               "text": check.line})
        except FilterError as error:
            result.error = str(error)
            outcome, said = "disagree", f"error: {error}"
        if outcome == "agree":
            result.agree += 1
        elif outcome == "by-design":
            result.by_design += 1
        if outcome != "agree":
            result.differences.append({"file": check.file, "line": check.lineno, "options": check.options,
                                       "expected": check.expected, "jailwarden": said, "outcome": outcome,
                                       "text": check.line})
    return result


def filter_names(root: Path) -> list[str]:
    """The filters Fail2Ban's own sample test covers: every .conf but the *common ones."""
    return sorted(p.stem for p in (root / FILTERS).glob("*.conf")
                  if not p.name.endswith("common.conf") and (root / LOGS / p.stem).is_file())


def run_corpus(root: Path, names: list[str] | None = None) -> list[FilterResult]:
    zone = os.environ.get("TZ")
    os.environ["TZ"] = TEST_ZONE
    time.tzset()
    try:
        return [run_filter(root, name) for name in (names or filter_names(root))]
    finally:
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()
