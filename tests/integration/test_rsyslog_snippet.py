"""The shipped /etc/rsyslog.d/60-jailwarden.conf in a real rsyslogd, forwarding over RELP to the
real syslog source: auth/authpriv/mail/local5 arrive as trusted RFC 5424 messages, other
facilities do not, and nothing is lost or doubled while the agent is down or restarting: what is
logged meanwhile waits in the disk-assisted queue (even across an rsyslogd restart), and what
rsyslog sent that the agent had not acknowledged is sent again.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time

import pytest

from .conftest import require_root
from .polling import DEADLINE, wait_until
from .rsyslog import Rsyslogd, RunningSource, free_port, need_program, run_logger, syslog_config

SNIPPET = __import__("pathlib").Path(__file__).resolve().parents[2] / "packaging/rsyslog/60-jailwarden.conf"
QUEUE_WAIT = 40.0  # rsyslog retries a suspended action every 2 s, backing off to at most 30 s


def snippet_rules(port: int) -> str:
    text = SNIPPET.read_text()
    assert 'port="5515"' in text
    return text.replace('port="5515"', f'port="{port}"')


def log(daemon: Rsyslogd, priority: str, text: str) -> None:
    run_logger("--server", "127.0.0.1", "--port", str(daemon.input_port), "--udp", "--rfc3164",
               "-p", priority, "-t", "sshd", "-i", text)


@pytest.fixture
def port():
    require_root()  # the kernel vouches for rsyslogd's connection only when its owner is trusted (root)
    return free_port()


def test_auth_mail_and_web_facilities_are_forwarded_trusted_and_others_not(port, tmp_path):
    tag = secrets.token_hex(4)
    daemon = Rsyslogd(tmp_path, snippet_rules(port))
    with RunningSource(syslog_config(f"relp://127.0.0.1:{port}")) as receiver:
        daemon.start()
        try:
            log(daemon, "user.notice", f"user-{tag}")
            for facility in ("auth", "authpriv", "mail", "local5"):
                log(daemon, f"{facility}.notice",
                    f"Failed password for root from 203.0.113.9 port 22 ssh2 {facility}-{tag}")
            for facility in ("auth", "authpriv", "mail", "local5"):
                event = receiver.wait_for_message(f"{facility}-{tag}")
                assert event.trusted and event.fields["SYSLOG_IDENTIFIER"] == "sshd"
        finally:
            daemon.stop()
    assert not [event for event in receiver.events if f"user-{tag}" in event.message]


def wait_for_lines(receiver: RunningSource, daemon: Rsyslogd, texts: list[str]) -> list[str]:
    """Wait until each of `texts` has arrived (rsyslog retries every 2 s, backing off to 30 s), then
    a moment more for copies; return every message received."""
    deadline = time.monotonic() + QUEUE_WAIT
    while not all(any(text in event.message for event in receiver.events) for text in texts):
        assert time.monotonic() < deadline, (f"not all of {texts} delivered after the agent came back; got "
                                             f"{[e.message for e in receiver.events]}; rsyslogd said: "
                                             f"{daemon.output.read_text()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.5)
    return [event.message for event in receiver.events]


def forward_once_then_stop_the_agent(daemon: Rsyslogd, port: int, tag: str) -> None:
    """A line forwarded to a running agent, which then stops: rsyslogd's RELP session is one the
    agent has closed."""
    with RunningSource(syslog_config(f"relp://127.0.0.1:{port}")) as receiver:
        log(daemon, "auth.notice", f"before-{tag}")
        receiver.wait_for_message(f"before-{tag}")


def test_lines_logged_while_the_agent_is_down_arrive_once_after_it_is_back(port, tmp_path):
    tag = secrets.token_hex(4)
    daemon = Rsyslogd(tmp_path, snippet_rules(port)).start()
    try:
        forward_once_then_stop_the_agent(daemon, port, tag)
        # down-1 is sent into the session the agent closed and never acknowledged, so rsyslog sends
        # it again; the others wait in the action's queue.
        for n in (1, 2, 3):
            log(daemon, "auth.notice", f"down-{n}-{tag}")
        wait_until(lambda: "suspending" in daemon.output.read_text(), "rsyslogd to find the agent gone")
        with RunningSource(syslog_config(f"relp://127.0.0.1:{port}")) as receiver:
            received = wait_for_lines(receiver, daemon, [f"down-{n}-{tag}" for n in (1, 2, 3)])
        assert all(sum(f"down-{n}-{tag}" in text for text in received) == 1 for n in (1, 2, 3)), received
    finally:
        daemon.stop()


def test_lines_queued_while_the_agent_is_down_survive_an_rsyslogd_restart(port, tmp_path):
    """What waits in the action's queue is saved on disk when rsyslogd stops and sent once the agent
    is back. Seen with rsyslog 8.2302: the one message omrelp had in flight when the agent stopped
    lives in librelp's memory and is lost if rsyslogd stops before the agent is back, and the
    queue may send one message twice after the restart; the README says so."""
    tag = secrets.token_hex(4)
    daemon = Rsyslogd(tmp_path, snippet_rules(port)).start()
    try:
        forward_once_then_stop_the_agent(daemon, port, tag)
        log(daemon, "auth.notice", f"in-flight-{tag}")
        wait_until(lambda: "suspending" in daemon.output.read_text(), "rsyslogd to find the agent gone")
        log(daemon, "authpriv.notice", f"queued-{tag}")
        time.sleep(0.5)
        daemon.stop()
        assert list(tmp_path.glob("jailwarden*")), "no disk queue written at shutdown"
        daemon = Rsyslogd(tmp_path, snippet_rules(port)).start()
        log(daemon, "auth.notice", f"after-restart-{tag}")
        with RunningSource(syslog_config(f"relp://127.0.0.1:{port}")) as receiver:
            wait_for_lines(receiver, daemon, [f"queued-{tag}", f"after-restart-{tag}"])
    finally:
        daemon.stop()


def test_a_stream_forwarded_while_the_agent_restarts_arrives_whole_and_once(port, tmp_path):
    """1,500 lines over about 8 s while the receiving agent is stopped and started again three
    times: every line arrives, and none twice."""
    tag = secrets.token_hex(4)
    count = 1500
    received: list[str] = []
    daemon = Rsyslogd(tmp_path, snippet_rules(port)).start()
    receiver = RunningSource(syslog_config(f"relp://127.0.0.1:{port}")).__enter__()
    logger = subprocess.Popen([need_program("logger"), "--server", "127.0.0.1", "--port", str(daemon.input_port),
                               "--udp", "--rfc3164", "-p", "auth.notice", "-t", "sshd"],
                              stdin=subprocess.PIPE, text=True)

    def write_lines() -> None:
        for number in range(count):
            logger.stdin.write(f"line-{number}-{tag}\n")
            logger.stdin.flush()
            if number % 10 == 9:
                time.sleep(0.05)
        logger.stdin.close()

    writer = threading.Thread(target=write_lines)
    try:
        writer.start()
        for _ in range(3):
            # Up long enough for rsyslog's first retry (2 s after it found the agent gone).
            time.sleep(2.5)
            receiver.__exit__(None, None, None)
            taken = len(receiver.events)
            received += [event.message for event in receiver.events]
            assert taken, "nothing arrived while the agent was up"
            time.sleep(0.3)
            receiver = RunningSource(syslog_config(f"relp://127.0.0.1:{port}")).__enter__()
        writer.join()
        logger.wait(DEADLINE)
        deadline = time.monotonic() + QUEUE_WAIT
        while len(received) + len(receiver.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        receiver.__exit__(None, None, None)
        writer.join()
        daemon.stop()
    received += [event.message for event in receiver.events]
    numbers = [int(text.split("-")[1]) for text in received if text.endswith(tag)]
    missing = sorted(set(range(count)) - set(numbers))
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:10]}"
    assert len(numbers) == count, f"{len(numbers) - count} lines arrived twice"
