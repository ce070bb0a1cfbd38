"""Benchmarks a flood: 100,000 failure entries written into a private journald from 50,000
distinct addresses, 25,000 of which fail 3 times (maxretry 3) and must be banned, through the
real agent (`jailwarden run`, ipset backend, in a network namespace of its own) into the
kernel, while `status` is asked over the control socket every 50 ms.

Then, in the same run, the same flood through Fail2Ban 1.0.2 (Debian's package, installed if
absent, its service never started): `fail2ban-server` with `backend = systemd[namespace=...]`
in a network namespace of its own and an ipset action as Fail2Ban's iptables-ipset actions
run it (one `ipset add` process per ban, IPv4 and IPv6 sets). `--no-fail2ban` skips it; it
takes minutes, so it stops after `--fail2ban-timeout` seconds and reports how far it got.

Targets (issue 5): all 25,000 bans in the kernel within 10 s of the last entry, peak RSS under
100 MB, no false ban, `status` answered within 100 ms throughout.

Prints a table and writes tests/bench/data/last_flood.json. Run as root:
    .venv/bin/python tests/bench/bench_flood.py [--addresses 50000 --banned 25000] [--no-fail2ban]

peak_rss_mib is the kernel's VmHWM, which counts the journal file pages the reader maps (the
kernel may drop them at any time); peak_rss_anon_mib is the agent's own memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import journal_bench_fail2ban as f2b  # noqa: E402 - beside this script
from bench_sshd import ensure_fail2ban  # noqa: E402
from tests.integration.flood import (  # noqa: E402 - the repository goes on the path first
    EXE,
    MAXRETRY,
    MemoryProbe,
    _memory_mib,
    flood,
    kernel_set_members,
    plan,
    run_flood,
)
from tests.integration.journald import JournalNamespace  # noqa: E402
from tests.integration.netns import NetworkNamespace  # noqa: E402

# Fail2Ban's ipset actions (action.d/iptables-ipset*.conf) add each ban with one `ipset` command;
# the hook rule and its iptables commands are left out (they run once, at the start).
FAIL2BAN_ACTION = """[Definition]
actionstart = ipset -exist create f2b-flood hash:ip timeout 3600 maxelem 1048576
actionstop =
actioncheck =
actionban = ipset -exist add f2b-flood <ip> timeout 3600
actionunban = ipset -exist del f2b-flood <ip>

[Init?family=inet6]
actionstart = ipset -exist create f2b-flood6 hash:ip timeout 3600 family inet6 maxelem 1048576
actionban = ipset -exist add f2b-flood6 <ip> timeout 3600
actionunban = ipset -exist del f2b-flood6 <ip>
"""

REPORT = REPO / "tests" / "bench" / "data" / "last_flood.json"
TARGETS = {"last_entry_to_all_banned_s": 10.0, "peak_rss_mib": 100.0, "status_max_ms": 100.0}


def show(report: dict) -> None:
    for key, value in report.items():
        if not isinstance(value, dict):
            print(f"  {key:<30} {value:,.3f}" if isinstance(value, float) else f"  {key:<30} {value}")


def run_fail2ban_flood(count: int, banned: int, timeout: float) -> dict:
    """The same flood through fail2ban-server; how long until every ban was in the kernel (or
    how many were by `timeout`), and its peak memory."""
    messages, guilty, innocent = plan(count, banned)
    report: dict = {"version": f2b.version()}
    with JournalNamespace(settings={"RuntimeMaxFileSize": "128M"}) as journal, NetworkNamespace("jwf2b") as netns, \
            f2b.Fail2BanServer(journal.name, EXE, r"login failed for \S+ from <HOST>$", MAXRETRY,
                               action=FAIL2BAN_ACTION, netns=netns.name) as server:
        memory = MemoryProbe(server.pid)
        memory.start()
        try:
            sent = flood(journal, netns, messages, banned, timeout, interval=0.5)
        finally:
            memory.done.set()
            memory.join()
        peak = _memory_mib(server.pid).get("VmHWM")
        report |= sent.outcome(kernel_set_members(netns, prefix="add f2b-flood"), guilty, innocent)
    report |= {
        "bans_per_s": sent.in_kernel / (sent.done - sent.first),
        "stopped_after_s": None if sent.in_kernel >= banned else timeout,
        "peak_rss_mib": peak, "peak_rss_anon_mib": memory.peak_anon_mib,
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=50_000)
    parser.add_argument("--banned", type=int, default=25_000)
    parser.add_argument("--no-fail2ban", action="store_true", help="skip Fail2Ban's run of the same flood")
    parser.add_argument("--fail2ban-timeout", type=float, default=600.0,
                        help="seconds Fail2Ban gets before it is stopped and its progress reported (default 600)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_flood: needs root (journald instance, network namespace)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="jw-flood-") as workdir:
        report = run_flood(Path(workdir), args.addresses, args.banned, timeout=300)
    print("jailwarden:")
    show(report)
    if not args.no_fail2ban:
        ensure_fail2ban()
        report["fail2ban"] = run_fail2ban_flood(args.addresses, args.banned, args.fail2ban_timeout)
        print("Fail2Ban (same flood, same run):")
        show(report["fail2ban"])
        theirs = report["fail2ban"]
        if theirs["first_entry_to_all_banned_s"] and report["first_entry_to_all_banned_s"]:
            report["ratio_time_to_all_banned"] = (theirs["first_entry_to_all_banned_s"]
                                                   / report["first_entry_to_all_banned_s"])
        elif report["first_entry_to_all_banned_s"]:
            report["ratio_bans_per_s"] = (args.banned / report["first_entry_to_all_banned_s"]) / theirs["bans_per_s"]
        for key in ("ratio_time_to_all_banned", "ratio_bans_per_s"):
            if key in report:
                print(f"{key:<30} {report[key]:,.1f}x")
    verdicts = {key: report[key] is not None and report[key] <= limit for key, limit in TARGETS.items()}
    verdicts["no_false_ban"] = report["false_bans"] == 0 and report["missing"] == 0
    report["targets"] = verdicts
    print("targets:", ", ".join(f"{key} {'met' if ok else 'MISSED'}" for key, ok in verdicts.items()))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(f"written to {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
