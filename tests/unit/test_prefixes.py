"""Aggregation by prefix: enough banned addresses of one /24 or /64 ban the prefix."""

import ipaddress

import pytest

from agent.addresses import AddressSet
from agent.bans import BanBook, BanPolicy
from agent.jail import Jail
from agent.pipeline import JailSetup, Pipeline
from agent.prefixes import Aggregation, PrefixTracker
from agent.store import _address, _text
from parsers.filterfile import filter_from_dict

RULE = Aggregation(bans=3, window=600)


def net(text):
    return ipaddress.ip_network(text)


def addr(text):
    return ipaddress.ip_address(text)


def test_the_nth_distinct_address_of_a_prefix_within_the_window_names_the_prefix():
    tracker = PrefixTracker(RULE)
    assert tracker.record(addr("203.0.113.1"), 1000) is None
    assert tracker.record(addr("203.0.113.1"), 1001) is None  # the same address again is not a new one
    assert tracker.record(addr("198.51.100.2"), 1002) is None  # another prefix
    assert tracker.record(addr("203.0.113.200"), 1003) is None
    assert tracker.record(addr("203.0.113.77"), 1004) == net("203.0.113.0/24")


def test_bans_older_than_the_window_do_not_count_towards_the_prefix():
    tracker = PrefixTracker(RULE)
    tracker.record(addr("203.0.113.1"), 1000)
    tracker.record(addr("203.0.113.2"), 1100)
    assert tracker.record(addr("203.0.113.3"), 1601) is None  # .1 is 601 s old
    assert tracker.record(addr("203.0.113.4"), 1602) == net("203.0.113.0/24")


def test_ipv6_addresses_aggregate_by_their_64():
    tracker = PrefixTracker(Aggregation(bans=2, window=600))
    tracker.record(addr("2001:db8:1:2::5"), 1000)
    assert tracker.record(addr("2001:db8:1:2:ffff::9"), 1001) == net("2001:db8:1:2::/64")


def test_a_flood_of_prefixes_keeps_at_most_max_prefixes():
    tracker = PrefixTracker(RULE, max_prefixes=100)
    for n in range(10_000):
        tracker.record(ipaddress.IPv4Address(0xC0000000 + n * 256), 1000)
    assert len(tracker) == 100


@pytest.mark.parametrize("settings, reason", [
    ({"bans": 1}, "at least 2"), ({"ipv4": 4}, "from 8 to 31"), ({"ipv6": 128}, "from 16 to 127"),
])
def test_an_aggregation_that_would_ban_too_much_or_nothing_is_refused(settings, reason):
    with pytest.raises(ValueError, match=reason):
        Aggregation(**settings)


def pipeline(ignore=()):
    flt = filter_from_dict({"failregex": ["fail from <HOST>$"], "syslog": ["app"]}, file="app", name="app")
    jail = Jail("web", maxretry=1, findtime=600, ignore=ignore)
    return Pipeline([JailSetup("web", flt, jail, BanPolicy(3600), prefixes=PrefixTracker(RULE))], BanBook())


def ban_addresses(pipe, *texts, now=1000.0):
    results = []
    for text in texts:
        ban = pipe.book.ban(("web", addr(text)), now, BanPolicy(3600))
        results.append(pipe.aggregate(ban, now))
    return results


def test_the_pipeline_bans_the_prefix_with_the_jails_policy():
    pipe = pipeline()
    *_, prefix_ban = ban_addresses(pipe, "203.0.113.1", "203.0.113.2", "203.0.113.3")
    assert prefix_ban.address == net("203.0.113.0/24") and prefix_ban.end == 1000 + 3600
    assert "3 addresses of 203.0.113.0/24" in prefix_ban.reason
    assert pipe.book.current("web", net("203.0.113.0/24")) == prefix_ban
    assert pipe.aggregate(prefix_ban, 1000.0) is None  # a network ban counts towards nothing


def test_a_prefix_holding_an_ignored_or_own_address_is_not_banned():
    pipe = pipeline(ignore=[net("203.0.113.128/25")])
    *_, refused = ban_addresses(pipe, "203.0.113.1", "203.0.113.2", "203.0.113.3")
    assert "ignore list" in refused and pipe.book.current("web", net("203.0.113.0/24")) is None
    pipe = pipeline()
    pipe.protected = AddressSet([addr("198.51.100.10")])
    *_, refused = ban_addresses(pipe, "198.51.100.1", "198.51.100.2", "198.51.100.3")
    assert "this host's addresses" in refused


def test_a_network_ban_is_stored_and_read_back_as_a_network():
    for target in (net("203.0.113.0/24"), net("2001:db8::/64"), addr("2001:db8::1"), addr("192.0.2.1")):
        assert _address(_text(target)) == target
