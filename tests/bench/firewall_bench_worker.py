"""The measuring side of tests/bench/bench_firewall.py: one run of one measurement, started by it
under `ip netns exec` in a namespace it created (so every firewall change lands there), printing
one JSON object as its last line.

  backend NAME --count N --single M [--path FILE]   setup, ban_many(N), M single ban() calls, list, teardown
  restore NAME --count N --launched T              a fresh process: setup + ban_many(N), then list()
  process ipset|nft --count N --budget S [--runner bare|fail2ban]
                                                   Fail2Ban's way: one process per ban, one after another

It imports the repository only for the `backend` and `restore` modes, so `process` also runs
under Debian's /usr/bin/python3, where Fail2Ban's own command runner lives.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TTL = 600  # seconds; Fail2Ban's default bantime
JAIL = "bench"
V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
FAIL2BAN_SITE = "/usr/lib/python3/dist-packages"


def addresses(count: int, block: int = 0) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """`count` distinct addresses, alternately IPv4 (10.0.0.0/8) and IPv6 (2001:db8::/32);
    different `block`s (0-15) never overlap, up to 1,000,000 addresses each."""
    result: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for index in range(count):
        n = block * 1_000_000 + index // 2 + 1
        result.append(ipaddress.IPv4Address(V4_BASE + n) if index % 2 == 0 else ipaddress.IPv6Address(V6_BASE + n))
    return result


def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(ordered), "mean_ms": statistics.fmean(ordered) * 1000, "median_ms": at(0.5),
            "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1000}


def build(name: str, path: str | None):
    """(backend, import seconds) for backend `name`; raises what import or construction raise."""
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()
    from firewall import backend_class

    cls = backend_class(name)
    imported = time.perf_counter() - started
    options = {"path": path} if name == "hostsdeny" else {}
    return cls(JAIL, **options), imported


def unavailable(stage: str, error: BaseException) -> dict:
    return {"status": "unavailable", "reason": f"{stage}: {type(error).__name__}: {error}"}


def refused_count(result) -> int:
    """ban_many's refusals: the ipset backend returns them as a list, the others raise."""
    return len(result) if isinstance(result, list) else 0


def backend_main(args: argparse.Namespace) -> dict:
    try:
        backend, imported = build(args.name, args.path)
    except Exception as error:  # any import or option failure means "this backend cannot be measured"
        return unavailable("import", error)
    try:
        started = time.perf_counter()
        backend.setup()
        setup = time.perf_counter() - started
    except Exception as error:
        return unavailable("setup", error)
    report: dict = {"status": "ok", "import_s": imported, "setup_s": setup}
    try:
        many = [(address, TTL) for address in addresses(args.count)]
        started = time.perf_counter()
        refused = refused_count(backend.ban_many(many))
        report["ban_many"] = {"count": args.count, "seconds": time.perf_counter() - started, "refused": refused}
        singles = addresses(args.single, block=1)
        latencies: list[float] = []
        deadline = time.monotonic() + args.budget
        for address in singles:
            started = time.perf_counter()
            backend.ban(address, TTL)
            latencies.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                break
        report["single"] = {"asked": args.single, "in_set_before": args.count, "budget_s": args.budget,
                            **percentiles(latencies)}
        started = time.perf_counter()
        listed = backend.list()
        report["list"] = {"seconds": time.perf_counter() - started, "count": len(listed),
                          "expected": args.count - refused + len(latencies),
                          "ttl_sample": _ttl_sample(listed, singles[0])}
    except Exception as error:  # report how far it got; teardown still runs
        report["status"] = "failed"
        report["reason"] = f"{type(error).__name__}: {error}"
    try:
        started = time.perf_counter()
        backend.teardown()
        report["teardown_s"] = time.perf_counter() - started
    except Exception as error:
        report["teardown_error"] = f"{type(error).__name__}: {error}"
    return report


def _ttl_sample(listed: dict, address) -> float | None:
    for key in (address, ipaddress.ip_network(address)):
        if key in listed:
            return listed[key]
    return None


def restore_main(args: argparse.Namespace) -> dict:
    """What a restarting agent does: a new process imports the backend, builds the bans it read
    from its store, sets up and restores them in one ban_many, then lists the kernel's view."""
    entered = time.time()
    try:
        backend, imported = build(args.name, args.path)
    except Exception as error:
        return unavailable("import", error)
    report: dict = {"status": "ok", "count": args.count, "interpreter_start_s": entered - args.launched,
                    "import_s": imported}
    started = time.perf_counter()
    many = [(address, TTL) for address in addresses(args.count)]
    report["build_items_s"] = time.perf_counter() - started
    try:
        started = time.perf_counter()
        backend.setup()
        report["setup_s"] = time.perf_counter() - started
    except Exception as error:
        return {**report, **unavailable("setup", error)}
    try:
        started = time.perf_counter()
        report["refused"] = refused_count(backend.ban_many(many))
        report["ban_many_s"] = time.perf_counter() - started
        report["setup_plus_ban_many_s"] = report["setup_s"] + report["ban_many_s"]
        report["process_total_s"] = time.time() - args.launched
        started = time.perf_counter()
        listed = backend.list()
        report["list_s"] = time.perf_counter() - started
        report["list_count"] = len(listed)
        report["kernel_count"] = kernel_count(args.name)
    except Exception as error:
        report["status"] = "failed"
        report["reason"] = f"{type(error).__name__}: {error}"
    # No teardown: the namespace is deleted with everything in it, and teardown is not restore.
    return report


def kernel_count(name: str) -> int | None:
    """The entry count in the kernel's own words (ipset's header), where that is cheap to read."""
    if name != "ipset":
        return None
    listing = subprocess.run(["ipset", "list", "-t"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split(":")[1]) for line in listing.splitlines() if line.startswith("Number of entries:"))


def process_main(args: argparse.Namespace) -> dict:
    """Fail2Ban's iptables-ipset and nftables actions: `actionstart` once, then `actionban` as one
    command per ban (Fail2Ban 1.0.2's action.d/iptables-ipset.conf and nftables.conf)."""
    if args.runner == "fail2ban":
        sys.path.append(FAIL2BAN_SITE)
        try:
            from fail2ban.server.utils import Utils
        except ImportError as error:
            return unavailable("import fail2ban", error)

        def run(command: str) -> bool:
            return Utils.executeCmd(command, timeout=60)
    else:
        def run(command: str) -> bool:
            # the same words the shell would pass, without the shell
            return subprocess.run(shlex.split(command), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0

    if args.tool == "ipset":
        start = ["ipset -exist create f2b-bench hash:ip timeout 0",
                 "ipset -exist create f2b-bench6 hash:ip timeout 0 family inet6"]

        def ban_command(address) -> str:
            return f"ipset -exist add f2b-bench{'6' if address.version == 6 else ''} {address} timeout {TTL}"
    else:
        # Fail2Ban's nftables sets have no timeout flag: its own timers unban.
        start = ["nft add table inet f2b-table",
                 "nft -- add chain inet f2b-table f2b-chain \\{ type filter hook input priority -1 \\; \\}",
                 "nft add set inet f2b-table addr-set-bench \\{ type ipv4_addr\\; \\}",
                 "nft add set inet f2b-table addr6-set-bench \\{ type ipv6_addr\\; \\}"]

        def ban_command(address) -> str:
            kind = "addr6" if address.version == 6 else "addr"
            return f"nft add element inet f2b-table {kind}-set-bench \\{{ {address} \\}}"

    for command in start:
        # Fail2Ban runs its commands through the shell, hence the escaped braces and ';'
        if not subprocess.run(command, shell=True, capture_output=True).returncode == 0:
            return {"status": "failed", "reason": f"actionstart failed: {command}"}
    deadline = time.monotonic() + args.budget
    latencies: list[float] = []
    failures = 0
    for address in addresses(args.count):
        started = time.perf_counter()
        failures += not run(ban_command(address))
        latencies.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    done = len(latencies)
    total = sum(latencies)
    return {"status": "ok", "runner": args.runner, "tool": args.tool, "asked": args.count, "done": done,
            "failures": failures, "seconds": total, "extrapolated": done < args.count,
            "seconds_for_asked": total / done * args.count, "example": ban_command(addresses(2)[1]),
            **percentiles(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    backend = sub.add_parser("backend")
    backend.add_argument("name")
    backend.add_argument("--count", type=int, default=10_000)
    backend.add_argument("--single", type=int, default=1_000)
    backend.add_argument("--budget", type=float, default=60.0, help="seconds for the single-ban loop at most")
    backend.add_argument("--path", help="the hostsdeny backend's file")
    restore = sub.add_parser("restore")
    restore.add_argument("name")
    restore.add_argument("--count", type=int, default=100_000)
    restore.add_argument("--launched", type=float, required=True, help="time.time() when the parent started us")
    restore.add_argument("--path")
    process = sub.add_parser("process")
    process.add_argument("tool", choices=("ipset", "nft"))
    process.add_argument("--count", type=int, default=10_000)
    process.add_argument("--budget", type=float, default=90.0, help="seconds at most; the rest is extrapolated")
    process.add_argument("--runner", choices=("bare", "fail2ban"), default="fail2ban")
    args = parser.parse_args()
    # The log backend's records are formatted and written, as a daemon's would be, but not shown.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do
    modes = {"backend": backend_main, "restore": restore_main, "process": process_main}
    print(json.dumps(modes[args.mode](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
