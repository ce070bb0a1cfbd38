"""The syslog receiver under a flood (issue 10): what the kernel drops is counted, a UDP flood
cannot crowd the trusted senders out of the queue, and the real agent, flooded with random
datagrams and abandoned TCP connections at once, stays up and answers, keeps within its memory
bound, still bans from the legitimate failures, and shows every kind of drop in `status --json`
and /metrics. Small sizes here; tests/bench/bench_syslog_flood.py runs the issue's
(1,000,000 datagrams, 100,000 connections) with the same code."""

from __future__ import annotations

import socket
import threading

from agent.events import LogEvent

from .conftest import require_root, require_tools
from .polling import DEADLINE, wait_until
from .rsyslog import RunningSource, free_port, syslog_config
from .syslog_flood import MAXRETRY, Limits, run_syslog_flood
from .test_syslog_source import good_frame, marker, tcp_connect

STATUS_DEADLINE_MS = 2000.0  # the longest a `status` may take during the flood
BAN_DEADLINE_S = 2.0  # from the logger of an address's maxretry-th failure to its ban
RECEIVER_LOG_LINES = 60  # what the receiver may log about the whole flood (its problem log's limit)


class StalledSink:
    """A sink that holds the receiver's loop on the message containing "stall" until released, so
    that a burst piles up where the test wants it: in the kernel, or in the queue."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, event: LogEvent) -> None:
        if "stall" in event.message:
            self.entered.set()
            self.release.wait(DEADLINE)

    def stall(self, sock: socket.socket, port: int) -> None:
        sock.sendto(b"<38>sshd[1]: stall", ("127.0.0.1", port))
        assert self.entered.wait(DEADLINE), "the receiver never delivered the stalling message"


def test_datagrams_the_kernel_drops_on_a_full_receive_buffer_are_counted():
    """20 MB of datagrams while the loop is held: beyond the socket's 4 MiB buffer the kernel
    drops them, and every datagram sent is either received or counted as dropped_kernel."""
    sink, burst = StalledSink(), 20_000
    with RunningSource(syslog_config(f"udp://127.0.0.1:{free_port()}"), sink) as running, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sink.stall(sender, running.port)
        for number in range(burst):
            sender.sendto(f"<38>junk[1]: {number} ".encode().ljust(1000, b"x"), ("127.0.0.1", running.port))
        sink.release.set()
        stats = wait_until(lambda: (s := running.stats())["received"] + s["dropped_kernel"] == burst + 1 and s,
                           "every datagram to be received or counted as dropped by the kernel")
        assert stats["dropped_kernel"] >= burst // 2 and stats["received"] > 1
        assert stats["delivered"] == stats["received"] - stats["dropped_queue_full"]


def test_a_udp_flood_filling_the_queue_leaves_room_for_the_unix_socket_and_tcp(tmp_path):
    """Before the queue had two lanes, datagrams filling it made the receiver drop what the unix
    socket (trusted, root only) and TCP brought next, although both can wait for room."""
    sink, port = StalledSink(), free_port()
    config = syslog_config(f"udp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}", f"unix://{tmp_path}/syslog.sock",
                           queue_size=100)
    with RunningSource(config, sink) as running, tcp_connect(port) as forwarder, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        running.wait_for_stat("connections_accepted", 1)
        sink.stall(sender, port)
        for number in range(1000):
            sender.sendto(f"<38>junk[1]: {number}".encode(), ("127.0.0.1", port))
        over_unix, over_tcp = marker(), marker()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as local:
            local.sendto(f"<38>sshd[2]: {over_unix}".encode(), str(tmp_path / "syslog.sock"))
        forwarder.sendall(good_frame(over_tcp))
        sink.release.set()
        assert running.wait_for_message(over_unix).trusted
        running.wait_for_message(over_tcp)
        stats = wait_until(lambda: (s := running.stats())["received"] + s["dropped_kernel"] == 1003 and s,
                           "every datagram to be received or counted as dropped by the kernel")
    assert stats["dropped_queue_full"] > 0 and stats["errors"] == 0


def test_a_flood_of_datagrams_and_abandoned_connections_neither_stops_the_agent_nor_hides_failures(tmp_path):
    require_root()  # raises the sender's file limit, abandons connections by TCP_REPAIR
    require_tools("logger")
    limits = Limits()
    report = run_syslog_flood(tmp_path, datagrams=500_000, connections=10_000, hold=1_000, limits=limits)
    counts = report["counts"]
    print({key: value for key, value in report.items() if key not in ("counts", "connections_client", "metrics")})

    # It stays up, answers, and holds no more than its limits allow.
    assert report["alive"]
    assert report["status_failures"] == [] and report["status_requests_during_flood"] > 0
    assert report["status_max_ms"] < STATUS_DEADLINE_MS
    bound = limits.bound_mib()
    assert report["peak_rss_anon_mib"] - report["baseline_rss_anon_mib"] < bound
    assert report["peak_rss_mib"] - report["baseline_rss_mib"] < bound
    assert counts["errors"] == 0
    assert report["log_lines_receiver"] <= RECEIVER_LOG_LINES
    # Forged failures are counted in status, and logged only a few times a minute, not each.
    assert report["untrusted_not_counted"] > 10 >= report["log_lines_untrusted_failure"]

    # The legitimate failures sent during the flood all count, and each address is banned at maxretry;
    # the sshd failures forged over UDP (an untrusted local sender) count for nothing.
    assert report["legit_sent_during_flood"]
    assert report["failures_counted"] == report["legit_sent"] == 5 * MAXRETRY
    assert report["bans"] == 5
    assert report["time_to_ban_max_s"] < BAN_DEADLINE_S

    # Every datagram is received or counted as dropped by the kernel; every connection it
    # accepted was abandoned, and each was ended by its idle timeout; the rest were refused.
    assert report["datagrams_sent"] == 500_000 and report["datagrams_unaccounted"] == 0
    assert counts["dropped_kernel"] > 0 and counts["dropped_queue_full"] > 0
    assert counts["truncated"] > 0 and counts["malformed"] > 0
    assert counts["connections_refused"] > 0 and counts["connections_timed_out"] > 0
    assert counts["connections_open"] == 0

    # The drops are in the metrics as in the status.
    metrics = report["metrics"]
    for reason in ("kernel", "queue_full"):
        assert metrics[f'jailwarden_source_dropped_by_reason_total{{source="syslog",reason="{reason}"}}'] \
            == counts[f"dropped_{reason}"]
    assert metrics['jailwarden_source_dropped_total{source="syslog"}'] == report["dropped"] \
        == counts["dropped_kernel"] + counts["dropped_queue_full"] + counts["dropped_not_allowed"]
    for outcome in ("accepted", "refused", "timed_out"):
        sample = f'jailwarden_syslog_connections_total{{outcome="{outcome}"}}'
        assert metrics[sample] == counts[f"connections_{outcome}"]
