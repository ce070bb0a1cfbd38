"""Benchmarks jailwarden's sshd filter against Fail2Ban's on a generated 1,000,000-line auth.log.

Times ``jailwarden test-filter sshd FILE`` and ``fail2ban-regex FILE filter.d/sshd.conf``
(wall clock of the whole process, best of N, peak RSS of the child), then compares the
sets of addresses each reports and shows sample lines where they differ. Prints a short
report and writes it as JSON to tests/bench/data/last_sshd.json.

A benchmark, not a test: it exits 0 whatever the numbers are, 1 when either tool fails
to run or exits non-zero, 2 when the set-up (data, fail2ban) fails.

Fairness notes, measured with fail2ban 1.0.2 on this data: fail2ban-regex's plain
(statistics) mode checks every failregex against each line and keeps every matched
address per regex; ``--no-check-all`` or ``-o ...`` stop at the first match like the
fail2ban server does. Wall time is the same within noise (about 19 s per million lines
either way; ``-r`` and ``--print-no-missed`` change nothing), peak RSS is not: about
117 MiB plain, 59 MiB with ``--no-check-all``, 40 MiB with ``-o ip``. Pass
``--fail2ban-opts=--no-check-all`` to time the leaner mode.

Fail2Ban's package is installed when missing, with a policy-rc.d that forbids starting
services; its server and client are never run.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_authlog  # sits next to this script, which is not in a package

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "bench" / "data"
LOG = DATA / "auth.log"
REPORT = DATA / "last_sshd.json"
FAIL2BAN_FILTER = Path("/etc/fail2ban/filter.d/sshd.conf")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
EXAMPLES = 5
# Candidate lines per address handed to fail2ban-regex to find the line it counted.
CANDIDATES_PER_ADDRESS = 500

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ToolFailed(Exception):
    """A benchmarked command could not run or exited non-zero."""


class SetupFailed(Exception):
    """The benchmark could not prepare its data or install fail2ban."""


@dataclass(slots=True)
class Run:
    """One timed execution of a child process."""

    wall_s: float
    peak_rss_kib: int


@dataclass(slots=True)
class ToolResult:
    name: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)
    addresses: dict[Address, int | None] = field(default_factory=dict)  # address -> first lineno
    failures: int = 0  # failure records reported (lines for jailwarden, tickets for fail2ban)
    unparsed_hosts: list[str] = field(default_factory=list)
    summary: str = ""
    error: str | None = None

    @property
    def best(self) -> Run | None:
        return min(self.runs, key=lambda r: r.wall_s) if self.runs else None


def ensure_fail2ban() -> Path:
    """Returns fail2ban-regex's path, installing Debian's fail2ban without starting it."""
    found = shutil.which("fail2ban-regex")
    if found:
        return Path(found)
    if os.geteuid() != 0:
        raise SetupFailed("fail2ban-regex is missing; run as root to install it, or: apt-get install fail2ban")
    # invoke-rc.d and deb-systemd-invoke consult policy-rc.d: 101 means "action forbidden",
    # so the package's postinst installs the service without starting it. One already
    # there may allow starts, so it is set aside for the install and put back after.
    saved = POLICY_RC_D.with_name(POLICY_RC_D.name + ".jailwarden-bench-saved")
    if POLICY_RC_D.exists():
        POLICY_RC_D.rename(saved)
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "fail2ban"]
    try:
        print("bench: installing fail2ban (service start forbidden by policy-rc.d)")
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            if subprocess.run(install, env=env, check=False).returncode != 0:
                raise SetupFailed("apt-get install fail2ban failed")
    finally:
        POLICY_RC_D.unlink(missing_ok=True)
        if saved.exists():
            saved.rename(POLICY_RC_D)
    found = shutil.which("fail2ban-regex")
    if not found:
        raise SetupFailed("fail2ban installed but fail2ban-regex is not on PATH")
    return Path(found)


def ensure_log(lines: int, seed: int) -> dict:
    if not gen_authlog.is_current(LOG, lines, seed):
        print(f"bench: generating {LOG.relative_to(REPO)} ({lines:,} lines, seed {seed})")
        gen_authlog.write_authlog(LOG, lines, seed)
    return json.loads(gen_authlog.meta_path(LOG).read_text())


def run_child(name: str, command: list[str], stdout: Path) -> Run:
    """Runs COMMAND with stdout to a file; returns its wall time and peak RSS."""
    stderr = stdout.with_name(stdout.name + ".stderr")
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=REPO, env=env)
        except OSError as exc:
            raise ToolFailed(f"{name}: cannot start {command[0]}: {exc}") from exc
        # wait4 reaps this one child and gives its own rusage, not the sum of all children.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = stderr.read_text(errors="replace").strip().splitlines()[-15:]
        raise ToolFailed(f"{name} exited with {proc.returncode}: {shlex.join(command)}\n    "
                         + "\n    ".join(tail or ["(no stderr)"]))
    return Run(wall_s=wall, peak_rss_kib=usage.ru_maxrss)  # Linux reports KiB


def normalise(text: str) -> Address:
    address = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def time_tool(tool: ToolResult, repeat: int) -> None:
    out = DATA / f"{tool.name}_summary.txt"
    for i in range(repeat):
        run = run_child(tool.name, tool.command, out)
        tool.runs.append(run)
        print(f"bench: {tool.name} run {i + 1}/{repeat}: {run.wall_s:.2f} s, "
              f"{run.peak_rss_kib / 1024:.1f} MiB")
    tool.summary = out.read_text(errors="replace")[-3000:]


def jailwarden_addresses(tool: ToolResult, jailwarden: Path, log: Path, expected_lines: int) -> None:
    out = DATA / "jailwarden_sshd.jsonl"
    run_child(tool.name, [str(jailwarden), "test-filter", "--json", "sshd", str(log)], out)
    objects = 0
    with open(out, encoding="utf-8", errors="replace") as f:
        for text in f:
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as exc:
                raise ToolFailed(f"jailwarden --json printed a line that is not JSON: {text[:200]!r}") from exc
            objects += 1
            host = record.get("host")
            if not record.get("match") or host is None:
                continue
            tool.failures += 1
            try:
                tool.addresses.setdefault(normalise(host), record.get("lineno"))
            except ValueError:
                tool.unparsed_hosts.append(host)
    if objects != expected_lines:
        print(f"bench: warning: jailwarden --json printed {objects:,} objects for {expected_lines:,} lines",
              file=sys.stderr)


def fail2ban_addresses(tool: ToolResult, fail2ban: Path, log: Path) -> None:
    out = DATA / "fail2ban_sshd_ips.txt"
    run_child(tool.name, [str(fail2ban), "-o", "ip", str(log), str(FAIL2BAN_FILTER)], out)
    for text in out.read_text(errors="replace").splitlines():
        if text.strip():
            tool.failures += 1
            try:
                tool.addresses.setdefault(normalise(text), None)
            except ValueError:
                tool.unparsed_hosts.append(text)


def address_pattern(address: Address) -> re.Pattern[str]:
    """Matches ADDRESS as written in a log: compressed, exploded or v4-mapped, whole only."""
    if isinstance(address, ipaddress.IPv4Address):
        return re.compile(rf"(?<![0-9.]){re.escape(str(address))}(?![0-9]|\.[0-9])")
    forms = "|".join(re.escape(f) for f in (address.compressed, address.exploded))
    return re.compile(rf"(?<![0-9A-Fa-f:.])(?:{forms})(?![0-9A-Fa-f:]|\.[0-9])", re.IGNORECASE)


def spread(items: list[Address], count: int) -> list[Address]:
    """COUNT items evenly spaced through ITEMS, so examples are not all of one kind."""
    if len(items) <= count:
        return items
    return [items[i * len(items) // count] for i in range(count)]


def sample_lines(log: Path, jailwarden_only: list[Address], fail2ban_only: list[Address],
                 jailwarden: ToolResult, fail2ban: Path) -> dict[Address, str]:
    """One log line per example address: the line each tool counted, where it can be found."""
    by_lineno = {jailwarden.addresses[a]: a for a in jailwarden_only if jailwarden.addresses.get(a)}
    patterns = {a: address_pattern(a) for a in fail2ban_only}
    candidates: dict[Address, list[str]] = {a: [] for a in fail2ban_only}
    samples: dict[Address, str] = {}
    with open(log, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if lineno in by_lineno:
                samples[by_lineno[lineno]] = line.rstrip("\n")
            for address, pattern in patterns.items():
                if len(candidates[address]) < CANDIDATES_PER_ADDRESS and pattern.search(line):
                    candidates[address].append(line)
    if fail2ban_only:
        # Ask fail2ban which of the candidate lines it counts; -o msg prints those lines.
        scratch = DATA / "fail2ban_examples.log"
        scratch.write_text("".join(line for lines in candidates.values() for line in lines))
        out = DATA / "fail2ban_examples_matched.txt"
        run_child("fail2ban-regex", [str(fail2ban), "-o", "msg", str(scratch), str(FAIL2BAN_FILTER)], out)
        matched = out.read_text(errors="replace").splitlines()
        for address, pattern in patterns.items():
            hits = [line for line in matched if pattern.search(line)]
            # A pam_unix line is printed with the failure that follows it; prefer the failure.
            preferred = [line for line in hits if "pam_" not in line] or hits or candidates[address][:1]
            if preferred:
                samples[address] = preferred[0].rstrip("\n")
    return samples


def address_key(address: Address) -> tuple[int, int]:
    return address.version, int(address)


def mib(run: Run | None) -> float | None:
    return round(run.peak_rss_kib / 1024, 1) if run else None


def build_report(meta: dict, jailwarden: ToolResult, fail2ban: ToolResult, fail2ban_path: Path) -> dict:
    lines = meta["lines"]
    report: dict = {
        "log": str(LOG.relative_to(REPO)),
        "lines": lines,
        "bytes": meta["bytes"],
        "seed": meta["seed"],
        "sha256": meta["sha256"],
        "loadavg_at_start": list(os.getloadavg()),
        "tools": {},
    }
    for tool in (jailwarden, fail2ban):
        best = tool.best
        report["tools"][tool.name] = {
            "command": tool.command,
            "runs": [asdict(r) for r in tool.runs],
            "best_wall_s": round(best.wall_s, 3) if best else None,
            "lines_per_s": round(lines / best.wall_s) if best else None,
            "peak_mib": mib(max(tool.runs, key=lambda r: r.peak_rss_kib) if tool.runs else None),
            "distinct_addresses": len(tool.addresses) if not tool.error else None,
            "failures": tool.failures if not tool.error else None,
            "unparsed_hosts": tool.unparsed_hosts[:20],
            "summary_tail": tool.summary[-1500:],
            "error": tool.error,
        }
    j, f = report["tools"][jailwarden.name], report["tools"][fail2ban.name]
    if j["lines_per_s"] and f["lines_per_s"]:
        report["ratio_lines_per_s"] = round(j["lines_per_s"] / f["lines_per_s"], 2)
        report["ratio_peak_mib"] = round(j["peak_mib"] / f["peak_mib"], 2)
    if jailwarden.error or fail2ban.error:
        return report
    only_j = sorted(jailwarden.addresses.keys() - fail2ban.addresses.keys(), key=address_key)
    only_f = sorted(fail2ban.addresses.keys() - jailwarden.addresses.keys(), key=address_key)
    examples_j, examples_f = spread(only_j, EXAMPLES), spread(only_f, EXAMPLES)
    samples: dict[Address, str] = {}
    if only_j or only_f:
        try:
            samples = sample_lines(LOG, examples_j, examples_f, jailwarden, fail2ban_path)
        except ToolFailed as exc:
            report["examples_error"] = str(exc)
    report["sets_equal"] = not only_j and not only_f
    report["only_in_jailwarden"] = [str(a) for a in only_j]
    report["only_in_fail2ban"] = [str(a) for a in only_f]
    report["examples_only_in_jailwarden"] = [{"address": str(a), "line": samples.get(a)} for a in examples_j]
    report["examples_only_in_fail2ban"] = [{"address": str(a), "line": samples.get(a)} for a in examples_f]
    return report


def format_report(report: dict) -> str:
    out = [(f"sshd filter benchmark: {report['log']} ({report['lines']:,} lines, "
            f"{report['bytes'] / 2**20:.0f} MiB, seed {report['seed']}), "
            f"load average at start {report['loadavg_at_start'][0]:.2f}"),
           f"{'':16} {'best s':>8} {'lines/s':>10} {'peak MiB':>9} {'addresses':>10} {'failures':>9}"]
    for name, tool in report["tools"].items():
        if tool["error"]:
            out.append(f"{name:16} FAILED: {tool['error']}")
            continue
        out.append(f"{name:16} {tool['best_wall_s']:>8.2f} {tool['lines_per_s']:>10,} "
                   f"{tool['peak_mib']:>9.1f} {tool['distinct_addresses']:>10,} {tool['failures']:>9,}")
    if "ratio_lines_per_s" in report:
        out.append(f"jailwarden / fail2ban-regex: {report['ratio_lines_per_s']:.2f}x lines/s, "
                   f"{report['ratio_peak_mib']:.2f}x peak memory")
    if "sets_equal" in report:
        if report["sets_equal"]:
            out.append("address sets: equal")
        else:
            out.append(f"address sets differ: {len(report['only_in_jailwarden']):,} only in jailwarden, "
                       f"{len(report['only_in_fail2ban']):,} only in fail2ban-regex")
            for side, key in (("jailwarden", "examples_only_in_jailwarden"),
                              ("fail2ban-regex", "examples_only_in_fail2ban")):
                if report[key]:
                    out.append(f"  only in {side}, e.g.:")
                    for example in report[key]:
                        out.append(f"    {example['address']:<40} {example['line'] or '(no line found)'}")
    for name, tool in report["tools"].items():
        if tool["unparsed_hosts"]:
            out.append(f"{name}: hosts that are not addresses, e.g. {tool['unparsed_hosts'][:5]}")
    out.append(f"report: {REPORT.relative_to(REPO)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed jailwarden runs, best counts (3)")
    parser.add_argument("--fail2ban-repeat", type=int, default=1, help="timed fail2ban-regex runs (1)")
    parser.add_argument("--fail2ban-opts", default="",
                        help="extra options for the timed fail2ban-regex run, e.g. --no-check-all")
    parser.add_argument("--lines", type=int, default=gen_authlog.DEFAULT_LINES)
    parser.add_argument("--seed", type=int, default=gen_authlog.DEFAULT_SEED)
    args = parser.parse_args(argv)

    try:
        fail2ban_path = ensure_fail2ban()
        meta = ensure_log(args.lines, args.seed)
    except (SetupFailed, OSError) as exc:
        print(f"bench: set-up failed: {exc}", file=sys.stderr)
        return 2

    jailwarden_path = Path(sys.executable).parent / "jailwarden"
    jailwarden = ToolResult("jailwarden", [str(jailwarden_path), "test-filter", "sshd", str(LOG)])
    fail2ban = ToolResult("fail2ban-regex", [str(fail2ban_path), *shlex.split(args.fail2ban_opts),
                                             str(LOG), str(FAIL2BAN_FILTER)])
    try:
        if not jailwarden_path.exists():
            raise ToolFailed(f"jailwarden console script not found at {jailwarden_path} (run: make deps)")
        time_tool(jailwarden, args.repeat)
        jailwarden_addresses(jailwarden, jailwarden_path, LOG, meta["lines"])
    except ToolFailed as exc:
        jailwarden.error = str(exc)
    try:
        time_tool(fail2ban, args.fail2ban_repeat)
        fail2ban_addresses(fail2ban, fail2ban_path, LOG)
    except ToolFailed as exc:
        fail2ban.error = str(exc)

    report = build_report(meta, jailwarden, fail2ban, fail2ban_path)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 1 if jailwarden.error or fail2ban.error else 0


if __name__ == "__main__":
    sys.exit(main())
