"""Benchmarks the syslog receiver under a flood (issue 10): 1,000,000 datagrams of random content
from a local sender and 100,000 TCP connections opened and abandoned, at once, at the real agent
(`jailwarden run`, backend "log", UDP and TCP on a free 127.0.0.1 port, the unix socket, small
syslog limits), while real `logger`s send sshd failures for 5 addresses (maxretry 3) over the
unix socket and `status` is asked every 50 ms from another process. The flood and its figures
are tests/integration/syslog_flood.py's; tests/integration/test_syslog_flood.py runs it small.

Reported: datagrams sent, received and dropped by kind (in the kernel's receive buffer, queue
full, truncated, malformed), and any neither received nor counted; connections opened (the
sender's view), accepted, refused (max_connections open), timed out (idle_timeout) and never
accepted (the kernel dropped the handshake's last step on a full accept queue); the
legitimate failures counted, the bans and the time to each; peak memory (VmHWM and RssAnon,
against the bound the limits allow); `status` latency; what the agent logged.

There is no Fail2Ban column: Fail2Ban has no syslog receiver (it reads files or the journal).

Prints a table and writes tests/bench/data/last_syslog_flood.json. Run as root (the TCP sender
raises its file limit and abandons connections with TCP_REPAIR):
    .venv/bin/python tests/bench/bench_syslog_flood.py [--datagrams 1000000 --connections 100000]
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

from tests.integration.syslog_flood import MAXRETRY, Limits, run_syslog_flood  # noqa: E402 - the path first

REPORT = REPO / "tests" / "bench" / "data" / "last_syslog_flood.json"


def print_report(report: dict) -> None:
    counts, client = report["counts"], report["connections_client"]
    rows = [
        ("datagrams sent", f"{report['datagrams_sent']:,} ({report['datagrams_per_s_sent']:,.0f}/s)"),
        ("  received", f"{report['datagrams_received']:,}"),
        ("  dropped by the kernel (buffer full)", f"{counts['dropped_kernel']:,}"),
        ("  dropped, queue full", f"{counts['dropped_queue_full']:,}"),
        ("  truncated (over max_message)", f"{counts['truncated']:,}"),
        ("  malformed", f"{counts['malformed']:,}"),
        ("  neither received nor counted", f"{report['datagrams_unaccounted']:,}"),
        ("connections opened (sender)", f"{report['connections_opened']:,} "
                                        f"({report['connections_per_s_opened']:,.0f}/s); "
                                        f"{client.get('connect_timed_out', 0):,} gave up connecting"),
        ("  accepted", f"{counts['connections_accepted']:,}"),
        ("  refused (max_connections open)", f"{counts['connections_refused']:,}"),
        ("  timed out (idle_timeout)", f"{counts['connections_timed_out']:,}"),
        ("  open at the end", f"{counts['connections_open']:,}"),
        ("  never accepted (accept queue full)", f"{report['connections_never_accepted']:,}"),
        ("legitimate failures counted", f"{report['failures_counted']} of {report['legit_sent']} "
                                        f"(sent {report['legit_seconds_into_flood'][0]:.2f}-"
                                        f"{report['legit_seconds_into_flood'][1]:.2f} s into the flood)"),
        ("bans / time to ban (max)", f"{report['bans']} / {1000 * report['time_to_ban_max_s']:.0f} ms"),
        ("peak RSS (VmHWM)", f"{report['peak_rss_mib']:.1f} MiB (at start {report['baseline_rss_mib']:.1f})"),
        ("peak RssAnon", f"{report['peak_rss_anon_mib']:.1f} MiB (at start {report['baseline_rss_anon_mib']:.1f}; "
                         f"bound start + {report['memory_bound_over_baseline_mib']:.1f})"),
        ("status: max / median", f"{report['status_max_ms']:.0f} ms / {report['status_median_ms']:.1f} ms "
                                 f"({report['status_requests_during_flood']} asked during the flood, "
                                 f"{report['status_failed']} failed)"),
        ("flood lasted", f"{report['flood_seconds']:.1f} s"),
        ("agent log lines", f"{report['log_lines']:,} (receiver {report['log_lines_receiver']}, forged sshd "
                            f"failures refused as untrusted {report['log_lines_untrusted_failure']:,})"),
        ("agent alive at the end", str(report["alive"])),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--hold", type=int, default=1_000, help="connections the sender keeps open at once")
    defaults = Limits()
    parser.add_argument("--queue-size", type=int, default=defaults.queue_size)
    parser.add_argument("--max-message", type=int, default=defaults.max_message)
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_syslog_flood: needs root (the TCP sender raises its file limit and uses TCP_REPAIR)",
              file=sys.stderr)
        return 1
    limits = Limits(queue_size=args.queue_size, max_message=args.max_message,
                    max_connections=args.max_connections, idle_timeout=args.idle_timeout)
    with tempfile.TemporaryDirectory(prefix="jw-syslog-flood-") as workdir:
        report = run_syslog_flood(Path(workdir), args.datagrams, args.connections, hold=args.hold, limits=limits,
                                  timeout=3600.0)
    print_report(report)
    report["maxretry"] = MAXRETRY
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(f"written to {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
