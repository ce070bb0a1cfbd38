"""The nftables backend against the real kernel, inside network namespaces created per test:
what `nft -j list ruleset` shows after each call, adoption after a crash or an administrator's
flush, batching, and packets really dropped or rejected between two namespaces."""

from __future__ import annotations

import ipaddress
import json
import textwrap

import pytest

from firewall import BackendError
from firewall._nftables_ruleset import fit_networks
from firewall.libnftables import Libnftables

from .conftest import require_root, require_tools
from .netns import NO_NET_ADMIN, NetworkNamespace, listening_pair
from .polling import wait_until

PREFIX = ("import ipaddress, json, time\nfrom firewall.nftables import NftablesBackend\n"
          "ip, net = ipaddress.ip_address, ipaddress.ip_network\n")


@pytest.fixture
def ns(interpreter):
    require_root()
    require_tools("ip", "nft")
    with NetworkNamespace("jwnft", interpreter) as namespace:
        yield namespace


def in_ns(namespace: NetworkNamespace, body: str, jail: str = "sshd", **options):
    """Run `body` in the namespace with `b` the jail's backend; returns the JSON it printed last."""
    code = PREFIX + f"b = NftablesBackend({jail!r}, **{options!r})\n" + textwrap.dedent(body)
    return namespace.python(code)


def ruleset(namespace: NetworkNamespace) -> list[dict]:
    return json.loads(namespace.run("nft", "-j", "list", "ruleset").stdout)["nftables"]


def objects(namespace: NetworkNamespace, kind: str, table: str = "jailwarden") -> dict[str, dict]:
    return {entry[kind].get("name", entry[kind].get("chain")): entry[kind] for entry in ruleset(namespace)
            if kind in entry and entry[kind].get("table") == table}


def rules(namespace: NetworkNamespace, chain: str, table: str = "jailwarden") -> list[dict]:
    return [entry["rule"] for entry in ruleset(namespace)
            if "rule" in entry and entry["rule"]["table"] == table and entry["rule"]["chain"] == chain]


def elements(namespace: NetworkNamespace, set_name: str) -> dict[str, int | None]:
    """`{element as text: its timeout or None}` from the kernel's view of one of our sets."""
    found = {}
    for item in objects(namespace, "set").get(set_name, {}).get("elem", []):
        value, timeout = item, None
        if isinstance(item, dict) and "elem" in item:
            value, timeout = item["elem"]["val"], item["elem"].get("timeout")
        if isinstance(value, dict):
            value = f"{value['prefix']['addr']}/{value['prefix']['len']}"
        found[value] = timeout
    return found


def test_setup_twice_creates_table_sets_and_one_chain_without_duplicate_rules(ns):
    in_ns(ns, "b.setup(); b.setup()")

    sets = objects(ns, "set")
    assert {name: (s["type"], s["flags"]) for name, s in sets.items()} == {
        "sshd_v4": ("ipv4_addr", ["timeout"]), "sshd_v6": ("ipv6_addr", ["timeout"]),
        "sshd_v4net": ("ipv4_addr", ["interval", "timeout"]), "sshd_v6net": ("ipv6_addr", ["interval", "timeout"])}
    chain = objects(ns, "chain")["sshd"]
    assert (chain["family"], chain["type"], chain["hook"], chain["prio"]) == ("inet", "filter", "input", -10)
    assert len(rules(ns, "sshd")) == 4


def test_ban_v4_v6_and_networks_shows_in_kernel_and_list_then_unban_empties(ns):
    listed = in_ns(ns, """
        b.setup()
        b.ban(ip("192.0.2.7"), 600); b.ban(ip("2001:db8::7"), None)
        b.ban(net("198.51.100.0/24"), 300); b.ban(net("2001:db8:1::/64"), 30.2)
        b.ban(ip("::ffff:203.0.113.9"), 600)   # IPv4-mapped: stored as IPv4
        print(json.dumps({str(k): v for k, v in b.list().items()}))
    """)

    assert elements(ns, "sshd_v4") == {"192.0.2.7": 600, "203.0.113.9": 600}
    assert elements(ns, "sshd_v6") == {"2001:db8::7": None}
    assert elements(ns, "sshd_v4net") == {"198.51.100.0/24": 300}
    assert elements(ns, "sshd_v6net") == {"2001:db8:1::/64": 31}  # whole seconds, rounded up
    assert set(listed) == {"192.0.2.7", "203.0.113.9", "2001:db8::7", "198.51.100.0/24", "2001:db8:1::/64"}
    assert 590 <= listed["192.0.2.7"] <= 600 and 290 <= listed["198.51.100.0/24"] <= 300
    assert listed["2001:db8::7"] is None

    left = in_ns(ns, """
        for target in (ip("192.0.2.7"), ip("203.0.113.9"), ip("2001:db8::7"), net("198.51.100.0/24"),
                       net("2001:db8:1::/64")):
            b.unban(target)
        b.unban(ip("192.0.2.99")); b.unban(net("10.0.0.0/8"))   # not banned: no error
        print(json.dumps(len(b.list())))
    """)
    assert left == 0
    assert all(elements(ns, name) == {} for name in ("sshd_v4", "sshd_v6", "sshd_v4net", "sshd_v6net"))


def test_ban_again_replaces_the_ttl(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.8'), 600); b.ban(ip('192.0.2.8'), 60); b.ban(net('198.51.100.0/24'), 9)"
              "; b.ban(net('198.51.100.0/24'), 900)")
    assert elements(ns, "sshd_v4") == {"192.0.2.8": 60}
    assert elements(ns, "sshd_v4net") == {"198.51.100.0/24": 900}

    in_ns(ns, "b.ban(ip('192.0.2.8'), None)")
    assert elements(ns, "sshd_v4") == {"192.0.2.8": None}


def test_bad_items_in_ban_many_are_named_and_the_rest_is_banned(ns):
    error = in_ns(ns, """
        b.setup(); b.ban(net("198.51.100.0/24"), 60)
        try:
            b.ban_many([(ip("192.0.2.1"), 60), ("192.0.2.2", 60), (ip("192.0.2.3"), -5),
                        (net("198.51.100.128/25"), 60), (net("203.0.113.0/24"), 60)])
        except Exception as e:
            print(json.dumps(str(e)))
    """)

    assert "ban 3 of 5 targets in jail sshd" in error
    assert "('192.0.2.2', 60): a string" in error and "(IPv4Address('192.0.2.3'), -5): ttl must be" in error
    assert "198.51.100.128/25: overlaps banned network 198.51.100.0/24" in error
    assert elements(ns, "sshd_v4") == {"192.0.2.1": 60}
    assert elements(ns, "sshd_v4net") == {"198.51.100.0/24": 60, "203.0.113.0/24": 60}


def test_teardown_removes_only_this_jail_and_the_table_last(ns):
    ns.run("nft", "add table inet foreign; add set inet foreign keep { type ipv4_addr; }; "
           "add chain inet foreign input { type filter hook input priority 0; }; "
           "add rule inet foreign input tcp dport 9 counter accept")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.10'), 600)", jail="nginx")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.11'), 600); b.teardown(); b.teardown()")

    assert set(objects(ns, "set")) == {"nginx_v4", "nginx_v6", "nginx_v4net", "nginx_v6net"}
    assert set(objects(ns, "chain")) == {"nginx"} and elements(ns, "nginx_v4") == {"192.0.2.10": 600}

    in_ns(ns, "b.teardown()", jail="nginx")
    assert not any(entry.get("table", {}).get("name") == "jailwarden" for entry in ruleset(ns))
    assert set(objects(ns, "set", "foreign")) == {"keep"} and len(rules(ns, "input", "foreign")) == 1


def test_setup_after_a_crash_adopts_the_bans_left_in_the_kernel(ns):
    crashed = ns.run_python(PREFIX + "import os; b = NftablesBackend('sshd'); b.setup(); b.ban(ip('192.0.2.12'), 600)\n"
                            "os.kill(os.getpid(), 9)")
    assert crashed.returncode == -9

    listed = in_ns(ns, "b.setup(); print(json.dumps({str(k): v for k, v in b.list().items()}))")

    assert list(listed) == ["192.0.2.12"] and 590 <= listed["192.0.2.12"] <= 600
    assert len(rules(ns, "sshd")) == 4


def test_setup_repairs_what_an_administrator_flushed_or_deleted(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.13'), 600)")
    ns.run("nft", "flush chain inet jailwarden sshd; flush set inet jailwarden sshd_v4")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.14'), 600)")
    assert len(rules(ns, "sshd")) == 4 and elements(ns, "sshd_v4") == {"192.0.2.14": 600}

    ns.run("nft", "delete chain inet jailwarden sshd; delete set inet jailwarden sshd_v6")
    in_ns(ns, "b.setup()")
    assert len(rules(ns, "sshd")) == 4 and "sshd_v6" in objects(ns, "set")


def test_setup_with_another_priority_replaces_the_chain(ns):
    in_ns(ns, "b.setup()")
    in_ns(ns, "b.setup()", priority=5)
    assert objects(ns, "chain")["sshd"]["prio"] == 5 and len(rules(ns, "sshd")) == 4


def test_a_set_of_another_type_is_refused_with_the_way_out(ns):
    ns.run("nft", "add table inet jailwarden; add set inet jailwarden sshd_v4 { type ipv6_addr; }")
    error = in_ns(ns, """
        try:
            b.setup()
        except Exception as e:
            print(json.dumps(str(e)))
    """)
    assert "set inet jailwarden sshd_v4 exists as type ipv6_addr flags none, expected ipv4_addr flags timeout" in error
    assert "nft delete set inet jailwarden sshd_v4" in error


def test_without_cap_net_admin_the_error_says_so(ns):
    require_tools("setpriv")
    result = ns.run_python(PREFIX + "NftablesBackend('sshd').setup()", wrapper=NO_NET_ADMIN)
    assert result.returncode != 0
    assert "Operation not permitted" in result.stderr and "CAP_NET_ADMIN" in result.stderr


def test_a_missing_library_is_a_backend_error_naming_the_package():
    with pytest.raises(BackendError, match="install the nftables package"):
        Libnftables("libnftables-missing.so.1")


def test_overlapping_networks_are_refused_both_ways_and_the_larger_new_block_wins():
    net = ipaddress.ip_network
    present = [net("198.51.100.0/24"), net("2001:db8:1::/64")]
    new = [net("198.51.100.0/24"), net("198.51.100.0/25"), net("198.51.0.0/16"), net("203.0.113.0/25"),
           net("203.0.113.0/24"), net("2001:db8::/32"), net("2001:db8:2::/64")]

    accepted, refused = fit_networks(present, new)

    assert sorted(map(str, accepted)) == ["198.51.100.0/24", "2001:db8:2::/64", "203.0.113.0/24"]
    assert {str(a): str(b) for a, b in refused} == {
        "198.51.0.0/16": "198.51.100.0/24", "198.51.100.0/25": "198.51.100.0/24",
        "203.0.113.0/25": "203.0.113.0/24", "2001:db8::/32": "2001:db8:1::/64"}


def test_ban_many_of_10000_is_batched_and_fast(ns):
    result = in_ns(ns, """
        import firewall.nftables as module
        calls = []
        real = module.run_json
        module.run_json = lambda handle, commands, **kw: calls.append(len(commands)) or real(handle, commands, **kw)
        b.setup(); calls.clear()
        items = [(ip(f"10.{i >> 8 & 255}.{i & 255}.1"), 3600) for i in range(5000)]
        items += [(ip(f"2001:db8::{i:x}"), None) for i in range(5000)]
        start = time.perf_counter(); b.ban_many(items); seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "calls": len(calls), "listed": len(b.list())}))
    """)

    print(f"\nban_many of 10,000: {result['seconds']:.3f} s in {result['calls']} libnftables calls")
    assert result["calls"] <= 2 and result["listed"] == 10_000
    assert result["seconds"] < 2.0
    assert len(elements(ns, "sshd_v4")) == 5000 and len(elements(ns, "sshd_v6")) == 5000


# -- packets

@pytest.fixture
def pair(interpreter):
    require_root()
    require_tools("ip", "nft")
    with listening_pair("jwnf", interpreter) as link:
        yield link


def test_packets_from_a_banned_address_are_dropped_until_unban_or_kernel_expiry(pair):
    link = pair
    in_ns(link.a, "b.setup()")

    in_ns(link.a, f"b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), 600)")
    assert link.connect(link.a4) == "TimeoutError" and link.connect(link.a6) == "TimeoutError"

    in_ns(link.a, f"b.unban(ip({link.b4!r})); b.unban(ip({link.b6!r}))")
    assert link.connect(link.a4) == "connected" and link.connect(link.a6) == "connected"

    in_ns(link.a, f"b.ban(net({link.b4 + '/24'!r}, strict=False), 2)")  # a network, expired by the kernel
    assert link.connect(link.a4) == "TimeoutError"
    wait_until(lambda: link.connect(link.a4) == "connected", "the kernel to expire the 2 s ban")


def test_reject_on_the_jails_port_refuses_at_once_and_leaves_other_ports(pair):
    link = pair
    options = {"action": "reject", "protocol": "tcp", "ports": (8022,)}
    in_ns(link.a, f"b.setup(); b.ban(ip({link.b4!r}), 600)", **options)

    assert link.connect(link.a4) == "ConnectionRefusedError"  # a TCP reset, not a timeout
    assert link.connect(link.a4, 8023) == "connected"
    in_ns(link.a, f"b.unban(ip({link.b4!r}))", **options)
    assert link.connect(link.a4) == "connected"
