"""The iptables backend against the real kernel, inside network namespaces created per test: what
`iptables-legacy -S` / `ip6tables-legacy -S` show after each call, adoption after a crash or an
administrator's flush, batching, and packets really dropped or rejected between two namespaces.

iptables rules have no expiry, so there is no kernel-expiry test here: the agent unbans.
"""

from __future__ import annotations

import textwrap

import pytest

from .conftest import require_root, require_tools
from .netns import NO_NET_ADMIN, NetworkNamespace, listening_pair

PREFIX = ("import ipaddress, json, time\nfrom firewall.iptables import IptablesBackend\n"
          "ip, net = ipaddress.ip_address, ipaddress.ip_network\n"
          "def listed(b): return {str(k): v for k, v in b.list().items()}\n")
TOOLS = ("ip", "iptables-legacy", "ip6tables-legacy")


@pytest.fixture
def ns(interpreter):
    require_root()
    require_tools(*TOOLS)
    with NetworkNamespace("jwipt", interpreter) as namespace:
        yield namespace


def in_ns(namespace: NetworkNamespace, body: str, jail: str = "sshd", **options):
    """Run `body` in the namespace with `b` the jail's backend; returns the JSON it printed last."""
    code = PREFIX + f"b = IptablesBackend({jail!r}, **{options!r})\n" + textwrap.dedent(body)
    return namespace.python(code)


def rules(namespace: NetworkNamespace, version: int = 4, chain: str | None = None) -> list[str]:
    """The kernel's own view: `iptables-legacy -S [chain]` lines."""
    tool = "iptables-legacy" if version == 4 else "ip6tables-legacy"
    return namespace.run(tool, "-w", "-S", *([chain] if chain else [])).stdout.splitlines()


def test_setup_twice_creates_the_chain_and_one_jump_at_the_top(ns):
    ns.run("iptables-legacy", "-w", "-A", "INPUT", "-s", "198.51.100.9", "-j", "ACCEPT")
    in_ns(ns, "b.setup(); b.setup()", protocol="tcp", ports=(22, 2222))

    assert rules(ns) == ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT", "-N jw-sshd",
                         "-A INPUT -p tcp -m multiport --dports 22,2222 -j jw-sshd",
                         "-A INPUT -s 198.51.100.9/32 -j ACCEPT"]
    assert rules(ns, 6)[3:] == ["-N jw-sshd", "-A INPUT -p tcp -m multiport --dports 22,2222 -j jw-sshd"]


def test_setup_keeps_a_moved_jump_and_leaves_one_at_the_top_of_duplicates(ns):
    in_ns(ns, "b.setup()")
    ns.run("iptables-legacy", "-w", "-D", "INPUT", "-j", "jw-sshd")
    ns.run("iptables-legacy", "-w", "-A", "INPUT", "-s", "198.51.100.9", "-j", "ACCEPT")
    ns.run("iptables-legacy", "-w", "-A", "INPUT", "-j", "jw-sshd")  # moved below the admin's ACCEPT
    in_ns(ns, "b.setup()")
    assert rules(ns)[4:] == ["-A INPUT -s 198.51.100.9/32 -j ACCEPT", "-A INPUT -j jw-sshd"]

    ns.run("iptables-legacy", "-w", "-I", "INPUT", "-j", "jw-sshd")
    in_ns(ns, "b.setup()")
    assert rules(ns)[4:] == ["-A INPUT -j jw-sshd", "-A INPUT -s 198.51.100.9/32 -j ACCEPT"]

def test_setup_with_other_options_replaces_the_jump(ns):
    in_ns(ns, "b.setup()", protocol="tcp", ports=(22,))
    in_ns(ns, "b.setup()", chain="INPUT", ports=(80,))   # no protocol: one jump per protocol

    assert [line for line in rules(ns) if line.startswith("-A INPUT")] == [
        "-A INPUT -p tcp -m multiport --dports 80 -j jw-sshd", "-A INPUT -p udp -m multiport --dports 80 -j jw-sshd",
        "-A INPUT -p sctp -m multiport --dports 80 -j jw-sshd"]


def test_ban_v4_v6_and_networks_shows_in_kernel_and_list_then_unban_empties(ns):
    listed = in_ns(ns, """
        b.setup()
        b.ban(ip("192.0.2.7"), 600); b.ban(ip("2001:db8::7"), None)
        b.ban(net("198.51.100.0/24"), 300); b.ban(net("2001:db8:1::/64"), 30)
        b.ban(ip("::ffff:203.0.113.9"), 600)   # IPv4-mapped: banned as IPv4
        b.ban(ip("192.0.2.7"), 60)             # again: no second rule
        print(json.dumps(listed(b)))
    """)

    assert rules(ns, 4, "jw-sshd") == ["-N jw-sshd", "-A jw-sshd -s 192.0.2.7/32 -j DROP",
                                       "-A jw-sshd -s 198.51.100.0/24 -j DROP", "-A jw-sshd -s 203.0.113.9/32 -j DROP"]
    assert rules(ns, 6, "jw-sshd") == ["-N jw-sshd", "-A jw-sshd -s 2001:db8::7/128 -j DROP",
                                       "-A jw-sshd -s 2001:db8:1::/64 -j DROP"]
    # No expiry in iptables: every ttl is None.
    assert listed == {"192.0.2.7": None, "198.51.100.0/24": None, "203.0.113.9": None, "2001:db8::7": None,
                      "2001:db8:1::/64": None}

    left = in_ns(ns, """
        for target in (ip("192.0.2.7"), ip("203.0.113.9"), ip("2001:db8::7"), net("198.51.100.0/24"),
                       net("2001:db8:1::/64")):
            b.unban(target)
        b.unban(ip("192.0.2.99")); b.unban(net("10.0.0.0/8"))   # not banned: no error
        print(json.dumps(listed(b)))
    """)
    assert left == {}
    assert rules(ns, 4, "jw-sshd") == ["-N jw-sshd"] and rules(ns, 6, "jw-sshd") == ["-N jw-sshd"]


def test_ban_with_another_action_replaces_the_rule(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.8'), None)")
    in_ns(ns, "b.ban(ip('192.0.2.8'), None)", action="reject")

    assert rules(ns, 4, "jw-sshd") == ["-N jw-sshd", "-A jw-sshd -s 192.0.2.8/32 -j REJECT --reject-with "
                                       "icmp-port-unreachable"]
    in_ns(ns, "b.unban(ip('192.0.2.8'))")
    assert rules(ns, 4, "jw-sshd") == ["-N jw-sshd"]

    # A rule an administrator put into the jail's chain by hand, with other REJECT options.
    ns.run("iptables-legacy", "-w", "-A", "jw-sshd", "-s", "192.0.2.9", "-j", "REJECT", "--reject-with",
           "icmp-host-prohibited")
    assert in_ns(ns, "print(json.dumps(listed(b)))") == {"192.0.2.9": None}
    in_ns(ns, "b.unban(ip('192.0.2.9'))")
    assert rules(ns, 4, "jw-sshd") == ["-N jw-sshd"]


def test_bad_items_in_ban_many_are_named_and_the_rest_is_banned(ns):
    error = in_ns(ns, """
        b.setup()
        try:
            b.ban_many([(ip("192.0.2.1"), 60), ("192.0.2.2", 60), (ip("192.0.2.3"), -5),
                        (net("0.0.0.0/0"), None), (ip("2001:db8::1"), None)])
        except Exception as e:
            print(json.dumps(str(e)))
    """)

    assert "ban 3 of 5 targets in jail sshd" in error
    assert "('192.0.2.2', 60): '192.0.2.2' is not an ipaddress address" in error
    assert "(IPv4Address('192.0.2.3'), -5): ttl -5 is not a positive number" in error
    assert "0.0.0.0/0 would ban every address" in error
    assert rules(ns, 4, "jw-sshd")[1:] == ["-A jw-sshd -s 192.0.2.1/32 -j DROP"]
    assert rules(ns, 6, "jw-sshd")[1:] == ["-A jw-sshd -s 2001:db8::1/128 -j DROP"]


def test_teardown_removes_only_this_jails_chain_and_jump(ns):
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        ns.run(tool, "-w", "-N", "foreign")
        ns.run(tool, "-w", "-A", "foreign", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
        ns.run(tool, "-w", "-A", "INPUT", "-j", "foreign")
    before = {version: rules(ns, version) for version in (4, 6)}
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.10'), 600)", jail="nginx")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.11'), 600); b.ban(ip('2001:db8::11'), 600); b.teardown(); b.teardown()")

    assert rules(ns, 4, "jw-nginx") == ["-N jw-nginx", "-A jw-nginx -s 192.0.2.10/32 -j DROP"]
    assert not [line for line in rules(ns) + rules(ns, 6) if "jw-sshd" in line]

    in_ns(ns, "b.teardown()", jail="nginx")
    assert {version: rules(ns, version) for version in (4, 6)} == before


def test_setup_after_a_crash_adopts_the_bans_left_in_the_kernel(ns):
    crashed = ns.run_python(PREFIX + "import os; b = IptablesBackend('sshd'); b.setup(); b.ban(ip('192.0.2.12'), 600)\n"
                            "os.kill(os.getpid(), 9)")
    assert crashed.returncode == -9

    listed = in_ns(ns, "b.setup(); print(json.dumps(listed(b)))")

    assert listed == {"192.0.2.12": None}
    assert rules(ns) == ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT", "-N jw-sshd",
                         "-A INPUT -j jw-sshd", "-A jw-sshd -s 192.0.2.12/32 -j DROP"]


def test_setup_repairs_what_an_administrator_flushed_or_deleted(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.13'), 600)")
    ns.run("iptables-legacy", "-w", "-F", "jw-sshd")
    ns.run("iptables-legacy", "-w", "-D", "INPUT", "-j", "jw-sshd")
    listed = in_ns(ns, "b.setup(); before = listed(b); b.ban(ip('192.0.2.14'), 600); print(json.dumps(before))")
    assert listed == {}
    assert rules(ns)[3:] == ["-N jw-sshd", "-A INPUT -j jw-sshd", "-A jw-sshd -s 192.0.2.14/32 -j DROP"]

    # Chain and jump deleted while the agent runs: the next ban puts both back.
    ns.run("iptables-legacy", "-w", "-D", "INPUT", "-j", "jw-sshd")
    ns.run("iptables-legacy", "-w", "-F", "jw-sshd")
    ns.run("iptables-legacy", "-w", "-X", "jw-sshd")
    in_ns(ns, "b.ban(ip('192.0.2.15'), 600)")
    assert rules(ns)[3:] == ["-N jw-sshd", "-A INPUT -j jw-sshd", "-A jw-sshd -s 192.0.2.15/32 -j DROP"]


def test_a_rule_an_administrator_added_with_other_matches_is_not_taken_for_a_ban(ns):
    in_ns(ns, "b.setup()")
    ns.run("iptables-legacy", "-w", "-A", "jw-sshd", "-s", "192.0.2.50", "-p", "udp", "-j", "DROP")
    ns.run("iptables-legacy", "-w", "-A", "jw-sshd", "-s", "192.0.2.51", "-i", "lo", "-j", "DROP")
    ns.run("ip6tables-legacy", "-w", "-A", "jw-sshd", "-s", "2001:db8::52", "-m", "tcp", "-p", "tcp",
           "--dport", "22", "-j", "REJECT")

    listed = in_ns(ns, "b.ban(ip('192.0.2.50'), 600); b.ban(ip('2001:db8::52'), 600); print(json.dumps(listed(b)))")

    # Both addresses got a ban of their own: the udp-only DROP would have left TCP open.
    assert listed == {"192.0.2.50": None, "2001:db8::52": None}
    assert "-A jw-sshd -s 192.0.2.50/32 -j DROP" in rules(ns, 4, "jw-sshd")
    assert "-A jw-sshd -s 2001:db8::52/128 -j DROP" in rules(ns, 6, "jw-sshd")
    in_ns(ns, "b.unban(ip('192.0.2.50'))")
    assert rules(ns, 4, "jw-sshd")[1:] == ["-A jw-sshd -s 192.0.2.50/32 -p udp -j DROP",
                                           "-A jw-sshd -s 192.0.2.51/32 -i lo -j DROP"]


def test_two_jails_banning_from_two_threads_at_once_lose_nothing(ns):
    """python-iptables shares one table handle per process between every jail and thread."""
    counts = in_ns(ns, """
        import threading
        jails = [IptablesBackend(name) for name in ("one", "two", "three")]
        for jail in jails:
            jail.setup()
        def ban(jail, base):
            for i in range(40):
                jail.ban(ip(base + i), None)
                jail.list()
        threads = [threading.Thread(target=ban, args=(jail, 0xC0000200 + 64 * n)) for n, jail in enumerate(jails)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps([len(jail.list()) for jail in jails]))
    """)

    assert counts == [40, 40, 40]
    assert [len(rules(ns, 4, f"jw-{name}")) for name in ("one", "two", "three")] == [41, 41, 41]

def test_only_the_filter_table_is_touched(ns):
    # python-iptables opens every table to resolve a jump target, which creates them in the kernel.
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.16'), None); b.ban(ip('2001:db8::16'), None); b.list(); b.teardown()")

    assert ns.run("cat", "/proc/net/ip_tables_names").stdout.split() == ["filter"]
    assert ns.run("cat", "/proc/net/ip6_tables_names").stdout.split() == ["filter"]


def test_options_are_checked_when_the_backend_is_built(ns):
    errors = in_ns(ns, """
        from firewall import BackendError
        errors = []
        for jail, options in (("a-jail-name-of-26-chars-xx", {}), ("sshd", {"chain": "bad name"}),
                              ("sshd", {"action": "tarpit"}), ("sshd", {"ports": tuple(range(1, 17))}),
                              ("sshd", {"protocol": "icmp"}), ("sshd", {"jail_chain": "INPUT"})):
            try:
                IptablesBackend(jail, **options)
            except BackendError as e:
                errors.append(e.reason)
        IptablesBackend("a-jail-name-of-26-chars-xx", jail_chain="jw-long")
        print(json.dumps(errors))
    """)

    assert len(errors) == 6
    assert "'jw-a-jail-name-of-26-chars-xx' is not a usable iptables chain name" in errors[0]
    assert "at most 28 characters" in errors[0] and "set the option jail_chain" in errors[0]
    assert "at most 15 ports" in errors[3] and "both 'INPUT'" in errors[5]


def test_without_cap_net_admin_the_error_says_so(ns):
    require_tools("setpriv")
    result = ns.run_python(PREFIX + "IptablesBackend('sshd').setup()", wrapper=NO_NET_ADMIN)
    assert result.returncode != 0
    assert "BackendError" in result.stderr and "CAP_NET_ADMIN" in result.stderr


def test_ban_many_of_10000_is_one_commit_per_table_and_fast(ns):
    result = in_ns(ns, """
        import iptc
        commits = []
        real = iptc.Table.commit   # Table6 inherits it
        iptc.Table.commit = lambda table: commits.append(type(table).__name__) or real(table)
        b.setup(); commits.clear()
        items = [(ip(f"10.{i >> 8 & 255}.{i & 255}.1"), 3600) for i in range(5000)]
        items += [(ip(f"2001:db8::{i:x}"), None) for i in range(5000)]
        start = time.perf_counter(); b.ban_many(items); seconds = time.perf_counter() - start
        start = time.perf_counter(); count = len(b.list()); list_seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "commits": commits, "listed": count, "list_seconds": list_seconds}))
    """)

    print(f"\nban_many of 10,000: {result['seconds']:.3f} s ({10_000 / result['seconds']:,.0f} bans/s) in "
          f"commits {result['commits']}; list() {result['list_seconds']:.3f} s")
    assert result["commits"] == ["Table", "Table6"] and result["listed"] == 10_000
    assert result["seconds"] < 5.0
    assert len(rules(ns, 4, "jw-sshd")) == 5001 and len(rules(ns, 6, "jw-sshd")) == 5001


# -- packets

@pytest.fixture
def pair(interpreter):
    require_root()
    require_tools(*TOOLS)
    with listening_pair("jwipt", interpreter) as link:
        yield link


def test_packets_from_a_banned_address_are_dropped_until_unban(pair):
    link = pair
    in_ns(link.a, "b.setup()")

    in_ns(link.a, f"b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), 600)")
    assert link.connect(link.a4) == "TimeoutError" and link.connect(link.a6) == "TimeoutError"

    in_ns(link.a, f"b.unban(ip({link.b4!r})); b.unban(ip({link.b6!r}))")
    assert link.connect(link.a4) == "connected" and link.connect(link.a6) == "connected"

    in_ns(link.a, f"b.ban(net({link.b4 + '/24'!r}, strict=False), None)")  # a network
    assert link.connect(link.a4) == "TimeoutError"
    in_ns(link.a, f"b.unban(net({link.b4 + '/24'!r}, strict=False))")
    assert link.connect(link.a4) == "connected"


def test_reject_on_the_jails_port_refuses_at_once_and_leaves_other_ports(pair):
    link = pair
    options = {"action": "reject", "protocol": "tcp", "ports": (8022,)}
    in_ns(link.a, f"b.setup(); b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), 600)", **options)

    # ICMP port unreachable: refused, not left to time out; the other port is not the jail's. Over
    # veth the ICMPv6 error can arrive while connect() still holds the socket lock (the kernel
    # counts TcpExtLockDroppedIcmps), so the refusal may only come with the SYN resent after 1 s.
    assert link.connect(link.a4, timeout=3) == "ConnectionRefusedError"
    assert link.connect(link.a6, timeout=3) == "ConnectionRefusedError"
    assert link.connect(link.a4, 8023) == "connected" and link.connect(link.a6, 8023) == "connected"
    in_ns(link.a, f"b.unban(ip({link.b4!r})); b.unban(ip({link.b6!r}))", **options)
    assert link.connect(link.a4) == "connected" and link.connect(link.a6) == "connected"
