"""Benchmarks fleet mode with a real redis-server and real agents (`jailwarden run` with the
log backend, syslog on a unix socket each, sharing one Redis on a unix socket):

- ban propagation: --bans manual bans on node-a, one every 50 ms; for each, the time from node-a
  logging it to node-b and node-c logging that they applied it (median, p99, max);
- fleet counting: --unique failures, each from a different address, sent as syslog datagrams to
  node-a with fleet_count on (maxretry 5, so nothing is banned): how many the node recorded in
  Redis per second, how many it had to drop (its count queue is bounded), Redis memory per
  tracked address (used_memory growth / keys, and MEMORY USAGE of one key), node-a's peak RSS.

Fail2Ban has no fleet mode, so there is no ratio to report here. Prints a table and writes it as
JSON to tests/bench/data/last_fleet.json. A benchmark, not a test: it exits 0 whatever the numbers.
Run: .venv/bin/python tests/bench/bench_fleet.py  (about a minute; root, for the agents' sockets)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.agent import AgentProcess, fleet_config  # noqa: E402 - the repository goes on the path first
from tests.integration.redis_server import RedisServer  # noqa: E402

REPORT = REPO / "tests" / "bench" / "data" / "last_fleet.json"


def line_times(agent: AgentProcess, pattern: re.Pattern) -> dict[str, float]:
    """address -> when the agent logged the first line matching `pattern` (group 1: the address)."""
    times: dict[str, float] = {}
    for line, when in zip(list(agent.lines), list(agent.read_at), strict=False):
        found = pattern.search(line)
        if found and found[1] not in times:
            times[found[1]] = when
    return times


def fleet_stats(agent: AgentProcess) -> dict:
    return json.loads(agent.cli("status", "--json").stdout)["fleet"]


def wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def peak_rss_mib(agent: AgentProcess) -> float:
    for line in Path(f"/proc/{agent.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def propagation(nodes: list[AgentProcess], bans: int) -> dict:
    a, others = nodes[0], nodes[1:]
    addresses = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.51.100.0")) + n)) for n in range(1, bans + 1)]
    for address in addresses:
        result = a.cli("ban", "sshd", address)
        assert result.returncode == 0, result.stderr
        time.sleep(0.05)
    applied = re.compile(r"jail sshd: ban (\S+) for .*reason: node node-a")
    wait(lambda: all(len(line_times(node, applied)) >= bans for node in others), "every ban on the other nodes")
    decided = line_times(a, re.compile(r"jail sshd: ban (\S+) for .*reason: manual ban"))
    latencies = sorted((line_times(node, applied)[address] - decided[address]) * 1000
                       for node in others for address in addresses)
    return {"bans": bans, "samples": len(latencies), "median_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1), "max_ms": round(latencies[-1], 1)}


def counting(agent: AgentProcess, redis: RedisServer, unique: int) -> dict:
    client = redis.client()
    before = client.info("memory")["used_memory"]
    start_stats = fleet_stats(agent)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    target = str(agent.workdir / "syslog.sock")
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    started = time.monotonic()
    for n in range(unique):
        address = ipaddress.IPv4Address(base + (n * 2654435761) % (1 << 24))
        message = (f"<38>1 2026-12-02T08:00:00Z bench sshd 41 - - Failed password for root from {address} "
                   f"port {1024 + n % 60000} ssh2").encode()
        while True:
            try:
                sender.sendto(message, target)
                break
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as error:  # ENOBUFS/EAGAIN: the agent's socket is full; give it a moment
                if error.errno not in (11, 105):
                    raise
                time.sleep(0.001)
    sent = time.monotonic() - started

    def settled() -> bool:
        stats = fleet_stats(agent)
        done = stats["counted"] + stats["count_dropped"]
        return done - start_stats["counted"] - start_stats["count_dropped"] >= unique

    wait(settled, "every failure counted or dropped", timeout=300)
    elapsed = time.monotonic() - started
    stats = fleet_stats(agent)
    counted = stats["counted"] - start_stats["counted"]
    keys = sum(1 for _ in client.scan_iter(match="jailwarden:failures:*", count=10_000))
    after = client.info("memory")["used_memory"]
    one_key = next(client.scan_iter(match="jailwarden:failures:*", count=1000), None)
    return {"unique": unique, "sent_s": round(sent, 2), "elapsed_s": round(elapsed, 2), "counted": counted,
            "dropped": stats["count_dropped"] - start_stats["count_dropped"],
            "counted_per_s": round(counted / elapsed), "keys": keys,
            "redis_bytes_per_address": round((after - before) / max(keys, 1)),
            "memory_usage_one_key": client.memory_usage(one_key) if one_key else None,
            "agent_peak_rss_mib": round(peak_rss_mib(agent), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bans", type=int, default=200)
    parser.add_argument("--unique", type=int, nargs="+", default=[20_000, 100_000])
    arguments = parser.parse_args()
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="jw-bench-fleet-") as directory:
        tmp = Path(directory)
        key_file = tmp / "fleet.key"
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
        with RedisServer(tmp / "redis") as redis:
            nodes = []
            try:
                for letter in "abc":
                    workdir = tmp / f"node-{letter}"
                    workdir.mkdir()
                    # Enforcing, with the log backend: a dry run publishes nothing to the fleet.
                    config = fleet_config(workdir, f'url = "{redis.url}"', f"node-{letter}", key_file, fleet_count=True)
                    node = AgentProcess(workdir, config, dry_run=False, log_level="info")
                    node.start()
                    nodes.append(node)
                wait(lambda: all(fleet_stats(node)["connected"] for node in nodes), "the fleet connected")
                report["propagation"] = propagation(nodes, arguments.bans)
                report["counting"] = [counting(nodes[0], redis, unique) for unique in arguments.unique]
            finally:
                for node in nodes:
                    node.stop()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
