"""Benchmarks the syslog receiver: how many messages a second it takes from a local sender, and
what it costs in memory.

The receiver runs here, on one asyncio loop, with the default SyslogConfig apart from the
ports; its sink runs every event through the shipped sshd filter and counts the failures, so
the figures include matching. A separate sender process (this script with ``--send``) writes
pre-built RFC 5424 messages like rsyslog's (tag "sshd", about half of them failures, some with
structured data):

- TCP, octet-counted: --tcp-messages messages as fast as the sender can write them; the
  figure is messages/s from the first event to the last, and loss must be zero (the receiver
  pauses reading while its queue drains, so TCP is slowed, never dropped);
- UDP: fixed send rates, stepped up (--udp-rates), each for --udp-seconds; for each rate the
  messages lost (sent minus delivered, and the kernel's UDP RcvbufErrors for the same time),
  then the highest rate with no loss and the lowest with loss;
- peak memory: ru_maxrss of this (the receiving) process, before and after.

Prints a table and writes it as JSON to tests/bench/data/last_syslog.json. A benchmark, not a
test: it exits 0 whatever the numbers, 1 when the sender or the receiver fails.
Run: .venv/bin/python tests/bench/bench_syslog.py  (about 40 s)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.config import SyslogConfig  # noqa: E402 - the repository goes on the path first
from agent.config_values import listen  # noqa: E402
from agent.sources.syslog import SyslogSource  # noqa: E402
from parsers.filterfile import find_filter, load_filter  # noqa: E402

REPORT = REPO / "tests" / "bench" / "data" / "last_syslog.json"
TARGET_TCP_PER_S = 50_000
DISTINCT = 20_000  # distinct messages built; sent in rotation
QUIET = 0.5  # seconds without a new event that end a UDP step

_LINES = (
    # (message, is a counted sshd failure, structured data)
    ("Failed password for invalid user {user} from {address} port {port} ssh2", True, False),
    ("Failed password for root from {address} port {port} ssh2", True, True),
    ("Invalid user {user} from {address} port {port}", True, False),
    ("Connection closed by authenticating user root {address} port {port} [preauth]", False, False),
    ("Accepted publickey for deploy from {address} port {port} ssh2: ED25519 SHA256:abcdefghijklmnop", False, True),
    ("pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)", False, False),
    ("Received disconnect from {address} port {port}:11: Bye Bye [preauth]", False, False),
    ("Disconnected from invalid user {user} {address} port {port} [preauth]", False, False),
)


def build_messages(count: int = DISTINCT) -> tuple[list[bytes], int]:
    """`count` RFC 5424 messages as rsyslog forwards them, and how many are counted failures."""
    messages, failures = [], 0
    for n in range(count):
        template, counted, structured = _LINES[n % len(_LINES)]
        text = template.format(user=f"user{n % 997}", address=f"198.51.{n // 256 % 256}.{n % 256}",
                               port=1024 + n % 60000)
        sd = '[timeQuality tzKnown="1" isSynced="1" syncAccuracy="500000"]' if structured else "-"
        messages.append(f"<38>1 2026-11-24T15:09:{n % 60:02d}.{n % 1000000:06d}+00:00 web1 sshd {2000 + n % 30000} "
                        f"- {sd} {text}".encode())
        failures += counted
    return messages, failures


# ---- the sender (a separate process) ---------------------------------------------------------

def send(transport: str, port: int, count: int, rate: float) -> dict:
    messages, _ = build_messages()
    started = time.perf_counter()
    if transport == "tcp":
        frames = [b"%d %s" % (len(m), m) for m in messages]
        block = 1000
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sent = 0
            while sent < count:
                n = min(block, count - sent)
                start = sent % len(frames)
                chunk = frames[start:start + n]
                sock.sendall(b"".join(chunk))
                sent += len(chunk)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", port))
            sent = 0
            total = len(messages)
            while sent < count:
                due = count if rate <= 0 else min(count, int((time.perf_counter() - started) * rate) + 1)
                if sent >= due:
                    time.sleep(0.0002)
                    continue
                while sent < due:
                    try:
                        sock.send(messages[sent % total])
                    except ConnectionRefusedError:  # an ICMP error of an earlier datagram; keep going
                        continue
                    sent += 1
    return {"sent": sent, "seconds": time.perf_counter() - started}


# ---- the receiver (this process) ---------------------------------------------------------------

@dataclasses.dataclass
class Counter:
    """The sink: the sshd filter on every event, counting events and failures."""

    match: object
    events: int = 0
    failures: int = 0
    first: float = 0.0
    last: float = 0.0

    def __call__(self, event) -> None:
        if self.failures_of(event):
            self.failures += 1
        self.events += 1
        now = time.perf_counter()
        if self.events == 1:
            self.first = now
        self.last = now

    def failures_of(self, event) -> bool:
        failure = self.match(event)
        return failure is not None and failure.counts


def udp_rcvbuf_errors() -> int:
    with open("/proc/net/snmp") as snmp:
        rows = [line.split() for line in snmp if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return port


async def run_sender(transport: str, port: int, count: int, rate: float) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--send", transport, str(port), str(count), str(rate),
        stdout=asyncio.subprocess.PIPE)
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {transport} sender failed with exit status {process.returncode}")
    return json.loads(output)


async def settle(counter: Counter, expected: int, source: SyslogSource) -> None:
    """Wait until `expected` events arrived, or none arrived for QUIET seconds with the queue empty."""
    seen, quiet_since = -1, time.perf_counter()
    while counter.events < expected:
        await asyncio.sleep(0.01)
        if counter.events != seen or source.stats()["queued"]:
            seen, quiet_since = counter.events, time.perf_counter()
        elif time.perf_counter() - quiet_since > QUIET:
            return


async def bench_tcp(counter: Counter, source: SyslogSource, port: int, count: int, failures_per_block: int) -> dict:
    before = dict(counter.__dict__)
    result = await run_sender("tcp", port, count, 0)
    await settle(counter, before["events"] + count, source)
    delivered = counter.events - before["events"]
    seconds = counter.last - (counter.first if before["events"] == 0 else before["last"])
    full, rest = divmod(count, DISTINCT)
    expected_failures = full * failures_per_block + sum(_LINES[n % len(_LINES)][1] for n in range(rest))
    return {"sent": result["sent"], "delivered": delivered, "lost": result["sent"] - delivered,
            "seconds": round(seconds, 3), "per_s": round(delivered / seconds) if seconds else None,
            "sender_seconds": round(result["seconds"], 3),
            "failures": counter.failures - before["failures"], "expected_failures": expected_failures}


async def bench_udp_step(counter: Counter, source: SyslogSource, port: int, rate: float, seconds: float) -> dict:
    count = int(rate * seconds)
    events, kernel_drops = counter.events, udp_rcvbuf_errors()
    result = await run_sender("udp", port, count, rate)
    await settle(counter, events + result["sent"], source)
    delivered = counter.events - events
    return {"rate": rate, "sent": result["sent"], "achieved_rate": round(result["sent"] / result["seconds"]),
            "delivered": delivered, "lost": result["sent"] - delivered,
            "kernel_rcvbuf_errors": udp_rcvbuf_errors() - kernel_drops}


async def bench(args: argparse.Namespace) -> dict:
    flt = load_filter(find_filter("sshd"))
    _, failures_per_block = build_messages()
    counter = Counter(flt.match)
    port = free_port()
    config = dataclasses.replace(SyslogConfig(enabled=True),
                                 listen=(listen(f"udp://127.0.0.1:{port}"), listen(f"tcp://127.0.0.1:{port}")))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    source = SyslogSource(config, counter)
    await source.start()
    try:
        tcp = await bench_tcp(counter, source, port, args.tcp_messages, failures_per_block)
        steps = []
        for rate in args.udp_rates:
            step = await bench_udp_step(counter, source, port, rate, args.udp_seconds)
            steps.append(step)
            if sum(s["lost"] > 0 for s in steps) >= 2:  # loss confirmed at two rates: enough
                break
        stats = source.stats()
    finally:
        await source.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lossless = [s["rate"] for s in steps if s["lost"] == 0]
    lossy = [s["rate"] for s in steps if s["lost"] > 0]
    return {
        "tcp": tcp,
        "udp_steps": steps,
        "udp_highest_rate_without_loss": max(lossless) if lossless else None,
        "udp_lowest_rate_with_loss": min(lossy) if lossy else None,
        "peak_rss_kib_before": rss_before,
        "peak_rss_kib": rss_after,
        "source_stats": stats,
        "target_tcp_per_s": TARGET_TCP_PER_S,
        "tcp_target_met": tcp["lost"] == 0 and (tcp["per_s"] or 0) >= TARGET_TCP_PER_S,
        "python": sys.version.split()[0],
        "cpus": len(os.sched_getaffinity(0)),
    }


def print_report(report: dict) -> None:
    tcp = report["tcp"]
    print(f"{'case':<28}{'sent':>10}{'delivered':>11}{'lost':>8}{'msg/s':>10}")
    print(f"{'TCP octet-counted, flat out':<28}{tcp['sent']:>10}{tcp['delivered']:>11}{tcp['lost']:>8}"
          f"{tcp['per_s'] or 0:>10}")
    for step in report["udp_steps"]:
        label = f"UDP at {step['rate']:,.0f}/s"
        print(f"{label:<28}{step['sent']:>10}{step['delivered']:>11}{step['lost']:>8}{step['achieved_rate']:>10}"
              f"   (kernel RcvbufErrors {step['kernel_rcvbuf_errors']})")
    print(f"sshd failures matched over TCP: {tcp['failures']} of {tcp['expected_failures']} expected")
    print(f"UDP: highest rate without loss {report['udp_highest_rate_without_loss']}, "
          f"lowest with loss {report['udp_lowest_rate_with_loss']}")
    print(f"peak RSS of the receiver: {report['peak_rss_kib'] / 1024:.1f} MiB "
          f"(before starting: {report['peak_rss_kib_before'] / 1024:.1f} MiB)")
    verdict = "met" if report["tcp_target_met"] else "NOT met"
    print(f"target >= {TARGET_TCP_PER_S:,} msg/s over TCP with no loss: {verdict}")
    print(f"report: {REPORT}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--send", nargs=4, metavar=("TRANSPORT", "PORT", "COUNT", "RATE"), help=argparse.SUPPRESS)
    parser.add_argument("--tcp-messages", type=int, default=500_000)
    parser.add_argument("--udp-rates", type=lambda text: [int(r) for r in text.split(",")],
                        default=[10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000])
    parser.add_argument("--udp-seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.send:
        transport, port, count, rate = args.send
        print(json.dumps(send(transport, int(port), int(count), float(rate))))
        return 0
    try:
        report = asyncio.run(bench(args))
    except (RuntimeError, OSError) as error:
        print(f"bench_syslog: {error}", file=sys.stderr)
        return 1
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
