"""The sd_notify client against a real unix datagram socket, as systemd listens on one."""

import os
import secrets
import socket

import pytest

from agent.notify import Notifier


@pytest.fixture
def manager(tmp_path):
    """A datagram socket standing in for systemd's notification socket; yields (path, receive)."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, lambda: sock.recv(4096).decode()
    sock.close()


def test_ready_status_watchdog_and_stopping_reach_the_manager(manager):
    path, receive = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("2 jails, 0 active bans")
    notifier.status("2 jails, 1 active ban")
    notifier.watchdog()
    notifier.stopping()
    assert receive() == "READY=1\nSTATUS=2 jails, 0 active bans"
    assert receive() == "STATUS=2 jails, 1 active ban"
    assert receive() == "WATCHDOG=1"
    assert receive() == "STOPPING=1\nSTATUS=stopping"
    notifier.close()


def test_an_abstract_socket_name_is_used_as_such():
    name = f"jailwarden-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("up")
    notifier.watchdog()


def test_a_manager_that_went_away_is_logged_once(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    for _ in range(3):
        notifier.status("still here")
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "nonsense"}).watchdog_interval is None
