"""The syslog receiver with real clients (util-linux logger, a real rsyslogd forwarding over UDP,
TCP octet-counted and TCP newline-framed) and with hostile ones: random bytes, truncated and
10 MB frames, a slow-loris, a sender outside the allow list, too many connections, a full queue.
After each hostile case the receiver still delivers a good message, and its stats count the case.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import stat
import subprocess
import threading
import time
import uuid

import pytest

from agent.addresses import parse_network
from agent.events import LogEvent
from agent.sources import SourceError
from agent.sources.syslog import SyslogSource
from parsers.filterfile import find_filter, load_filter

from .agent import AgentProcess
from .polling import DEADLINE, wait_until
from .rsyslog import Rsyslogd, RunningSource, free_port, run_logger, syslog_config

FAILED = "Failed password for root from 203.0.113.77 port 4242 ssh2"
HOSTNAME = socket.gethostname()


def failed(user: str) -> str:
    """An sshd failure line naming `user`: a unique user makes the line findable among the events."""
    return f"Failed password for invalid user {user} from 203.0.113.77 port 4242 ssh2"


def marker() -> str:
    return uuid.uuid4().hex[:12]


def tcp_connect(port: int, host: str = "127.0.0.1", source: str | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(DEADLINE)
    sock.connect((host, port))
    return sock


def send_datagram(port: int, data: bytes, host: str = "127.0.0.1", source: str | None = None) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if source is not None:
            sock.bind((source, 0))
        sock.sendto(data, (host, port))


def closed_by_peer(sock: socket.socket, timeout: float = DEADLINE) -> bool:
    """Wait until the other end closes `sock` (EOF or reset); False if it stays open `timeout` s."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    return True


def good_frame(text: str) -> bytes:
    """An RFC 5424 message, octet-counted, as rsyslog forwards it."""
    message = f"<38>1 2026-11-24T15:09:08+00:00 web1 sshd 4711 - - {text}".encode()
    return b"%d %s" % (len(message), message)


def still_delivers(running: RunningSource, port: int | None = None, host: str = "127.0.0.1") -> None:
    """A good message over UDP and one over TCP both arrive."""
    port = port or running.port
    udp = marker()
    send_datagram(port, f"<38>Nov 24 15:09:08 web1 sshd[4711]: {FAILED} {udp}".encode(), host)
    assert running.wait_for_message(udp).fields["SYSLOG_IDENTIFIER"] == "sshd"
    tcp = marker()
    with tcp_connect(port, host) as sock:
        sock.sendall(good_frame(f"{FAILED} {tcp}"))
        assert running.wait_for_message(tcp).fields["SYSLOG_PID"] == "4711"


def both(port: int, host: str = "127.0.0.1") -> tuple[str, str]:
    literal = f"[{host}]" if ":" in host else host
    return f"udp://{literal}:{port}", f"tcp://{literal}:{port}"


@pytest.fixture(scope="module")
def sshd_filter():
    return load_filter(find_filter("sshd"))


@pytest.fixture(scope="module")
def receiver():
    """One receiver on UDP and TCP for the well-behaved clients."""
    with RunningSource(syslog_config(*both(free_port()))) as running:
        yield running


def limited(**settings: object):
    """The config of a receiver with small limits, for one hostile case."""
    return syslog_config(*both(free_port()), **{"max_message": 2048, "max_connections": 3, "idle_timeout": 30.0}
                         | settings)


@pytest.fixture
def hostile():
    with RunningSource(limited()) as running:
        yield running


@pytest.fixture
def impatient():
    """A receiver that closes a connection after 1 s without a complete message."""
    with RunningSource(limited(idle_timeout=1.0)) as running:
        yield running


ROUTES = {
    "udp": 'protocol="udp" template="RSYSLOG_ForwardFormat"',
    "tcp-octet-counted": 'protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"',
    "tcp-newline": 'protocol="tcp" template="RSYSLOG_ForwardFormat"',
}


@pytest.fixture(scope="module")
def rsyslogd(receiver, tmp_path_factory):
    """A real rsyslogd forwarding lines containing "via-ROUTE" to the receiver by that route."""
    rules = "\n".join(f'if $msg contains "via-{route}" then action(type="omfwd" target="127.0.0.1" '
                      f'port="{receiver.port}" {options})' for route, options in ROUTES.items())
    daemon = Rsyslogd(tmp_path_factory.mktemp("rsyslogd"), rules)
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def assert_sshd_failure(event: LogEvent, text: str, pid: int | str, sshd_filter, trusted: bool | None = True) -> None:
    assert event.source == "syslog"
    assert event.message == text
    assert event.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert event.fields["SYSLOG_PID"] == str(pid)
    assert event.fields["_SOURCE_ADDRESS"] == "127.0.0.1"
    if trusted is not None:
        assert event.trusted is trusted
    assert abs(event.time - time.time()) < DEADLINE
    failure = sshd_filter.match(event)
    assert failure is not None and str(failure.address) == "203.0.113.77"


@pytest.mark.parametrize("route", ROUTES)
def test_rsyslog_forwarded_line_arrives_with_program_pid_host_and_message(route, receiver, rsyslogd, sshd_filter):
    text = failed(f"via-{route}-{marker()}")
    pid = rsyslogd.log(text)
    event = receiver.wait_for_message(text)
    # rsyslogd (root) keeps its TCP connection open, so the kernel vouches for it; local UDP
    # is never trusted.
    assert_sshd_failure(event, text, pid, sshd_filter, trusted=route != "udp" and os.geteuid() == 0)
    assert event.fields["_HOSTNAME"] == HOSTNAME
    assert event.fields["SYSLOG_FACILITY"] == "1" and event.fields["PRIORITY"] == "5"  # logger's user.notice


@pytest.mark.parametrize("options", [
    ("--udp", "--rfc3164"), ("--udp", "--rfc5424"), ("--tcp", "--rfc3164"), ("--tcp", "--rfc5424"),
    ("--tcp", "--octet-count", "--rfc5424"), ("--tcp", "--octet-count", "--rfc3164"),
], ids=" ".join)
def test_logger_message_arrives_with_program_pid_host_and_message(options, receiver, sshd_filter):
    text = failed(marker())
    pid = run_logger("--server", "127.0.0.1", "--port", str(receiver.port), *options, "-t", "sshd", "-i", text)
    event = receiver.wait_for_message(text)
    # logger exits right after sending: whether its TCP socket is still open when the
    # connection is accepted (trusted if it is root's) or already closed (untrusted) is a race.
    assert_sshd_failure(event, text, pid, sshd_filter, trusted=None)
    assert event.fields["_HOSTNAME"] in (HOSTNAME, socket.getfqdn())


def test_random_bytes_over_udp_and_tcp_leave_the_receiver_working(hostile):
    rng = random.Random(20261124)
    for _ in range(200):
        send_datagram(hostile.port, rng.randbytes(rng.randint(1, 1500)))
    for bad in (b"<999>x", b"<abc>x", b"<13", b"   ", b"<1>1 2026-11-24T15:09:08Z h a p m [unclosed"):
        send_datagram(hostile.port, bad)
    with tcp_connect(hostile.port) as sock:
        sock.sendall(rng.randbytes(100_000))
    stats = hostile.wait_for_stat("received", 205)
    assert stats["malformed"] >= 5
    still_delivers(hostile)
    assert hostile.stats()["errors"] == 0


def test_truncated_and_badly_counted_tcp_frames_are_counted(hostile):
    with tcp_connect(hostile.port) as sock:
        sock.sendall(b"200 <13>1 2026-11-24T15:09:08Z web1 sshd 1 - - cut short")  # stream ends inside the frame
    hostile.wait_for_stat("framing_errors", 1)
    text = f"{FAILED} {marker()}"
    with tcp_connect(hostile.port) as sock:  # a length that is not one: the line is kept, read as newline-framed
        sock.sendall(f"12x {text}\n".encode())
        assert hostile.wait_for_message(text).message == f"12x {text}"
    assert hostile.stats()["framing_errors"] == 2
    still_delivers(hostile)


def test_datagram_over_max_message_is_truncated_and_delivered(hostile):
    text = f"{FAILED} {marker()}"
    send_datagram(hostile.port, f"<38>Nov 24 15:09:08 web1 sshd[9]: {text} ".encode() + b"x" * 5000)
    event = hostile.wait_for_message(text)
    assert len(event.message.encode()) < 2048
    assert hostile.stats()["truncated"] == 1
    still_delivers(hostile)


@pytest.mark.parametrize("framing", ["octet-counted", "newline"])
def test_10mb_frame_is_dropped_and_the_next_frame_on_the_connection_delivered(framing, hostile):
    text = f"{FAILED} {marker()}"
    huge = b"<13>" + b"A" * (10 * 1024 * 1024 - 4)
    if framing == "octet-counted":
        data = b"%d %s" % (len(huge), huge) + good_frame(text)
    else:
        data = huge + b"\n" + f"<38>sshd[4711]: {text}\n".encode()
    with tcp_connect(hostile.port) as sock:
        sock.sendall(data)
        assert hostile.wait_for_message(text).fields["SYSLOG_PID"] == "4711"
    assert hostile.stats()["oversize"] == 1
    still_delivers(hostile)


def test_idle_connection_is_closed_after_idle_timeout(impatient):
    with tcp_connect(impatient.port) as sock:
        started = time.monotonic()
        assert closed_by_peer(sock), "the idle connection stayed open"
        assert 0.9 <= time.monotonic() - started < DEADLINE
    assert impatient.stats()["connections_timed_out"] == 1
    still_delivers(impatient)


def test_slow_loris_is_closed_although_it_keeps_sending(impatient):
    """A byte every 0.2 s never completes a frame; the connection is closed after idle_timeout (1 s)."""
    payload = b"<13>sshd[1]: never ends " * 10
    with tcp_connect(impatient.port) as sock:
        started = time.monotonic()
        for byte in payload:  # 58 s of bytes at this pace: far beyond the deadline
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if closed_by_peer(sock, timeout=0.2):
                break
        else:
            pytest.fail("the slow-loris connection was never closed")
        assert 0.9 <= time.monotonic() - started < DEADLINE
    assert impatient.stats()["connections_timed_out"] == 1
    assert not any(b"never ends" in event.message.encode() for event in impatient.events)
    still_delivers(impatient)


def test_sender_outside_the_allow_list_is_dropped_unparsed(caplog):
    caplog.set_level(logging.WARNING, "jailwarden.syslog")
    config = syslog_config(*both(free_port()), allow=(parse_network("127.0.0.1/32"),))
    with RunningSource(config) as running:
        send_datagram(running.port, f"<38>sshd[1]: {FAILED}".encode(), source="127.0.0.2")
        running.wait_for_stat("dropped_not_allowed", 1)
        with tcp_connect(running.port, source="127.0.0.2") as sock:
            assert closed_by_peer(sock), "the connection from outside the allow list stayed open"
        stats = running.wait_for_stat("dropped_not_allowed", 2)
        assert stats["received"] == 0 and stats["malformed"] == 0 and stats["connections_accepted"] == 0
        still_delivers(running)
        assert not any(event.fields["_SOURCE_ADDRESS"] == "127.0.0.2" for event in running.events)
    assert any("127.0.0.2" in record.getMessage() and "allow list" in record.getMessage()
               for record in caplog.records)


def test_connections_beyond_max_connections_are_closed_at_once(hostile):
    open_connections = [tcp_connect(hostile.port) for _ in range(3)]
    try:
        hostile.wait_for_stat("connections_accepted", 3)
        with tcp_connect(hostile.port) as extra:
            assert closed_by_peer(extra), "the connection over max_connections stayed open"
        stats = hostile.stats()
        assert stats["connections_refused"] == 1 and stats["connections_timed_out"] == 0
        text = f"{FAILED} {marker()}"
        open_connections[0].sendall(good_frame(text))
        hostile.wait_for_message(text)
        open_connections.pop().close()
        wait_until(lambda: hostile.stats()["connections_open"] == 2, "a connection to be closed")
        still_delivers(hostile)
    finally:
        for sock in open_connections:
            sock.close()


def test_malformed_input_is_logged_once_per_sender_then_summed_up(caplog):
    caplog.set_level(logging.WARNING, "jailwarden.syslog")
    with RunningSource(syslog_config(*both(free_port()))) as running:
        for _ in range(50):
            send_datagram(running.port, b"<999>not a priority")
        running.wait_for_stat("malformed", 50)
        still_delivers(running)
        lines = [record.getMessage() for record in caplog.records if "127.0.0.1" in record.getMessage()]
        assert len(lines) == 1
        assert "malformed" in lines[0] and "PRI value 999" in lines[0]
    summary = [record.getMessage() for record in caplog.records if "49 more problems" in record.getMessage()]
    assert summary and "127.0.0.1" in summary[0]


def test_full_queue_drops_new_messages_counts_them_and_recovers():
    """A pipeline that stalls (the first event blocks the loop) while a burst arrives."""
    entered, release = threading.Event(), threading.Event()

    def stalling_sink(event: LogEvent) -> None:
        if "stall" in event.message:
            entered.set()
            release.wait(DEADLINE)

    config = syslog_config(*both(free_port()), queue_size=10)
    with RunningSource(config, stalling_sink) as running:
        send_datagram(running.port, b"<38>sshd[1]: stall")
        assert entered.wait(DEADLINE)
        for number in range(100):  # loopback sendto queues each datagram on the receiver at once
            send_datagram(running.port, f"<38>sshd[1]: burst {number}".encode())
        release.set()
        stats = wait_until(lambda: (s := running.stats())["delivered"] + s["dropped_queue_full"] == 101 and s,
                           "the burst to be delivered or dropped")
        assert stats["received"] == 101
        assert stats["dropped_queue_full"] >= 80
        still_delivers(running)


def test_tcp_sender_is_slowed_not_dropped_when_the_queue_fills(sshd_filter):
    frames = b"".join(good_frame(f"Failed password for root from 198.51.{n // 256 % 256}.{n % 256} port 22 ssh2")
                      for n in range(60_000))
    config = syslog_config(*both(free_port()), queue_size=20_000)
    with RunningSource(config, sshd_filter.match) as running:
        with tcp_connect(running.port) as sock:
            sock.sendall(frames)
        stats = running.wait_for_stat("delivered", 60_000)
    assert stats["dropped_queue_full"] == 0
    assert stats["tcp_paused"] >= 1


def test_ipv6_listen_receives_from_logger_and_tcp():
    try:
        port = free_port("::1")
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    with RunningSource(syslog_config(*both(port, "::1"))) as running:
        text = f"{FAILED} {marker()}"
        pid = run_logger("--server", "::1", "--port", str(port), "--udp", "-t", "sshd", "-i", text)
        event = running.wait_for_message(text)
        assert event.fields["SYSLOG_PID"] == str(pid) and event.fields["_SOURCE_ADDRESS"] == "::1"
        still_delivers(running, host="::1")


def test_unix_socket_is_private_receives_from_logger_and_is_removed_at_stop(tmp_path):
    path = tmp_path / "syslog.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))  # left behind by an agent that is gone
    stale.close()
    with RunningSource(syslog_config(f"unix://{path}")) as running:
        mode = path.stat()
        assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
        assert mode.st_uid == os.geteuid()
        text = f"{FAILED} {marker()}"
        pid = run_logger("-u", str(path), "-t", "sshd", "-i", text)
        event = running.wait_for_message(text)
        assert event.fields["SYSLOG_IDENTIFIER"] == "sshd" and event.fields["SYSLOG_PID"] == str(pid)
        assert "_SOURCE_ADDRESS" not in event.fields and event.trusted
        with pytest.raises(SourceError, match="another process is receiving"):
            asyncio.run(SyslogSource(syslog_config(f"unix://{path}"), print).start())
    assert not path.exists()


def test_an_address_that_cannot_be_bound_is_named_with_the_os_error_and_the_others_still_listen(caplog):
    port = free_port()
    udp, tcp = both(port)

    async def start_and_stop(source: SyslogSource) -> None:
        await source.start()
        await source.stop()

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with caplog.at_level("INFO", logger="jailwarden.syslog"):
            asyncio.run(start_and_stop(SyslogSource(syslog_config(udp, tcp), print)))
    assert f"{tcp}: Address already in use; listening on the other addresses" in caplog.text
    assert f"listening on {udp}" in caplog.text
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))  # the UDP socket was closed at stop
    with pytest.raises(SourceError, match=r"udp://192\.0\.2\.1:\d+: Cannot assign requested address"):
        asyncio.run(SyslogSource(syslog_config(f"udp://192.0.2.1:{port}"), print).start())  # none: an error


def test_an_unprivileged_local_user_is_not_a_trusted_sender(receiver, unprivileged_user):
    for transport in ("--tcp", "--udp"):
        text = failed(marker())
        subprocess.run(["runuser", "-u", unprivileged_user.name, "--", "logger", "--server", "127.0.0.1",
                        "--port", str(receiver.port), transport, "-t", "sshd", text], check=True, timeout=DEADLINE)
        event = receiver.wait_for_message(text)
        assert event.fields["SYSLOG_IDENTIFIER"] == "sshd" and not event.trusted


def test_agent_bans_from_forwarded_syslog_but_not_from_users_or_outsiders(tmp_path, unprivileged_user):
    port = free_port()
    config = f"""
[agent]
state_dir = "{tmp_path}/state"
socket = "{tmp_path}/control.sock"
[sources.journal]
enabled = false
[sources.syslog]
listen = ["udp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}"]
allow = ["127.0.0.1/32"]
[jails.sshd]
filter = "sshd"
maxretry = 2
"""
    with AgentProcess(tmp_path, config) as agent:
        outsider = b"<38>Nov 24 14:00:00 web1 sshd[1]: Failed password for root from 198.51.100.99 port 1 ssh2"
        for _ in range(3):
            send_datagram(port, outsider, source="127.0.0.2")
        forged = "Failed password for root from 198.51.100.98 port 4242 ssh2"
        for transport in ("--tcp", "--udp", "--tcp"):
            subprocess.run(["runuser", "-u", unprivileged_user.name, "--", "logger", "--server", "127.0.0.1",
                            "--port", str(port), transport, "-t", "sshd", forged], check=True, timeout=DEADLINE)
        agent.wait_for(r"not counting a failure from 198\.51\.100\.98: its sender is not trusted", count=3)
        # Root's forwarder: one TCP connection kept open, octet-counted, as rsyslogd forwards.
        with tcp_connect(port) as forwarder:
            for _ in range(2):
                message = b"<38>1 2026-11-25T12:00:00Z web1 sshd 4711 - - " \
                          b"Failed password for root from 203.0.113.78 port 4242 ssh2"
                forwarder.sendall(b"%d %s" % (len(message), message))
            agent.wait_for(r"jail sshd: ban 203\.0\.113\.78 for 1h")
        assert agent.matching(r"198\.51\.100\.99") == []
        assert agent.matching(r"ban 198\.51\.100\.98") == []
