"""Fail2Ban's own filter test corpus run through jailwarden's Fail2Ban compatibility layer.

Debian's fail2ban package carries the filters (etc/fail2ban/filter.d) and, for each, a
sample log whose lines are annotated with what Fail2Ban makes of them:
`# failJSON: {"match": true, "host": "192.0.2.1", ...}` above a line, `# filterOptions: [...]`
for the parameter sets (modes, logtypes) the following lines are checked with. This script
obtains the package without installing it (`apt-get download`, `dpkg-deb -x` into
tests/.cache/fail2ban/), loads every filter with every parameter set, and counts per filter
the annotated lines on which jailwarden agrees: no failure where Fail2Ban has none, a
failure with the same address where it has one.

Fail2Ban reports a host *name* (or text that is no valid address) where a line names one;
jailwarden never resolves names, so it reports such a match as unusable. Those lines are
counted apart, as "by design", when jailwarden matched the same line with the same host text.

    .venv/bin/python tests/bench/bench_fail2ban_corpus.py [-v] [FILTER...]

Writes tests/bench/data/last_fail2ban_corpus.json.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers.fail2ban import Fail2BanFilter, load_fail2ban_filter  # noqa: E402
from parsers.filter import FilterError  # noqa: E402

CACHE = ROOT / "tests" / ".cache" / "fail2ban"
REPORT = ROOT / "tests" / "bench" / "data" / "last_fail2ban_corpus.json"
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


class CorpusUnavailable(Exception):
    """The corpus could not be obtained (no apt, no network): the reason."""


def obtain_corpus(cache: Path = CACHE) -> Path:
    """The extracted package (filter.d and test logs), downloaded and unpacked once."""
    root = cache / "root"
    if (root / FILTERS).is_dir() and (root / LOGS).is_dir():
        return root
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise CorpusUnavailable("apt-get and dpkg-deb are needed to fetch Debian's fail2ban package")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")
    with tempfile.TemporaryDirectory(dir=cache) as download:
        done = subprocess.run([apt, "download", "fail2ban"], cwd=download, capture_output=True, text=True)
        debs = sorted(Path(download).glob("fail2ban_*.deb"))
        if done.returncode != 0 or not debs:
            raise CorpusUnavailable(f"apt-get download fail2ban failed: {(done.stderr or done.stdout).strip()[-300:]}")
        unpacked = cache / "unpacking"
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run([dpkg, "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
        (unpacked / "VERSION").write_text(debs[0].name.split("_")[1] + "\n")  # fail2ban_VERSION_ARCH.deb
        shutil.rmtree(root, ignore_errors=True)
        unpacked.rename(root)
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


def judge(flt: Fail2BanFilter, check: Check) -> tuple[str, str]:
    """("agree" | "by-design" | "disagree", what jailwarden said) for one check."""
    if check.options.get("logtype") == "journal":
        # Fail2Ban's journal reader passes the time along: no date is looked for in the line.
        verdict = flt.examine(check.options.get("test.prefix-line", "") + check.line)
    else:
        verdict = flt.examine_line(check.line, TEST_NOW)
    unusable = verdict.kind == "miss" and verdict.captures is not None and "host" in verdict.captures
    said = (f"fail {verdict.address}" if verdict.kind == "fail" else
            f"unusable {verdict.captures['host']}" if unusable else verdict.kind)
    if not check.expected.get("match", False):
        return ("agree" if verdict.kind != "fail" and not unusable else "disagree"), said
    host = check.expected.get("host")
    wanted = _address(host) if host is not None else None
    if verdict.kind == "fail":
        return ("agree" if host is None or wanted == verdict.address else "disagree"), said
    if unusable and wanted is None and host is not None and verdict.captures["host"] == host:
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
            outcome, said = judge(filters[key], check)
            timed = time_agrees(filters[key], check)
            if timed is not None:
                result.dated += 1
                result.time_agrees += timed
                if not timed:
                    result.differences.append({"file": check.file, "line": check.lineno, "options": check.options,
                                               "expected": check.expected, "jailwarden": "another time",
                                               "outcome": "time", "text": check.line})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("filters", nargs="*", help="only these filters")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every line that does not agree")
    parser.add_argument("--write-expected", action="store_true",
                        help=f"record the counts as the regression test's floor, {EXPECTED.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    try:
        root = obtain_corpus()
    except CorpusUnavailable as error:
        print(f"corpus unavailable: {error}", file=sys.stderr)
        return 2
    results = run_corpus(root, args.filters or None)
    total = sum(r.total for r in results)
    agree = sum(r.agree for r in results)
    by_design = sum(r.by_design for r in results)
    print(f"Fail2Ban {corpus_version(root)} filter corpus: {len(results)} filters, {total} annotated line checks")
    print(f"{'filter':<24} {'agree':>7} {'design':>7} {'total':>7}  {'%':>6}  {'time':>9}")
    for r in results:
        mark = " *" if TARGETED.match(r.name) else ""
        percent = 100.0 * r.agreeing / r.total if r.total else 100.0
        times = f"{r.time_agrees}/{r.dated}"
        print(f"{r.name:<24} {r.agree:>7} {r.by_design:>7} {r.total:>7}  {percent:6.1f}  {times:>9}{mark}")
        if r.error:
            print(f"    error: {r.error}")
        if args.verbose:
            for d in r.differences:
                print(f"    {d['outcome']}: {d['file']}:{d['line']} {d['options'] or ''} expected "
                      f"{ {k: v for k, v in d['expected'].items() if k in ('match', 'host')} } got {d['jailwarden']}")
                print(f"        {d['text'][:160]}")
    targeted = [r for r in results if TARGETED.match(r.name)]
    targeted_ok = all(r.agreeing == r.total for r in targeted)
    print(f"{'total':<24} {agree:>7} {by_design:>7} {total:>7}  {100.0 * (agree + by_design) / max(total, 1):6.1f}")
    print(f"strict agreement (by-design differences counted as disagreeing): {100.0 * agree / max(total, 1):.1f}%")
    dated, timed = sum(r.dated for r in results), sum(r.time_agrees for r in results)
    print(f"times read from matching lines equal to the annotated ones: {timed}/{dated}")
    print(f"targeted families (*): {'all lines agree' if targeted_ok else 'NOT all lines agree'}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "fail2ban": corpus_version(root), "checks": total, "agree": agree, "by_design": by_design,
        "percent": round(100.0 * (agree + by_design) / max(total, 1), 2),
        "percent_strict": round(100.0 * agree / max(total, 1), 2), "targeted_all_agree": targeted_ok,
        "times": {"compared": dated, "equal": timed},
        "filters": {r.name: {"total": r.total, "agree": r.agree, "by_design": r.by_design, "error": r.error,
                             "times_compared": r.dated, "times_equal": r.time_agrees,
                             "differences": r.differences} for r in results},
    }, indent=1) + "\n")
    print(f"report: {REPORT.relative_to(ROOT)}")
    if args.write_expected:
        rows = ",\n".join(f"  {json.dumps(r.name)}: [{r.agree}, {r.by_design}, {r.total}]" for r in results)
        EXPECTED.write_text(f'{{"fail2ban": {json.dumps(corpus_version(root))}, "columns": ["agree", "by_design", '
                            f'"total"],\n "filters": {{\n{rows}\n }}\n}}\n')
        print(f"expected counts: {EXPECTED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
