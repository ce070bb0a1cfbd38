"""A flood of failures through the real agent into the kernel: `run_flood` writes N failure
entries into a private journald (a journal namespace), from many distinct addresses of which a
share repeat maxretry times and must be banned; the agent (`jailwarden run`, ipset backend, in
a network namespace of its own) bans them; the kernel's set is watched until every expected
address is in it, while `status` is asked over the control socket every 50 ms.

Shared by tests/integration/test_flood.py (small) and tests/bench/bench_flood.py (100,000
entries). Attacker addresses: 198.18.0.0/15 (RFC 2544, for benchmarks) and 2001:db8::/32.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


from .agent import AgentProcess
from .journald import JournalNamespace
from .netns import NetworkNamespace

EXE = os.path.realpath(sys.executable)
MAXRETRY = 3
MESSAGE = "login failed for admin from {address}"
FILTER = f"""
description = "the flood's service, known by the executable that writes its entries"
failregex = ['login failed for \\S+ from <HOST>$']
[journal]
_EXE = ["{EXE}"]
_UID = ["0"]
"""
# The sender process: datagrams (JSON list of messages) on stdin; it prints when it started and
# finished sending, then stays alive until stdin closes, so journald can still read its _EXE.
_SENDER = r"""
import json, socket, sys, time
sys.path.insert(0, sys.argv[2])
from tests.integration.journald import encode_entry
messages = json.loads(sys.stdin.readline())
datagrams = [encode_entry(m, {"SYSLOG_IDENTIFIER": "jwflood"}) for m in messages]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
started = time.time()
for datagram in datagrams:
    sock.sendto(datagram, sys.argv[1])
print(json.dumps([started, time.time()]), flush=True)
sys.stdin.read()
"""


def addresses(count: int, seed: int = 1) -> list[str]:
    """`count` distinct addresses, half IPv4 (198.18.0.0/15), half IPv6 (2001:db8::/32)."""
    rng = random.Random(seed)
    v4 = rng.sample(range(1 << 17), count // 2)
    v6 = rng.sample(range(1 << 40), count - count // 2)
    return ([str(ipaddress.IPv4Address((198 << 24) + (18 << 16) + n)) for n in v4]
            + [str(ipaddress.IPv6Address((0x20010DB8 << 96) + n)) for n in v6])


def plan(count: int, banned: int, seed: int = 1) -> tuple[list[str], set[str], set[str]]:
    """(messages in sending order, addresses that must be banned, addresses that must not):
    `banned` addresses fail MAXRETRY times, the rest once, all shuffled together."""
    rng = random.Random(seed)
    every = addresses(count, seed)
    rng.shuffle(every)
    guilty, innocent = set(every[:banned]), set(every[banned:])
    messages = [MESSAGE.format(address=a) for a in every[:banned] for _ in range(MAXRETRY)]
    messages += [MESSAGE.format(address=a) for a in every[banned:]]
    rng.shuffle(messages)
    return messages, guilty, innocent


def kernel_set_members(namespace: NetworkNamespace, prefix: str = "add jw-flood-") -> set[str]:
    out = namespace.run("ipset", "list", "-o", "save", timeout=120).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith(prefix)}


def kernel_set_size(namespace: NetworkNamespace) -> int:
    """Entries in the jail's two sets, from one `ipset list -t` (headers only)."""
    out = namespace.run("ipset", "list", "-t", check=False).stdout
    return sum(int(line.split(":")[1]) for line in out.splitlines() if line.startswith("Number of entries:"))


class MemoryProbe(threading.Thread):
    """Samples the agent's RssAnon (its own memory) every 50 ms, keeping the largest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_anon_mib = pid, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_anon_mib = max(self.peak_anon_mib, _memory_mib(self.pid).get("RssAnon", 0.0))
            self.done.wait(0.05)


class StatusProbe:
    """A process of its own (so this one's threads do not delay it) asking `status` every 50 ms
    until stopped; `stop()` returns [(wall time asked, seconds to answer)] and the failures."""

    _SCRIPT = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[2])
from agent.control import ControlClient
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
latencies, failures = [], []
while not stop.is_set():
    asked, started = time.time(), time.monotonic()
    try:
        with ControlClient(sys.argv[1], timeout=5) as client:
            client.request("status")
        latencies.append((asked, time.monotonic() - started))
    except Exception as error:
        failures.append(f"{type(error).__name__}: {error}")
    stop.wait(0.05)
print(json.dumps([latencies, failures]))
"""

    def __init__(self, socket_path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", self._SCRIPT, str(socket_path),
                                         str(Path(__file__).resolve().parents[2])],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[list[tuple[float, float]], list[str]]:
        output, _ = self.process.communicate(timeout=30)
        latencies, failures = json.loads(output)
        return [tuple(pair) for pair in latencies], failures


@dataclass(frozen=True, slots=True)
class Sent:
    """When the flood's first and last entries were sent, when the watch ended, and how many bans
    the kernel held then."""

    first: float
    last: float
    done: float
    in_kernel: int
    banned: int  # expected

    def outcome(self, members: set[str], guilty: set[str], innocent: set[str]) -> dict:
        """The report's figures on time and correctness, given the kernel's members at the end."""
        complete = self.in_kernel >= self.banned
        return {"send_seconds": self.last - self.first,
                "last_entry_to_all_banned_s": self.done - self.last if complete else None,
                "first_entry_to_all_banned_s": self.done - self.first if complete else None,
                "banned_in_kernel": len(members), "missing": len(guilty - members),
                "false_bans": len(members & innocent)}


def flood(journal: JournalNamespace, netns: NetworkNamespace, messages: list[str], banned: int, timeout: float,
          interval: float) -> Sent:
    """Send `messages` into `journal` from a process of their own, then watch the kernel's sets in
    `netns` every `interval` seconds until they hold `banned` entries or `timeout` passed. The
    sender lives until then: journald reads its _EXE from /proc as it stores each entry."""
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, journal.socket_path,
                               str(Path(__file__).resolve().parents[2])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sender.stdin.write(json.dumps(messages) + "\n")
        sender.stdin.flush()
        first, last = json.loads(sender.stdout.readline())
        deadline, size = time.monotonic() + timeout, 0
        while size < banned and time.monotonic() < deadline:
            time.sleep(interval)
            size = kernel_set_size(netns)
        return Sent(first, last, time.time(), size, banned)
    finally:
        sender.stdin.close()
        sender.wait()


def run_flood(workdir: Path, count: int, banned: int, timeout: float = 120.0) -> dict:
    """The flood, measured; the report as a dict (times in seconds, memory in MiB)."""
    messages, guilty, innocent = plan(count, banned)
    report: dict = {"entries": len(messages), "addresses": count, "expected_bans": banned}
    with JournalNamespace(settings={"RuntimeMaxFileSize": "128M"}) as journal, NetworkNamespace("jwfld") as netns:
        config = f"""
[agent]
state_dir = "{workdir}/state"
socket = "{workdir}/control.sock"
backend = "ipset"
[sources.journal]
namespace = "{journal.name}"
[sources.syslog]
enabled = false
[jails.flood]
filter = "flood"
maxretry = {MAXRETRY}
findtime = "10m"
bantime = "1h"
"""
        agent = AgentProcess(workdir, config, {"flood": FILTER}, dry_run=False, netns=netns.name,
                             log_level="info")
        with agent:
            probe = StatusProbe(workdir / "control.sock")
            memory_probe = MemoryProbe(agent.process.pid)
            memory_probe.start()
            try:
                sent = flood(journal, netns, messages, banned, timeout, interval=0.1)
            finally:
                latencies, failures = probe.stop()
                memory_probe.done.set()
                memory_probe.join()
            memory = _memory_mib(agent.process.pid)
            report |= sent.outcome(kernel_set_members(netns), guilty, innocent)
        report |= {
            "peak_rss_mib": memory.get("VmHWM"),
            "peak_rss_anon_mib": memory_probe.peak_anon_mib, "rss_anon_mib_at_end": memory.get("RssAnon"),
            "rss_file_mib_at_end": memory.get("RssFile"),
            "status_requests": len(latencies), "status_failures": failures[:5],
            "status_max_ms": 1000 * max((took for _, took in latencies), default=0.0),
            "status_p99_ms": 1000 * sorted(took for _, took in latencies)[int(0.99 * (len(latencies) - 1))]
            if latencies else None,
            "status_slow": [(round(asked - sent.first, 2), round(1000 * took)) for asked, took in latencies
                            if took > 0.08],
        }
    return report


def _memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and, now, RssAnon (the process's own memory) and RssFile (mapped files:
    mostly the journal files the reader maps, which the kernel can drop at any time)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "RssAnon", "RssFile"):
            found[key] = int(line.split()[1]) / 1024
    return found
