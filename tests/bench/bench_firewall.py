"""Benchmarks the firewall backends against Fail2Ban's way of banning, each measurement in a
fresh network namespace of its own (created here, deleted afterwards, also on failure or Ctrl-C),
so nothing touches this host's own firewall, routes or /etc.

1. Every backend registered in firewall/__init__.py (BACKENDS), in a fresh process inside its
   namespace (tests/bench/firewall_bench_worker.py): setup(); ban_many() of --count distinct
   addresses (default 10,000: half IPv4 from 10.0.0.0/8, half IPv6 from 2001:db8::/32, ttl
   600 s); then --single further addresses banned one ban() call each (per-call latency,
   with the --count bans already in place); list() (its count checked against what was
   banned); teardown(). hostsdeny writes a file in a temporary directory. A backend that does
   not import or whose setup fails is reported as "unavailable" with the reason.
2. Fail2Ban's way, in the same run: `actionstart` once, then one command per ban, one after the
   other, as Fail2Ban 1.0.2's action.d/iptables-ipset.conf (`ipset -exist add f2b-NAME ADDR
   timeout 600`) and nftables.conf (`nft add element inet f2b-table addr-set-NAME { ADDR }`) do.
   Runner "fail2ban": Fail2Ban's own command runner, fail2ban.server.utils.Utils.executeCmd
   (a shell per command, polling for its end), imported from Debian's package under
   /usr/bin/python3; it leaves out the rest of Fail2Ban's action machinery (tag substitution,
   locking, logging, its sqlite), so it is a lower bound for Fail2Ban itself. Runner "bare":
   subprocess.run of the same words without a shell, the lower bound of any process per ban.
   Each runs at most --budget seconds; if it stops early, the time for all is extrapolated and
   marked "~".
3. Restore at start-up: a fresh process (in a fresh namespace) imports the backend, builds
   --restore (default 100,000) bans, runs setup() and one ban_many() (target: under 2 s), then
   list(). For ipset, `ipset list -t` counts the kernel's entries too. Fail2Ban restores its bans
   at start one command each, so its figure is its per-ban time times the count.
4. Ratios: jailwarden's bans/s over the Fail2Ban way's.

"busy" is how busy the whole machine was (all cores, /proc/stat) during each measurement: other
work on a 2-core machine slows every figure.

Prints a table and writes the figures as JSON to tests/bench/data/last_firewall.json. A
benchmark, not a test: it exits 0 whatever the figures, 1 when a measurement failed.
Run (as root): .venv/bin/python tests/bench/bench_firewall.py   (about 3 min; --quick about 1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench_sshd import SetupFailed, ensure_fail2ban  # noqa: E402 - beside this script
from firewall import BACKENDS  # noqa: E402 - the repository goes on the path first
from tests.integration.netns import NetworkNamespace  # noqa: E402

WORKER = Path(__file__).resolve().parent / "firewall_bench_worker.py"
REPORT = REPO / "tests" / "bench" / "data" / "last_firewall.json"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with Fail2Ban's package
PREFIX = "jwbench"
RESTORE_TARGET_S = 2.0
RESTORE_BACKENDS = ("ipset", "nftables")
COMPARE = {"ipset": "ipset", "nftables": "nft"}  # our backend -> the command Fail2Ban's action runs
_created: list[str] = []  # every namespace name this run made, for the last-resort clean-up


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total else 0.0


def in_namespace(python: str, *argv: str, timeout: float) -> dict:
    """Run the worker with `argv` in a new namespace; its JSON, with the machine's busy share."""
    namespace = NetworkNamespace(prefix=PREFIX)
    _created.append(namespace.name)
    before = machine_busy()
    with namespace:
        try:
            result = namespace.run(python, str(WORKER), *argv, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"worker timed out after {timeout:.0f} s"}
    lines = result.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        report = {"status": "failed", "reason": f"worker exited {result.returncode}: {tail or 'no output'}"}
    report["busy_percent"] = round(busy_percent(before, machine_busy()), 1)
    return report


def module_missing(name: str) -> str | None:
    module = BACKENDS[name].partition(":")[0]
    if importlib.util.find_spec(module) is None:
        return f"module {module} does not exist"
    return None


def measure_backends(args: argparse.Namespace, scratch: Path, results: dict) -> None:
    for name in BACKENDS:
        missing = module_missing(name)
        if missing:
            results[name] = {"status": "unavailable", "reason": missing}
        else:
            path = ["--path", str(scratch / f"hosts.deny.{name}")] if name == "hostsdeny" else []
            results[name] = in_namespace(args.python, "backend", name, "--count", str(args.count), "--single",
                                         str(args.single), "--budget", str(args.budget), *path, timeout=600)
        print(f"  {name}: {_brief(results[name])}", flush=True)


def measure_processes(args: argparse.Namespace, results: dict) -> None:
    try:
        ensure_fail2ban()  # Debian's package, installed (its service never started) if absent
    except SetupFailed as error:
        print(f"  {error}", flush=True)
    fail2ban = subprocess.run([SYSTEM_PYTHON, "-c", "import fail2ban.server.utils"],
                              capture_output=True).returncode == 0
    for tool in ("ipset", "nft"):
        for runner in ("fail2ban", "bare"):
            key = f"{tool} {runner}"
            if runner == "fail2ban" and not fail2ban:
                results[key] = {"status": "unavailable", "reason": f"Fail2Ban is not importable by {SYSTEM_PYTHON}"}
            else:
                python = SYSTEM_PYTHON if runner == "fail2ban" else sys.executable
                results[key] = in_namespace(python, "process", tool, "--count", str(args.process_count),
                                            "--budget", str(args.process_budget), "--runner", runner,
                                            timeout=args.process_budget + 120)
            print(f"  {key}: {_brief(results[key])}", flush=True)


def measure_restores(args: argparse.Namespace, results: dict) -> None:
    for name in RESTORE_BACKENDS:
        missing = module_missing(name)
        if missing:
            results[name] = {"status": "unavailable", "reason": missing}
        else:
            results[name] = in_namespace(args.python, "restore", name, "--count", str(args.restore), "--launched",
                                         repr(time.time()), timeout=600)
        print(f"  {name}: {_brief(results[name])}", flush=True)


def _brief(result: dict) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('reason')}"
    return "ok"


def rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds else None


def ratios(report: dict) -> list[dict]:
    """jailwarden's bans/s over the Fail2Ban way's, for each pair measured."""
    rows = []
    for backend, tool in COMPARE.items():
        ours = report["backends"].get(backend, {})
        for runner in ("fail2ban", "bare"):
            theirs = report["processes"].get(f"{tool} {runner}", {})
            if ours.get("status") != "ok" or theirs.get("status") != "ok":
                continue
            their_rate = 1000 / theirs["mean_ms"]
            many = ours["ban_many"]
            rows.append({"ours": f"{backend} ban_many({many['count']:,})", "theirs": f"{tool} per process, {runner}",
                         "ratio": rate(many["count"], many["seconds"]) / their_rate})
            rows.append({"ours": f"{backend} ban() one by one", "theirs": f"{tool} per process, {runner}",
                         "ratio": (1000 / ours["single"]["mean_ms"]) / their_rate})
            restored = report["restores"].get(backend, {})
            if restored.get("status") == "ok" and runner == "fail2ban":
                theirs_s = theirs["mean_ms"] / 1000 * restored["count"]
                rows.append({"ours": f"{backend} restore {restored['count']:,} (setup+ban_many)",
                             "theirs": f"{tool} per process, {runner} (extrapolated {theirs_s:,.0f} s)",
                             "ratio": theirs_s / restored["setup_plus_ban_many_s"]})
    return rows


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def print_table(report: dict) -> None:
    args = report["args"]
    print(f"\nFirewall backends: {args['count']:,} addresses by ban_many (half IPv4, half IPv6, ttl 600 s), then "
          f"{args['single']:,} more by single ban() calls; each backend in a fresh namespace and process "
          f"({report['worker_python']})")
    header = (f"{'backend':<10} {'setup ms':>9} {'ban_many s':>11} {'bans/s':>10} {'ban() median':>13} "
              f"{'p99 ms':>8} {'ban()/s':>8} {'n':>6} {'list() s':>9} {'listed':>14} {'teardown ms':>12} {'busy':>5}")
    print(header)
    print("-" * len(header))
    for name, result in report["backends"].items():
        if result.get("status") != "ok" and "ban_many" not in result:
            print(f"{name:<10} {result.get('status')}: {result.get('reason')}")
            continue
        many, single, listed = result["ban_many"], result.get("single", {}), result.get("list", {})
        count = f"{listed.get('count', 0):,}/{listed.get('expected', 0):,}" if listed else "-"
        if listed and listed["count"] != listed["expected"]:
            count += "!"
        print(f"{name:<10} {result['setup_s'] * 1000:>9.1f} {many['seconds']:>11.3f} "
              f"{_num(rate(many['count'], many['seconds'])):>10} {_num(single.get('median_ms'), '.2f'):>13} "
              f"{_num(single.get('p99_ms'), '.2f'):>8} "
              f"{_num(1000 / single['mean_ms'] if single.get('mean_ms') else None):>8} "
              f"{_num(single.get('n')):>6} {_num(listed.get('seconds'), '.3f'):>9} {count:>14} "
              f"{_num(result.get('teardown_s', 0) * 1000, '.1f'):>12} {result['busy_percent']:>4.0f}%")
        if result.get("status") != "ok":
            print(f"{'':<10} {result['status']}: {result.get('reason')}")
        if result.get("teardown_error"):
            print(f"{'':<10} teardown failed: {result['teardown_error']}")
    print("\"listed\" is list()'s count / what was banned; ban() runs with the ban_many addresses already in place.")

    print(f"\nFail2Ban's way: one process per ban, one after another ({args['process_count']:,} asked, at most "
          f"{args['process_budget']:.0f} s each; \"~\" = extrapolated from those done)")
    for_all = f"for {args['process_count']:,}"
    header = (f"{'command':<8} {'runner':<9} {'done':>7} {'seconds':>9} {for_all:>10} "
              f"{'bans/s':>8} {'median ms':>10} {'p99 ms':>8} {'busy':>5}")
    print(header)
    print("-" * len(header))
    for key, result in report["processes"].items():
        tool, runner = key.split()
        if result.get("status") != "ok":
            print(f"{tool:<8} {runner:<9} {result.get('status')}: {result.get('reason')}")
            continue
        mark = "~" if result["extrapolated"] else ""
        print(f"{tool:<8} {runner:<9} {result['done']:>7,} {result['seconds']:>9.1f} "
              f"{mark + format(result['seconds_for_asked'], '.1f'):>10} {1000 / result['mean_ms']:>8,.0f} "
              f"{result['median_ms']:>10.2f} {result['p99_ms']:>8.2f} {result['busy_percent']:>4.0f}%"
              + (f"  ({result['failures']} failed)" if result["failures"] else ""))
    print("runner fail2ban: Fail2Ban 1.0.2's Utils.executeCmd (sh -c, polls for the end); bare: subprocess.run, "
          "no shell")

    print(f"\nRestore at start-up: a fresh process, setup() + ban_many({args['restore']:,}), then list() "
          f"(target: setup + ban_many under {RESTORE_TARGET_S:.0f} s)")
    header = (f"{'backend':<10} {'start+import s':>14} {'build s':>8} {'setup s':>8} {'ban_many s':>11} "
              f"{'setup+ban_many s':>17} {'whole process s':>16} {'list() s':>9} {'listed':>9} {'kernel':>9} "
              f"{'busy':>5}")
    print(header)
    print("-" * len(header))
    for name, result in report["restores"].items():
        if "ban_many_s" not in result:
            print(f"{name:<10} {result.get('status')}: {result.get('reason')}")
            continue
        verdict = "ok" if result["setup_plus_ban_many_s"] < RESTORE_TARGET_S else "SLOW"
        print(f"{name:<10} {result['interpreter_start_s'] + result['import_s']:>14.3f} {result['build_items_s']:>8.3f} "
              f"{result['setup_s']:>8.3f} {result['ban_many_s']:>11.3f} "
              f"{format(result['setup_plus_ban_many_s'], '.3f') + ' ' + verdict:>17} "
              f"{result['process_total_s']:>16.3f} {_num(result.get('list_s'), '.3f'):>9} "
              f"{_num(result.get('list_count')):>9} {_num(result.get('kernel_count')):>9} "
              f"{result['busy_percent']:>4.0f}%")
        if result.get("status") != "ok":
            print(f"{'':<10} {result['status']}: {result.get('reason')}")
    print("whole process: from this script starting the worker (ip netns exec + interpreter start) to ban_many's "
          "end; build: making the ipaddress objects")

    print("\nRatios, jailwarden / Fail2Ban's way (bans per second; for restore, time taken)")
    header = f"{'jailwarden':<42} {'Fail2Ban way':<52} {'ratio':>9}"
    print(header)
    print("-" * len(header))
    for row in report["ratios"]:
        print(f"{row['ours']:<42} {row['theirs']:<52} {row['ratio']:>8,.1f}x")
    if "error" in report:
        print(f"\nINCOMPLETE: {report['error']}")
    print(f"\n{report['seconds']:.0f} s in all; written to {REPORT.relative_to(REPO)}")


def clean_up() -> None:
    """Delete any namespace of ours that is still there (e.g. after Ctrl-C during `ip netns add`)."""
    existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    for name in _created:
        if name in existing:
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="addresses per ban_many (default 10,000)")
    parser.add_argument("--single", type=int, default=1_000, help="single ban() calls (default 1,000)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds at most for the single ban() loop")
    parser.add_argument("--process-count", type=int, default=10_000,
                        help="bans done Fail2Ban's way, one process each (default 10,000)")
    parser.add_argument("--process-budget", type=float, default=60.0,
                        help="seconds at most per Fail2Ban-way run; the rest is extrapolated (default 60)")
    parser.add_argument("--restore", type=int, default=100_000, help="bans restored at start-up (default 100,000)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the backends, e.g. /tmp/jwdeb/bin/python for Debian 12's libraries")
    parser.add_argument("--quick", action="store_true", help="1,000 bans Fail2Ban's way, extrapolated")
    args = parser.parse_args()
    if args.quick:
        args.process_count = 1_000
    if os.geteuid() != 0:
        print("bench_firewall: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so every namespace is deleted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    worker_python = subprocess.run([args.python, "-c", "import platform, importlib.metadata as m; print(platform."
                                    "python_version(), m.version('pyroute2'), m.version('python-iptables'))"],
                                   capture_output=True, text=True).stdout.split()
    report: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
                    "kernel": platform.release(), "args": vars(args),
                    "worker_python": f"{args.python}: Python {' pyroute2 '.join(worker_python[:2])} python-iptables "
                                     f"{worker_python[2]}" if len(worker_python) == 3 else args.python,
                    "backends": {}, "processes": {}, "restores": {}}
    scratch = Path(tempfile.mkdtemp(prefix="jwbench-hostsdeny-"))
    started = time.monotonic()
    try:
        print("jailwarden backends:", flush=True)
        measure_backends(args, scratch, report["backends"])
        print("Fail2Ban's way:", flush=True)
        measure_processes(args, report["processes"])
        print("restore at start-up:", flush=True)
        measure_restores(args, report["restores"])
    except (Exception, KeyboardInterrupt) as error:  # report what was measured, then fail
        report["error"] = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        print(f"bench_firewall: {report['error']}", file=sys.stderr)
    finally:
        clean_up()
        shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["ratios"] = ratios(report)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    failed = [name for part in ("backends", "processes", "restores") for name, result in report[part].items()
              if result.get("status") == "failed"]
    return 1 if "error" in report or failed else 0


if __name__ == "__main__":
    sys.exit(main())
