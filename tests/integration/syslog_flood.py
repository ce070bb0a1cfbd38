"""A flood at the real agent's syslog receiver: `run_syslog_flood` starts `jailwarden run` listening
on UDP and TCP (127.0.0.1, a free port) and on a unix socket, with small syslog limits, a jail
sshd (maxretry 3) and [metrics]; then, at once,

- a process sends `datagrams` datagrams of random content to the UDP port as fast as it can,
- a process opens `connections` TCP connections and abandons them (flood_senders.py says how),
- real `logger`s send sshd failures for a few addresses (203.0.113.0/24) over the unix socket,
  the channel this config trusts, each address maxretry times,

while `status` is asked every 50 ms from another process and the agent's memory sampled every
50 ms. The report says what was sent, what the agent counted and dropped (from `status --json`
and /metrics), how long each ban took, and the agent's peak memory against `Limits.bound_mib`.

Shared by tests/integration/test_syslog_flood.py (small) and tests/bench/bench_syslog_flood.py
(the issue's sizes: 1,000,000 datagrams, 100,000 connections).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.control import ControlClient

from .agent import AgentProcess
from .flood import MemoryProbe, StatusProbe, _memory_mib
from .polling import terminate, wait_until
from .rsyslog import free_port, run_logger

REPO = Path(__file__).resolve().parents[2]
MAXRETRY = 3
KIB = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The receiver's limits in the flood's config, and the memory they allow."""

    queue_size: int = 1_000
    max_message: int = 4 * KIB
    max_connections: int = 200
    idle_timeout: float = 1.0

    # What the agent may hold beyond what it held before the flood, in the worst case:
    # - each queued event: its text, up to max_message characters, 4 bytes each once one
    #   character is beyond U+FFFF (random bytes decode to that), plus the LogEvent, its fields
    #   dict and their strings (~1 KiB);
    # - each open connection: its decoder's pending frame (under max_message once a read is
    #   decoded) plus the transport, protocol, socket and timer objects (~4 KiB);
    # - SLACK_MIB for the rest: the allocator's free lists and arenas, one 64 KiB TCP read's
    #   frames, a status answer, the log lines in flight.
    EVENT_OVERHEAD = KIB
    CONNECTION_OVERHEAD = 4 * KIB
    SLACK_MIB = 16.0

    def bound_mib(self) -> float:
        queued = self.queue_size * (4 * self.max_message + self.EVENT_OVERHEAD)
        connections = self.max_connections * (self.max_message + self.CONNECTION_OVERHEAD)
        return (queued + connections) / (1024 * 1024) + self.SLACK_MIB

    def config(self) -> str:
        return (f"max_message = {self.max_message}\nmax_connections = {self.max_connections}\n"
                f'idle_timeout = "{self.idle_timeout:g}"\nqueue_size = {self.queue_size}\n')


def agent_config(workdir: Path, port: int, metrics_port: int, limits: Limits) -> str:
    return f"""
[agent]
state_dir = "{workdir}/state"
socket = "{workdir}/control.sock"
backend = "log"
[sources.journal]
enabled = false
[sources.syslog]
listen = ["udp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}", "unix://{workdir}/syslog.sock"]
allow = ["127.0.0.0/8"]
{limits.config()}
[metrics]
listen = "127.0.0.1:{metrics_port}"
[jails.sshd]
filter = "sshd"
maxretry = {MAXRETRY}
findtime = "10m"
bantime = "1h"
"""


def legit_addresses(count: int) -> list[str]:
    return [f"203.0.113.{10 + n}" for n in range(count)]


class Sender:
    """One of flood_senders.py's processes: started, its start time read, its report awaited."""

    def __init__(self, *argv: object) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.integration.flood_senders",
                                         *map(str, argv)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.started = json.loads(self.process.stdout.readline())["started"]

    def running(self) -> bool:
        return self.process.poll() is None

    def report(self, timeout: float) -> dict:
        self.process.wait(timeout)  # then read: communicate() would miss what readline() buffered
        assert self.process.returncode == 0, f"a flood sender failed ({self.process.returncode})"
        return json.loads(self.process.stdout.read())

    def stop(self) -> None:
        terminate(self.process)


def send_failures(socket_path: Path, addresses: list[str]) -> dict[str, float]:
    """Each address's sshd failure maxretry times, round-robin, by `logger -u` (root, over the
    agent's unix socket); returns when (time.monotonic()) the logger that sent each address's
    last one was started, so a time to ban from there includes logger's own start (a few ms)."""
    last = {}
    for attempt in range(MAXRETRY):
        for address in addresses:
            last[address] = time.monotonic()
            run_logger("-u", str(socket_path), "-t", "sshd", "-i",
                       f"Failed password for invalid user flood{attempt} from {address} port 4242 ssh2")
    return last


def scrape(port: int) -> dict[str, float]:
    """The samples of the agent's /metrics: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def status_json(agent: AgentProcess) -> dict:
    """What `jailwarden status --json` prints."""
    answer = agent.cli("status", "--json")
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def syslog_counts(workdir: Path) -> dict[str, int]:
    with ControlClient(workdir / "control.sock") as client:
        return client.request("status")["sources"]["syslog"]["counts"]


def run_syslog_flood(workdir: Path, datagrams: int, connections: int, *, hold: int = 1_000,
                     limits: Limits = Limits(), addresses: int = 5, seed: int = 1, timeout: float = 600.0) -> dict:
    """The flood, measured; the report as a dict (times in seconds, memory in MiB)."""
    port, metrics_port = free_port(), free_port()
    legit = legit_addresses(addresses)
    report: dict = {"datagrams": datagrams, "connections": connections, "hold": hold, "limits": asdict(limits),
                    "memory_bound_over_baseline_mib": limits.bound_mib()}
    agent = AgentProcess(workdir, agent_config(workdir, port, metrics_port, limits), log_level="info")
    with agent:
        pid = agent.process.pid
        baseline = _memory_mib(pid)
        status_probe = StatusProbe(workdir / "control.sock")
        memory_probe = MemoryProbe(pid)
        memory_probe.start()
        udp = tcp = None
        try:
            udp = Sender("udp", port, datagrams, limits.max_message, seed)
            tcp = Sender("tcp", port, connections, hold, seed, limits.max_message)
            legit_started = time.time()
            last_sent = send_failures(workdir / "syslog.sock", legit)
            legit_finished = time.time()
            udp_running, tcp_running = udp.running(), tcp.running()
            udp_report, tcp_report = udp.report(timeout), tcp.report(timeout)
            flood_ended = time.time()
            ban_at = {address: agent.logged_at(rf"jail sshd: ban {re.escape(address)} for", timeout=60)
                      for address in legit}
            # Every connection the agent holds is abandoned: each times out within idle_timeout.
            wait_until(lambda: (c := syslog_counts(workdir))["connections_open"] == 0 and c["queued"] == 0,
                       "the abandoned connections to time out and the queue to drain",
                       timeout=limits.idle_timeout * 3 + 30, interval=0.05)
            final = status_json(agent)
            metrics = scrape(metrics_port)
        finally:
            latencies, status_failures = status_probe.stop()
            memory_probe.done.set()
            memory_probe.join()
            for sender in (udp, tcp):
                if sender is not None:
                    sender.stop()
        memory = _memory_mib(pid)
        alive = agent.process.poll() is None
        log_lines = len(agent.lines)
        untrusted_lines = len(agent.matching(r"not counting a failure from 198\.51\.100\."))
        receiver_lines = len(agent.matching(r"^warning: syslog: "))
    syslog = final["sources"]["syslog"]
    counts = syslog["counts"]
    legit_sent = addresses * MAXRETRY
    during_flood = [took for asked, took in latencies if udp_report["started"] <= asked <= flood_ended]
    report |= {
        "alive": alive,
        "datagrams_sent": udp_report["sent"], "datagram_send_errors": udp_report["errors"],
        "datagram_pool": udp_report["pool"],
        "datagrams_per_s_sent": udp_report["sent"] / (udp_report["finished"] - udp_report["started"]),
        # Of `received`, the legitimate lines came over the unix socket and no TCP frame ever ends.
        "datagrams_received": counts["received"] - legit_sent,
        "datagrams_unaccounted": udp_report["sent"] - (counts["received"] - legit_sent) - counts["dropped_kernel"],
        "counts": counts, "dropped": syslog["dropped"],
        "connections_opened": tcp_report.get("opened", 0), "connections_client": tcp_report,
        # Handshakes the sender saw complete whose last step the kernel dropped on a full accept queue.
        "connections_never_accepted": tcp_report.get("opened", 0) - counts["connections_accepted"]
        - counts["connections_refused"],
        "connections_per_s_opened": tcp_report.get("opened", 0) / (tcp_report["finished"] - tcp_report["started"]),
        "flood_seconds": flood_ended - min(udp_report["started"], tcp_report["started"]),
        "legit_sent": legit_sent, "legit_sent_during_flood": udp_running and tcp_running,
        "legit_seconds_into_flood": [legit_started - udp_report["started"], legit_finished - udp_report["started"]],
        "failures_counted": final["jails"]["sshd"]["failures"], "bans": final["jails"]["sshd"]["bans"],
        "untrusted_not_counted": final["jails"]["sshd"]["untrusted"],
        "time_to_ban_s": {address: ban_at[address] - last_sent[address] for address in legit},
        "time_to_ban_max_s": max(ban_at[address] - last_sent[address] for address in legit),
        "baseline_rss_mib": baseline.get("VmHWM"), "baseline_rss_anon_mib": baseline.get("RssAnon"),
        "peak_rss_mib": memory.get("VmHWM"), "peak_rss_anon_mib": memory_probe.peak_anon_mib,
        "rss_anon_mib_at_end": memory.get("RssAnon"),
        "status_requests": len(latencies), "status_requests_during_flood": len(during_flood),
        "status_failed": len(status_failures), "status_failures": status_failures[:5],
        "status_max_ms": 1000 * max((took for _, took in latencies), default=0.0),
        "status_median_ms": 1000 * statistics.median(took for _, took in latencies) if latencies else None,
        "metrics": {name: value for name, value in metrics.items()
                    if name.startswith(("jailwarden_source_dropped", "jailwarden_syslog_", "jailwarden_failures_total",
                                        "jailwarden_bans_total"))},
        "log_lines": log_lines, "log_lines_untrusted_failure": untrusted_lines, "log_lines_receiver": receiver_lines,
    }
    return report
