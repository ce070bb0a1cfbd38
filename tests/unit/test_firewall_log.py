"""Log backend: a dry run that says what it would ban and answers list() like a kernel set."""

import ipaddress
import logging

import pytest

from firewall import BackendError, backend_class
from firewall.log import LogBackend

V4 = ipaddress.ip_address("192.0.2.1")
V6 = ipaddress.ip_address("2001:db8::1")
NET = ipaddress.ip_network("198.51.100.0/24")


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def logged(caplog):
    caplog.set_level(logging.INFO, "jailwarden.firewall")
    return caplog


def messages(caplog):
    return [record.getMessage() for record in caplog.records if record.name == "jailwarden.firewall"]


def test_registered_as_log():
    assert backend_class("log") is LogBackend


def test_each_ban_and_unban_is_logged_with_jail_target_and_ttl(logged):
    jail = LogBackend("sshd", clock=Clock())
    jail.ban(V4, 600)
    jail.ban(NET, None)
    jail.unban(V4)
    jail.unban(V6)
    assert messages(logged) == [
        "jail sshd: dry run: would ban 192.0.2.1 for 600.0 s",
        "jail sshd: dry run: would ban 198.51.100.0/24 permanently",
        "jail sshd: dry run: would unban 192.0.2.1",
        "jail sshd: dry run: would unban 2001:db8::1 (was not banned)",
    ]


def test_list_gives_seconds_left_and_forgets_ended_bans():
    clock = Clock()
    jail = LogBackend("sshd", clock=clock)
    jail.ban_many([(V4, 600), (V6, 30), (NET, None)])
    assert jail.list() == {V4: 600.0, V6: 30.0, NET: None}
    clock.now += 100
    assert jail.list() == {V4: 500.0, NET: None}
    jail.ban(V4, 10)  # banning again replaces the ttl
    assert jail.list() == {V4: 10.0, NET: None}
    jail.unban(NET)
    assert jail.list() == {V4: 10.0}


def test_ipv4_mapped_addresses_are_recorded_as_ipv4():
    jail = LogBackend("sshd", clock=Clock())
    jail.ban(ipaddress.ip_address("::ffff:192.0.2.1"), 60)
    assert jail.list() == {V4: 60.0}


def test_ban_many_logs_each_and_skips_bad_items_naming_them(logged):
    jail = LogBackend("sshd", clock=Clock())
    jail.ban_many([(V4, 60), ("192.0.2.99", 60), (V6, 0), (NET, None)])
    assert jail.list() == {V4: 60.0, NET: None}
    warnings = [record.getMessage() for record in logged.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and "'192.0.2.99'" in warnings[0] and "ttl 0" in warnings[1]
    with pytest.raises(BackendError, match="not an ipaddress"):
        jail.ban("192.0.2.99", 60)


def test_ban_many_of_10000_is_recorded():
    jail = LogBackend("sshd", clock=Clock())
    jail.ban_many([(ipaddress.IPv4Address(int(V4) + n), 60) for n in range(10_000)])
    assert len(jail.list()) == 10_000


def test_setup_and_teardown_only_log(logged):
    jail = LogBackend("sshd", clock=Clock())
    jail.setup()
    jail.setup()
    jail.ban(V4, 60)
    jail.teardown()
    assert jail.list() == {}
    assert "dry run" in messages(logged)[0] and "1 recorded bans forgotten" in messages(logged)[-1]
