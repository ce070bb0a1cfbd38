"""Benchmarks jailwarden's sshd filter against Fail2Ban's on a generated 1,000,000-line auth.log.

Times ``jailwarden test-filter sshd FILE`` and ``fail2ban-regex FILE filter.d/sshd.conf``
(wall clock of the whole process, best of N, peak RSS of the child), then compares the
sets of addresses each reports and shows sample lines where they differ. Prints a short
report and writes it as JSON to tests/bench/data/last_sshd.json.

jailwarden counts a large file's summary with one process per CPU by default (a forked
pool), fail2ban-regex with one. So jailwarden is timed twice in the same run: as is (the
row "jailwarden (N procs)", N the CPUs in ``os.sched_getaffinity(0)``) and with ``-j 1``
(the row "jailwarden -j1"), each best of ``--repeat`` runs, each with its own ratio to
fail2ban-regex and its own verdict lines. The default's peak RSS is that of the largest
single process (parent or pool worker), not their sum; an untimed run samples each
process's peak from /proc to show the sum as well (see ``process_peaks``).

The whole-log sets differ for two known reasons: Fail2Ban 1.0.2's filter has
``_daemon = sshd``, so it never reads OpenSSH 9.8+'s ``sshd-session[PID]`` lines, and it
treats ``Failed publickey`` for a valid user as not a failure (``publickey = nofail``).
So the report also compares the sets restricted to lines tagged ``sshd[``, where both
filters apply, and names the cause of each remaining difference ("Failed publickey
only", or "other" with example lines for a human to judge). Untimed runs give the lines:
jailwarden's ``--json`` line numbers, looked up in the log, and fail2ban-regex's
``-o '<ip><TAB><msg>'``, which prints each failure's address with its log lines. The report
ends with a verdict on the work item's targets (lines/s, speed-up over fail2ban-regex in
the same run, peak memory), judged on jailwarden's default command (all CPUs), with the
same lines for ``-j 1`` (one process) below them.

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
# The program tag of a syslog line: "sshd" in "Nov 24 10:43:09 web1 sshd[1942621]: ...".
PROGRAM_TAG = re.compile(r" ([^\s\[\]]+)\[\d+\]: ")
SAME_TAG = "sshd"  # Fail2Ban 1.0.2's _daemon; OpenSSH 9.8+ logs sessions as sshd-session
# Fail2Ban's publickey = nofail counts "Failed publickey for invalid user ..." only.
PUBLICKEY_NOFAIL = re.compile(r"\]: Failed publickey for (?!invalid user )")
PUBLICKEY_CAUSE = "Failed publickey only (Fail2Ban: publickey = nofail)"
OTHER_CAUSE = "other"
# The work item's targets.
TARGET_LINES_PER_S = 1_000_000
TARGET_SPEEDUP = 20
TARGET_PEAK_BYTES = 100 * 10**6  # "100 MB", read as 10^6 bytes (the stricter reading)
SAMPLE_INTERVAL_S = 0.01  # how often process_peaks reads /proc
PEAK_OF_POOL = ("the largest single process, parent or pool worker (wait4's ru_maxrss counts "
                "the workers the parent reaped as a maximum, not a sum); the sum over the "
                "processes is higher")

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
class Hit:
    """One log line a tool matched, with the address it reported for it."""

    address: Address
    lineno: int | None  # None: not (yet) found in the log
    line: str = ""
    counted: bool = True  # False: jailwarden's "counted": false (a repeat of another line)


@dataclass(slots=True)
class ToolResult:
    name: str  # key in the report's "tools" and stem of its output files
    command: list[str]
    label: str = ""  # the name shown in the printed table, when not NAME
    processes: int | None = None  # jailwarden: the processes it counts with (its -j)
    has_address_run: bool = True  # False: only timed, no untimed runs for addresses and lines
    process_peaks: dict | None = None  # per-process peaks sampled in an untimed run
    runs: list[Run] = field(default_factory=list)
    addresses: dict[Address, int | None] = field(default_factory=dict)  # address -> first lineno
    failures: int = 0  # failure records reported (lines for jailwarden, tickets for fail2ban)
    hits: list[Hit] = field(default_factory=list)  # matched lines, from the untimed runs
    unparsed_hosts: list[str] = field(default_factory=list)
    summary: str = ""
    error: str | None = None

    @property
    def best(self) -> Run | None:
        return min(self.runs, key=lambda r: r.wall_s) if self.runs else None

    @property
    def shown(self) -> str:
        return self.label or self.name


def ensure_fail2ban() -> Path:
    """Returns fail2ban-regex's path, installing Debian's fail2ban without starting it, with
    python3-systemd (only recommended by the package), which its systemd backend needs."""
    found = shutil.which("fail2ban-regex")
    journal = subprocess.run(["/usr/bin/python3", "-c", "import systemd.journal"], capture_output=True).returncode == 0
    if found and journal:
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
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "fail2ban", "python3-systemd"]
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
        # Its ru_maxrss is the largest peak of the child and of the descendants the child
        # itself reaped (Linux: max of its own hiwater RSS and its cmaxrss), never a sum.
        # jailwarden's fork pool workers are reaped by jailwarden (Pool.terminate joins
        # them), so they are counted, as a maximum: checked with a pool whose workers touch
        # 200 MiB each under a parent of ~10 MiB, which reports ~211 MiB, not ~410.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = stderr.read_text(errors="replace").strip().splitlines()[-15:]
        raise ToolFailed(f"{name} exited with {proc.returncode}: {shlex.join(command)}\n    "
                         + "\n    ".join(tail or ["(no stderr)"]))
    return Run(wall_s=wall, peak_rss_kib=usage.ru_maxrss)  # Linux reports KiB


def descendants(pid: int) -> list[int]:
    """PID's children, grandchildren and so on, from /proc's children lists (one per thread)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                found += [int(child), *descendants(int(child))]
    except OSError:  # PID exited meanwhile
        pass
    return found


def vm_hwm_kib(pid: int) -> int | None:
    """PID's peak RSS so far (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for text in f:
                if text.startswith("VmHWM:"):
                    return int(text.split()[1])
    except (OSError, ValueError):
        pass
    return None


def process_peaks(tool: ToolResult) -> dict | None:
    """Runs TOOL's command untimed, sampling the peak RSS (VmHWM) of each of its processes.

    For jailwarden's default, whose pool workers wait4 only counts as a maximum. The peaks
    are lower bounds: growth after a process's last sample (at most SAMPLE_INTERVAL_S
    before it exits) is missed. Each RSS also counts the pages a worker shares
    copy-on-write with its parent, so their sum over-states what the processes use
    together. None when /proc has no children lists (a kernel without CONFIG_PROC_CHILDREN).
    """
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        return None
    out = DATA / f"{tool.name}_processes.txt"
    stderr = out.with_name(out.name + ".stderr")
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    peaks: dict[int, int] = {}
    with open(out, "wb") as o, open(stderr, "wb") as err:
        try:
            proc = subprocess.Popen(tool.command, stdin=subprocess.DEVNULL, stdout=o, stderr=err,
                                    cwd=REPO, env=env)
        except OSError as exc:
            raise ToolFailed(f"{tool.shown}: cannot start {tool.command[0]}: {exc}") from exc
        while True:
            for pid in (proc.pid, *descendants(proc.pid)):
                kib = vm_hwm_kib(pid)
                if kib is not None:
                    peaks[pid] = max(peaks.get(pid, 0), kib)
            reaped, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if reaped:
                break
            time.sleep(SAMPLE_INTERVAL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise ToolFailed(f"{tool.shown} exited with {proc.returncode}: {shlex.join(tool.command)}")
    parent = peaks.pop(proc.pid, 0)
    children = sorted(peaks.values(), reverse=True)
    return {
        "method": f"VmHWM of each process from /proc, sampled every {SAMPLE_INTERVAL_S} s in an "
                  "untimed run; lower bounds; shared copy-on-write pages count in each",
        "parent_mib": round(parent / 1024, 1),
        "children_mib": [round(kib / 1024, 1) for kib in children],
        "sum_mib": round((parent + sum(children)) / 1024, 1),
        "wait4_peak_mib": round(usage.ru_maxrss / 1024, 1),  # the same run as run_child measures it
    }


def normalise(text: str) -> Address:
    address = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def summary_path(tool: ToolResult) -> Path:
    return DATA / f"{tool.name}_summary.txt"


def time_tool(tool: ToolResult, repeat: int) -> None:
    out = summary_path(tool)
    for i in range(repeat):
        run = run_child(tool.shown, tool.command, out)
        tool.runs.append(run)
        print(f"bench: {tool.shown} run {i + 1}/{repeat}: {run.wall_s:.2f} s, "
              f"{run.peak_rss_kib / 1024:.1f} MiB")
    tool.summary = out.read_text(errors="replace")[-3000:]


def same_counts(a: ToolResult, b: ToolResult) -> bool | None:
    """Whether two jailwarden runs printed the same summary, its "time" line aside."""
    if a.error or b.error or not a.runs or not b.runs:
        return None
    try:
        texts = [[line for line in summary_path(t).read_text(errors="replace").splitlines()
                  if not line.startswith("time ")] for t in (a, b)]
    except OSError:
        return None
    return texts[0] == texts[1]


def jailwarden_addresses(tool: ToolResult, jailwarden: Path, log: Path, expected_lines: int) -> None:
    """Runs ``test-filter --json`` untimed; records each matched line's address and number."""
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
                address = normalise(host)
            except ValueError:
                tool.unparsed_hosts.append(host)
                continue
            tool.addresses.setdefault(address, record.get("lineno"))
            tool.hits.append(Hit(address, record.get("lineno"), counted=record.get("counted") is not False))
    if objects != expected_lines:
        print(f"bench: warning: jailwarden --json printed {objects:,} objects for {expected_lines:,} lines",
              file=sys.stderr)


def fail2ban_addresses(tool: ToolResult, fail2ban: Path, log: Path) -> None:
    """Runs fail2ban-regex ``-o ip`` untimed: one address per failure ticket."""
    out = DATA / "fail2ban_sshd_ips.txt"
    run_child(tool.name, [str(fail2ban), "-o", "ip", str(log), str(FAIL2BAN_FILTER)], out)
    for text in out.read_text(errors="replace").splitlines():
        if text.strip():
            tool.failures += 1
            try:
                tool.addresses.setdefault(normalise(text), None)
            except ValueError:
                tool.unparsed_hosts.append(text)


def fail2ban_hits(tool: ToolResult, fail2ban: Path, log: Path) -> None:
    """Runs fail2ban-regex ``-o '<ip><TAB><msg>'`` untimed: each failure's address and lines.

    A ticket prints one row per log line it holds: the failure, after any NOFAIL line of
    the same session (such as pam_unix's) that fail2ban kept for it. All of a ticket's
    lines come from one ``daemon[PID]``, so each row's tag is the ticket's.
    """
    out = DATA / "fail2ban_sshd_lines.tsv"
    run_child(tool.name, [str(fail2ban), "-o", "<ip>\t<msg>", str(log), str(FAIL2BAN_FILTER)], out)
    for text in out.read_text(encoding="utf-8", errors="replace").splitlines():
        host, _, line = text.partition("\t")
        try:
            tool.hits.append(Hit(normalise(host), None, line))
        except ValueError:
            tool.unparsed_hosts.append(host)


def attach_log_lines(log: Path, jailwarden_hits: list[Hit], fail2ban_hits: list[Hit]) -> int:
    """Maps hits back to the log in one pass: jailwarden's by line number, fail2ban's by text.

    Returns how many of fail2ban's lines are not in the log (0 unless its output is mangled).
    """
    by_lineno: dict[int, list[Hit]] = {}
    for hit in jailwarden_hits:
        by_lineno.setdefault(hit.lineno, []).append(hit)
    by_text: dict[str, list[Hit]] = {}
    for hit in fail2ban_hits:
        by_text.setdefault(hit.line, []).append(hit)
    with open(log, encoding="utf-8", errors="replace") as f:
        for lineno, text in enumerate(f, 1):
            text = text.rstrip("\r\n")
            for hit in by_lineno.get(lineno, ()):
                hit.line = text
            for hit in by_text.pop(text, ()):  # the first of identical lines
                hit.lineno = lineno
    return sum(len(hits) for hits in by_text.values())


def program(line: str) -> str | None:
    """The syslog program tag of LINE ("sshd", "sshd-session", ...), or None."""
    found = PROGRAM_TAG.search(line)
    return found.group(1) if found else None


def by_address(hits: list[Hit], tag: str | None = None) -> dict[Address, list[Hit]]:
    """HITS grouped by address, keeping only lines with program TAG when given."""
    grouped: dict[Address, list[Hit]] = {}
    for hit in hits:
        if tag is None or program(hit.line) == tag:
            grouped.setdefault(hit.address, []).append(hit)
    return grouped


def spread(items: list[Address], count: int) -> list[Address]:
    """COUNT items evenly spaced through ITEMS, so examples are not all of one kind."""
    if len(items) <= count:
        return items
    return [items[i * len(items) // count] for i in range(count)]


def example(address: Address, hits: dict[Address, list[Hit]]) -> dict:
    """The line that best shows why a tool reported ADDRESS: counted, not a pam_ echo, first."""
    best = min(hits.get(address, ()), default=None,
               key=lambda h: (not h.counted, "pam_" in h.line, h.lineno is None, h.lineno or 0))
    return {"address": str(address), "lineno": best.lineno if best else None,
            "line": best.line if best else None}


def address_key(address: Address) -> tuple[int, int]:
    return address.version, int(address)


def mib(run: Run | None) -> float | None:
    return round(run.peak_rss_kib / 1024, 1) if run else None


def tools_section(lines: int, tool: ToolResult) -> dict:
    best = tool.best
    counted = not tool.error and tool.has_address_run
    return {
        "label": tool.shown,
        "processes": tool.processes,
        "command": tool.command,
        "runs": [asdict(r) for r in tool.runs],
        "best_wall_s": round(best.wall_s, 3) if best else None,
        "lines_per_s": round(lines / best.wall_s) if best else None,
        "peak_mib": mib(max(tool.runs, key=lambda r: r.peak_rss_kib) if tool.runs else None),
        "peak_mib_is": PEAK_OF_POOL if (tool.processes or 1) > 1 else "the one process",
        "distinct_addresses": len(tool.addresses) if counted else None,
        "failures": tool.failures if counted else None,
        "unparsed_hosts": tool.unparsed_hosts[:20],
        "summary_tail": tool.summary[-1500:],
        "error": tool.error,
        **({"process_peaks": tool.process_peaks} if tool.process_peaks else {}),
    }


def whole_log_comparison(jailwarden: ToolResult, fail2ban: ToolResult) -> dict:
    """The address sets over the whole log, with example lines where they differ."""
    only_j = sorted(jailwarden.addresses.keys() - fail2ban.addresses.keys(), key=address_key)
    only_f = sorted(fail2ban.addresses.keys() - jailwarden.addresses.keys(), key=address_key)
    hits_j, hits_f = by_address(jailwarden.hits), by_address(fail2ban.hits)
    return {
        "sets_equal": not only_j and not only_f,
        "only_in_jailwarden": [str(a) for a in only_j],
        "only_in_fail2ban": [str(a) for a in only_f],
        "examples_only_in_jailwarden": [example(a, hits_j) for a in spread(only_j, EXAMPLES)],
        "examples_only_in_fail2ban": [example(a, hits_f) for a in spread(only_f, EXAMPLES)],
    }


def cause(name: str, only_in: str, addresses: list[Address], hits: dict[Address, list[Hit]],
          examples: int) -> dict:
    return {"cause": name, "only_in": only_in, "count": len(addresses),
            "examples": [example(a, hits) for a in spread(addresses, examples)]}


def same_tag_comparison(jailwarden: ToolResult, fail2ban: ToolResult, unmapped: int) -> dict:
    """The address sets over lines tagged sshd[ only, each difference put down to a cause."""
    hits_j, hits_f = by_address(jailwarden.hits, SAME_TAG), by_address(fail2ban.hits, SAME_TAG)
    only_j = sorted(hits_j.keys() - hits_f.keys(), key=address_key)
    only_f = sorted(hits_f.keys() - hits_j.keys(), key=address_key)
    publickey = [a for a in only_j if all(PUBLICKEY_NOFAIL.search(h.line) for h in hits_j[a])]
    other_j = [a for a in only_j if a not in set(publickey)]
    return {
        "tag": SAME_TAG + "[",
        "addresses": {jailwarden.name: len(hits_j), fail2ban.name: len(hits_f)},
        "sets_equal": not only_j and not only_f,
        "only_in_jailwarden": [str(a) for a in only_j],
        "only_in_fail2ban": [str(a) for a in only_f],
        "causes": [cause(PUBLICKEY_CAUSE, jailwarden.name, publickey, hits_j, 1),
                   cause(OTHER_CAUSE, jailwarden.name, other_j, hits_j, EXAMPLES),
                   cause(OTHER_CAUSE, fail2ban.name, only_f, hits_f, EXAMPLES)],
        # Checks that the untimed line run agrees with -o ip and maps back to the log.
        "fail2ban_line_run_same_addresses_as_ip_run":
            {h.address for h in fail2ban.hits} == fail2ban.addresses.keys(),
        "fail2ban_lines_not_in_log": unmapped,
    }


def target(name: str, value: float | None, met: bool | None, figure: str) -> dict:
    """One target's verdict; VALUE is the unrounded figure it was judged on."""
    return {"target": name, "verdict": "not measured" if met is None else "met" if met else "missed",
            "figure": figure, "value": value}


def variant_verdict(lines: int, tool: ToolResult, fail2ban: ToolResult, variant: str) -> list[dict]:
    """Each of the work item's targets, met or missed, for one jailwarden command."""
    speed_target = f"jailwarden >= {TARGET_LINES_PER_S:,} lines/s ({variant})"
    ratio_target = f">= {TARGET_SPEEDUP}x fail2ban-regex in the same run ({variant})"
    memory_target = f"peak memory < {TARGET_PEAK_BYTES // 10**6} MB ({variant})"
    j, f = tool.best, fail2ban.best
    if not j:
        results = [target(name, None, None, "n/a") for name in (speed_target, ratio_target, memory_target)]
    else:
        speed = lines / j.wall_s
        peak = max(r.peak_rss_kib for r in tool.runs) * 1024
        results = [target(speed_target, speed, speed >= TARGET_LINES_PER_S,
                          f"{round(speed):,} lines/s (best of {len(tool.runs)} runs)")]
        if f:
            ratio = f.wall_s / j.wall_s
            results.append(target(ratio_target, ratio, ratio >= TARGET_SPEEDUP,
                                  f"{ratio:.2f}x ({j.wall_s:.3f} s vs {f.wall_s:.2f} s)"))
        else:
            results.append(target(ratio_target, None, None, "n/a"))
        which = "largest single process" if (tool.processes or 1) > 1 else "one process"
        figure = (f"{peak / 10**6:.1f} MB = {peak / 2**20:.1f} MiB "
                  f"({tool.shown}, {which}, largest of {len(tool.runs)} runs")
        if tool.process_peaks:
            total = tool.process_peaks["sum_mib"] * 2**20
            figure += f"; sum over its processes {total / 10**6:.1f} MB, sampled"
        results.append(target(memory_target, peak, peak < TARGET_PEAK_BYTES, figure + ")"))
    for item in results:
        item["variant"] = variant
    return results


def verdict(lines: int, jailwarden: ToolResult, one_process: ToolResult, fail2ban: ToolResult) -> list[dict]:
    """The targets judged on jailwarden's default command (all CPUs), then on -j 1."""
    return (variant_verdict(lines, jailwarden, fail2ban, "all CPUs")
            + variant_verdict(lines, one_process, fail2ban, "one process"))


def build_report(meta: dict, jailwarden: ToolResult, one_process: ToolResult, fail2ban: ToolResult) -> dict:
    lines = meta["lines"]
    report: dict = {
        "log": str(LOG.relative_to(REPO)),
        "lines": lines,
        "bytes": meta["bytes"],
        "seed": meta["seed"],
        "sha256": meta["sha256"],
        "loadavg_at_start": list(os.getloadavg()),
        "cpus_available": len(os.sched_getaffinity(0)),
        "tools": {tool.name: tools_section(lines, tool) for tool in (jailwarden, one_process, fail2ban)},
    }
    # ratio_* compare jailwarden's default (all CPUs) with fail2ban-regex, ratio_*_j1 its -j 1.
    f = report["tools"][fail2ban.name]
    for tool, suffix in ((jailwarden, ""), (one_process, "_j1")):
        j = report["tools"][tool.name]
        if j["lines_per_s"] and f["lines_per_s"]:
            report["ratio_lines_per_s" + suffix] = round(j["lines_per_s"] / f["lines_per_s"], 2)
            report["ratio_peak_mib" + suffix] = round(j["peak_mib"] / f["peak_mib"], 2)
    report["j1_summary_same_counts"] = same_counts(jailwarden, one_process)
    if not (jailwarden.error or fail2ban.error):
        unmapped = attach_log_lines(LOG, jailwarden.hits, fail2ban.hits)
        report.update(whole_log_comparison(jailwarden, fail2ban))
        report["same_tag"] = same_tag_comparison(jailwarden, fail2ban, unmapped)
    report["verdict"] = verdict(lines, jailwarden, one_process, fail2ban)
    return report


def format_report(report: dict) -> str:
    width = max(16, *(len(tool["label"]) for tool in report["tools"].values()))
    out = [(f"sshd filter benchmark: {report['log']} ({report['lines']:,} lines, "
            f"{report['bytes'] / 2**20:.0f} MiB, seed {report['seed']}), "
            f"load average at start {report['loadavg_at_start'][0]:.2f}, "
            f"{report['cpus_available']} CPUs"),
           f"{'':{width}} {'best s':>8} {'lines/s':>10} {'peak MiB':>9} {'addresses':>10} {'failures':>9}"]
    notes = []
    for tool in report["tools"].values():
        label = tool["label"]
        if tool["error"]:
            out.append(f"{label:{width}} FAILED: {tool['error']}")
            continue
        star = "*" if tool["peak_mib_is"] == PEAK_OF_POOL else " "
        counts = (f"{tool['distinct_addresses']:>10,} {tool['failures']:>9,}"
                  if tool["distinct_addresses"] is not None else f"{'-':>10} {'-':>9}")
        out.append(f"{label:{width}} {tool['best_wall_s']:>8.2f} {tool['lines_per_s']:>10,} "
                   f"{tool['peak_mib']:>8.1f}{star} {counts}")
        if star == "*":
            note = f"* {label}: peak of the largest single process (parent or pool worker), not their sum"
            peaks = tool.get("process_peaks")
            if peaks:
                note += (f"; sampled per process in an untimed run: parent {peaks['parent_mib']:.1f}, "
                         f"workers {' + '.join(f'{m:.1f}' for m in peaks['children_mib']) or 'none'}, "
                         f"sum {peaks['sum_mib']:.1f} MiB (shared pages counted in each)")
            else:
                note += "; per-process peaks not sampled"
            notes.append(note)
    out += notes
    labels = {name: tool["label"] for name, tool in report["tools"].items()}
    fail2ban_label = labels.get("fail2ban-regex", "fail2ban-regex")
    for name, suffix in (("jailwarden", ""), ("jailwarden-j1", "_j1")):
        if "ratio_lines_per_s" + suffix in report:
            out.append(f"{labels[name]} / {fail2ban_label}: {report['ratio_lines_per_s' + suffix]:.2f}x lines/s, "
                       f"{report['ratio_peak_mib' + suffix]:.2f}x peak memory")
    same = report.get("j1_summary_same_counts")
    if same is not None:
        out.append(f"{labels['jailwarden-j1']} summary: "
                   + ("same counts as " if same else "warning: counts DIFFER from ")
                   + labels["jailwarden"] + " (addresses and failures above: from the --json run)")
    if "sets_equal" in report:
        out += format_whole_log(report)
    if "same_tag" in report:
        out += format_same_tag(report["same_tag"])
    for name, tool in report["tools"].items():
        if tool["unparsed_hosts"]:
            out.append(f"{name}: hosts that are not addresses, e.g. {tool['unparsed_hosts'][:5]}")
    out.append(f"report: {REPORT.relative_to(REPO)}")
    out += format_verdict(report["verdict"])
    return "\n".join(out)


def format_example(example: dict) -> str:
    where = f"line {example['lineno']:,}: " if example["lineno"] else ""
    return f"    {example['address']:<40} {where}{example['line'] or '(no line found)'}"


def format_whole_log(report: dict) -> list[str]:
    if report["sets_equal"]:
        return ["address sets (whole log): equal"]
    out = [f"address sets (whole log) differ: {len(report['only_in_jailwarden']):,} only in jailwarden, "
           f"{len(report['only_in_fail2ban']):,} only in fail2ban-regex"]
    for side, key in (("jailwarden", "examples_only_in_jailwarden"),
                      ("fail2ban-regex", "examples_only_in_fail2ban")):
        if report[key]:
            out.append(f"  only in {side}, e.g.:")
            out += [format_example(example) for example in report[key]]
    return out


def format_same_tag(same: dict) -> list[str]:
    counts = ", ".join(f"{name} {n:,}" for name, n in same["addresses"].items())
    out = [f"address sets on {same['tag']} lines only (both filters apply; sshd-session[ set aside): {counts}"]
    if same["sets_equal"]:
        out.append("  equal")
    else:
        out.append(f"  differ: {len(same['only_in_jailwarden']):,} only in jailwarden, "
                   f"{len(same['only_in_fail2ban']):,} only in fail2ban-regex, by cause:")
    for cause in same["causes"]:
        out.append(f"  {cause['count']:>6,}  {cause['cause']}, only in {cause['only_in']}"
                   + (", e.g.:" if cause["examples"] else ""))
        out += [format_example(example) for example in cause["examples"]]
    if not same["fail2ban_line_run_same_addresses_as_ip_run"]:
        out.append("  warning: fail2ban-regex -o '<ip><TAB><msg>' found other addresses than -o ip")
    if same["fail2ban_lines_not_in_log"]:
        out.append(f"  warning: {same['fail2ban_lines_not_in_log']:,} lines fail2ban-regex printed "
                   "are not in the log")
    return out


def format_verdict(verdict: list[dict]) -> list[str]:
    out = ["verdict against the work item's targets:"]
    for item in verdict:
        out.append(f"  {item['verdict']:<12} {item['target']:<52} {item['figure']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed jailwarden runs, for each of the default and -j 1, best counts (3)")
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
    # The default counts with one pool worker per CPU in its affinity mask (fewer when the
    # file has under 8 MiB per worker), plus the parent, which mostly waits.
    cpus = len(os.sched_getaffinity(0))
    jailwarden = ToolResult("jailwarden", [str(jailwarden_path), "test-filter", "sshd", str(LOG)],
                            label=f"jailwarden ({cpus} proc{'s' if cpus != 1 else ''})", processes=cpus)
    one_process = ToolResult("jailwarden-j1", [str(jailwarden_path), "test-filter", "-j", "1", "sshd", str(LOG)],
                             label="jailwarden -j1", processes=1, has_address_run=False)
    fail2ban = ToolResult("fail2ban-regex", [str(fail2ban_path), *shlex.split(args.fail2ban_opts),
                                             str(LOG), str(FAIL2BAN_FILTER)])
    missing = f"jailwarden console script not found at {jailwarden_path} (run: make deps)"
    try:
        if not jailwarden_path.exists():
            raise ToolFailed(missing)
        time_tool(jailwarden, args.repeat)
        if cpus > 1:
            jailwarden.process_peaks = process_peaks(jailwarden)
        jailwarden_addresses(jailwarden, jailwarden_path, LOG, meta["lines"])
    except ToolFailed as exc:
        jailwarden.error = str(exc)
    try:
        if not jailwarden_path.exists():
            raise ToolFailed(missing)
        time_tool(one_process, args.repeat)
    except ToolFailed as exc:
        one_process.error = str(exc)
    try:
        time_tool(fail2ban, args.fail2ban_repeat)
        fail2ban_addresses(fail2ban, fail2ban_path, LOG)
        fail2ban_hits(fail2ban, fail2ban_path, LOG)
    except ToolFailed as exc:
        fail2ban.error = str(exc)

    report = build_report(meta, jailwarden, one_process, fail2ban)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 1 if jailwarden.error or one_process.error or fail2ban.error else 0


if __name__ == "__main__":
    sys.exit(main())
