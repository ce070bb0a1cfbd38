"""Jail: counting failures per address within findtime, the ignore list, bounded memory."""

import ipaddress

import pytest

from agent.addresses import AddressSet, normalise, parse_address, parse_network
from agent.jail import BanDecision, Jail
from parsers.filter import Failure

ATTACKER = ipaddress.ip_address("203.0.113.7")


def failure(address=ATTACKER, time=1000.0):
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    return Failure(address=address, filter="sshd", time=time, message="Failed password", captures={})


def fail_times(jail, times, address=ATTACKER):
    """Record one failure at each time (with now = that time); the decisions returned."""
    return [jail.record(failure(address, t), now=t) for t in times]


def test_ban_decided_exactly_when_maxretry_reached():
    jail = Jail("sshd", maxretry=3, findtime=600)
    first, second, third = fail_times(jail, [1000, 1001, 1002])
    assert first is None and second is None
    assert third == BanDecision("sshd", ATTACKER, 1002, 3, failure(time=1002))


def test_failures_older_than_findtime_do_not_count():
    jail = Jail("sshd", maxretry=3, findtime=600)
    decisions = fail_times(jail, [1000, 1100, 1600, 1700])
    assert decisions == [None, None, None, None]  # 1000 left the window at 1600, 1100 at 1700
    assert jail.record(failure(time=1750), now=1750) is not None  # 1600, 1700, 1750


def test_failure_exactly_findtime_old_has_left_the_window():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert fail_times(jail, [1000, 1600]) == [None, None]


def test_window_is_cleared_after_a_ban():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert fail_times(jail, [1000, 1001])[1] is not None
    assert jail.tracked() == 0
    assert fail_times(jail, [1002]) == [None]
    assert fail_times(jail, [1003])[0] is not None


def test_addresses_are_counted_separately():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert jail.record(failure("192.0.2.1"), now=1000) is None
    assert jail.record(failure("192.0.2.2"), now=1000) is None
    assert jail.tracked() == 2


def test_ipv4_mapped_address_counts_as_the_ipv4_address():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert jail.record(failure("::ffff:192.0.2.1"), now=1000) is None
    decision = jail.record(failure("192.0.2.1"), now=1001)
    assert decision.address == ipaddress.IPv4Address("192.0.2.1")


def test_replayed_failure_older_than_findtime_is_dropped_and_not_tracked():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert jail.record(failure(time=100), now=1000) is None
    assert jail.tracked() == 0


def test_replayed_history_within_findtime_counts_at_its_own_time():
    def replay(jail):
        assert jail.record(failure(time=500), now=1000) is None
        assert jail.record(failure(time=900), now=1000) is None

    jail = Jail("sshd", maxretry=3, findtime=600)
    replay(jail)
    assert jail.record(failure(time=1050), now=1050) is not None
    jail = Jail("sshd", maxretry=3, findtime=600)
    replay(jail)
    assert jail.record(failure(time=1100), now=1100) is None  # 500 has left the window


def test_out_of_order_failures_are_all_counted():
    jail = Jail("sshd", maxretry=3, findtime=600)
    assert jail.record(failure(time=1010), now=1010) is None
    assert jail.record(failure(time=1000), now=1011) is None
    assert jail.record(failure(time=1005), now=1012) is not None


def test_failure_from_the_future_counts_as_now_so_it_cannot_outlive_the_window():
    jail = Jail("sshd", maxretry=2, findtime=600)
    assert jail.record(failure(time=1_000_000), now=1000) is None
    # Had it counted at its own time, it would still be in the window at 1700.
    assert jail.record(failure(time=1700), now=1700) is None


def test_ignored_addresses_and_networks_v4_v6_and_mapped_are_never_tracked():
    ignore = [parse_network(text) for text in ("192.0.2.10", "198.51.100.0/24", "2001:db8::/32", "::1")]
    jail = Jail("sshd", maxretry=1, findtime=600, ignore=ignore)
    for address in ("192.0.2.10", "198.51.100.200", "2001:db8:1::5", "::1", "::ffff:198.51.100.9"):
        assert jail.is_ignored(ipaddress.ip_address(address))
        assert jail.record(failure(address), now=1000) is None, address
    assert jail.tracked() == 0
    assert jail.record(failure("192.0.2.11"), now=1000) is not None
    assert jail.record(failure("2001:db9::1"), now=1000) is not None


def test_forget_starts_an_address_from_zero():
    jail = Jail("sshd", maxretry=2, findtime=600)
    jail.record(failure(), now=1000)
    jail.forget(ATTACKER)
    assert jail.record(failure(time=1001), now=1001) is None


def test_windows_expire_after_findtime_without_further_failures():
    jail = Jail("sshd", maxretry=5, findtime=600)
    jail.record(failure(time=1000), now=1000)
    jail.record(failure("192.0.2.1", time=1000), now=1000)
    jail.record(failure("192.0.2.2", time=1700), now=1700)
    assert jail.tracked() == 1


def test_a_window_of_replayed_failures_behind_newer_ones_expires_on_its_own_times():
    jail = Jail("sshd", maxretry=2, findtime=600)
    jail.record(failure("192.0.2.1", time=1000), now=1000)
    jail.record(failure("192.0.2.2", time=500), now=1000)  # replayed: newer entries came first
    assert jail.windows().keys() == {ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")}
    # At 1150 192.0.2.2's only failure is out of the window: a second one does not ban.
    assert jail.record(failure("192.0.2.2", time=1150), now=1150) is None
    assert jail.windows()[ipaddress.ip_address("192.0.2.2")] == [1150]
    jail.record(failure("192.0.2.3", time=1900), now=1900)
    assert jail.tracked() == 1


def test_memory_stays_bounded_under_a_flood_of_unique_addresses():
    jail = Jail("sshd", maxretry=3, findtime=600, max_tracked=10_000)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for offset in range(200_000):
        address = ipaddress.IPv4Address(base + offset)
        assert jail.record(Failure(address, "sshd", 1000.0, "", {}), now=1000.0) is None
    assert jail.tracked() == 10_000
    # The most recent addresses are the ones still tracked.
    last = ipaddress.IPv4Address(base + 199_999)
    jail.record(Failure(last, "sshd", 1000.0, "", {}), now=1000.0)
    assert jail.record(Failure(last, "sshd", 1000.0, "", {}), now=1000.0) is not None


def test_invalid_jail_settings_are_rejected():
    with pytest.raises(ValueError, match="maxretry"):
        Jail("sshd", maxretry=0, findtime=600)
    with pytest.raises(ValueError, match="findtime"):
        Jail("sshd", maxretry=1, findtime=0)


def test_address_set_matches_networks_of_every_prefix_length():
    ignore = AddressSet(parse_network(text) for text in ("10.0.0.0/8", "172.16.0.0/12", "0.0.0.0/32", "fe80::/10"))
    assert ipaddress.ip_address("10.255.255.255") in ignore
    assert ipaddress.ip_address("172.31.0.1") in ignore
    assert ipaddress.ip_address("172.32.0.1") not in ignore
    assert ipaddress.ip_address("fe80::1") in ignore
    assert ipaddress.ip_address("fec0::1") not in ignore
    assert ipaddress.ip_address("::ffff:10.1.2.3") in ignore
    assert len(ignore) == 4 and len(ignore | AddressSet([ipaddress.ip_network("::1")])) == 5


def test_mapped_ipv6_network_in_the_list_is_normalised_to_ipv4():
    assert parse_network("::ffff:192.0.2.0/120") == ipaddress.ip_network("192.0.2.0/24")
    assert ipaddress.ip_address("192.0.2.5") in AddressSet([parse_network("::ffff:192.0.2.0/120")])


def test_network_with_host_bits_set_is_an_error_naming_both_readings():
    with pytest.raises(ValueError, match=r"host bits set: write 192\.0\.2\.0/24 .* or 192\.0\.2\.1 "):
        parse_network("192.0.2.1/24")


def test_address_parsing_normalises_and_explains_errors():
    assert parse_address(" ::ffff:192.0.2.1 ") == ipaddress.IPv4Address("192.0.2.1")
    assert normalise(ipaddress.ip_address("2001:db8::1")) == ipaddress.ip_address("2001:db8::1")
    with pytest.raises(ValueError, match="not an IP address"):
        parse_address("10.0.0.300")
    with pytest.raises(ValueError, match="not an IP address or network"):
        parse_network("10.0.0.0/33")


def test_failures_marked_not_counted_never_reach_maxretry():
    jail = Jail("sshd", maxretry=2, findtime=600)
    evidence = Failure(ATTACKER, "sshd", 1000.0, "pam_unix(sshd:auth): authentication failure", {}, counts=False)
    assert [jail.record(evidence, 1000.0) for _ in range(5)] == [None] * 5
    assert jail.tracked() == 0
    assert jail.record(failure(), 1000.0) is None
    assert jail.record(failure(), 1000.0) is not None


def test_a_line_standing_for_repeated_failures_counts_each_of_them():
    jail = Jail("sshd", maxretry=3, findtime=600)
    repeated = Failure(ATTACKER, "sshd", 1000.0, "message repeated 2 times", {}, repeat=2)
    assert jail.record(repeated, 1000.0) is None
    assert jail.record(failure(), 1000.0) is not None


def test_a_forged_huge_repeat_count_costs_no_memory():
    jail = Jail("sshd", maxretry=5, findtime=600)
    decision = jail.record(Failure(ATTACKER, "sshd", 1000.0, "", {}, repeat=10**6), 1000.0)
    assert decision is not None and decision.failures == 5


def test_jail_requiring_trust_ignores_failures_of_forgeable_origin():
    jail = Jail("sshd", maxretry=1, findtime=600, require_trusted=True)
    forged = Failure(ATTACKER, "sshd", 1000.0, "Failed password", {}, trusted=False)
    assert jail.record(forged, 1000.0) is None and jail.tracked() == 0
    assert jail.record(Failure(ATTACKER, "sshd", 1000.0, "Failed password", {}, trusted=True), 1000.0)
