"""The ipset backend against the real kernel, inside network namespaces created per test: what
`ipset save` and `iptables-legacy -S` / `ip6tables-legacy -S` show after each call, adoption
after a crash or an administrator's flush, batching, expiry by the kernel alone, and packets
really dropped or rejected between two namespaces."""

from __future__ import annotations

import textwrap

import pytest

from firewall import BackendError
from firewall.ipset import IpsetBackend

from .conftest import require_root, require_tools
from .netns import NO_NET_ADMIN, NetworkNamespace, listening_pair
from .polling import wait_until

PREFIX = ("import ipaddress, json, time\nfrom firewall.ipset import IpsetBackend\n"
          "ip, net = ipaddress.ip_address, ipaddress.ip_network\n")
TOOLS = ("ip", "ipset", "iptables-legacy", "ip6tables-legacy")


@pytest.fixture(autouse=True)
def private_xtables_lock(tmp_path, monkeypatch):
    """A lock file of our own for the backend and iptables-legacy (both read XTABLES_LOCKFILE):
    /run/xtables.lock is one for all namespaces, and other tests' namespaces may hold it long."""
    monkeypatch.setenv("XTABLES_LOCKFILE", str(tmp_path / "xtables.lock"))


@pytest.fixture
def ns(interpreter):
    require_root()
    require_tools(*TOOLS)
    with NetworkNamespace("jwips", interpreter) as namespace:
        yield namespace


def in_ns(namespace: NetworkNamespace, body: str, jail: str = "sshd", **options):
    """Run `body` in the namespace with `b` the jail's backend; returns the JSON it printed last."""
    code = PREFIX + f"b = IpsetBackend({jail!r}, **{options!r})\n" + textwrap.dedent(body)
    return namespace.python(code)


def error_of(namespace: NetworkNamespace, call: str, jail: str = "sshd", **options) -> str:
    """The BackendError text `call` raises in the namespace ('' if it raises none)."""
    return in_ns(namespace, f"""
        from firewall import BackendError
        try:
            {call}
            print(json.dumps(""))
        except BackendError as e:
            print(json.dumps(str(e)))
    """, jail, **options)


def saved(namespace: NetworkNamespace) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The kernel's sets from `ipset save`: `{name: create options}`, `{name: {entry: timeout}}`."""
    sets: dict[str, str] = {}
    members: dict[str, dict[str, int]] = {}
    for line in namespace.run("ipset", "save").stdout.splitlines():
        verb, name, rest = line.split(" ", 2)
        if verb == "create":
            sets[name], members[name] = rest, {}
        else:
            entry, _, timeout = rest.partition(" timeout ")
            members[name][entry] = int(timeout) if timeout else -1
    return sets, members


def hooks(namespace: NetworkNamespace, version: int = 4, chain: str = "INPUT") -> list[str]:
    """The rules of `chain` as `iptables-legacy -S` prints them."""
    tool = "iptables-legacy" if version == 4 else "ip6tables-legacy"
    return [line for line in namespace.run(tool, "-S", chain).stdout.splitlines() if line.startswith("-A")]


def test_setup_twice_creates_two_hash_net_sets_with_timeouts_and_one_hook_rule_each(ns):
    in_ns(ns, "b.setup(); b.setup()")

    sets, members = saved(ns)
    assert set(sets) == {"jw-sshd-4", "jw-sshd-6"}
    assert sets["jw-sshd-4"].startswith("hash:net family inet ") and " timeout 0 " in sets["jw-sshd-4"]
    assert sets["jw-sshd-6"].startswith("hash:net family inet6 ") and " timeout 0 " in sets["jw-sshd-6"]
    assert "maxelem 1048576" in sets["jw-sshd-4"] and members == {"jw-sshd-4": {}, "jw-sshd-6": {}}
    assert hooks(ns, 4) == ["-A INPUT -m set --match-set jw-sshd-4 src -j DROP"]
    assert hooks(ns, 6) == ["-A INPUT -m set --match-set jw-sshd-6 src -j DROP"]


def test_ban_v4_v6_and_networks_shows_in_kernel_and_list_then_unban_empties(ns):
    listed = in_ns(ns, """
        b.setup()
        b.ban(ip("192.0.2.7"), 600); b.ban(ip("2001:db8::7"), None)
        b.ban(net("198.51.100.0/24"), 300); b.ban(net("2001:db8:1::/64"), 30.2)
        b.ban(ip("::ffff:203.0.113.9"), 600)   # IPv4-mapped: stored as IPv4
        b.ban(net("192.0.2.64/32"), 600)       # a network of one address is that address
        print(json.dumps({str(k): v for k, v in b.list().items()}))
    """)

    _, members = saved(ns)
    assert set(members["jw-sshd-4"]) == {"192.0.2.7", "203.0.113.9", "198.51.100.0/24", "192.0.2.64"}
    assert 590 <= members["jw-sshd-4"]["192.0.2.7"] <= 600 and 290 <= members["jw-sshd-4"]["198.51.100.0/24"] <= 300
    assert members["jw-sshd-6"]["2001:db8::7"] == 0  # timeout 0: the kernel never expires it
    assert 25 <= members["jw-sshd-6"]["2001:db8:1::/64"] <= 31  # whole seconds, rounded up
    assert set(listed) == {"192.0.2.7", "203.0.113.9", "198.51.100.0/24", "192.0.2.64", "2001:db8::7",
                           "2001:db8:1::/64"}
    assert 590 <= listed["192.0.2.7"] <= 600 and listed["2001:db8::7"] is None

    left = in_ns(ns, """
        for target in (ip("192.0.2.7"), ip("203.0.113.9"), ip("2001:db8::7"), net("198.51.100.0/24"),
                       net("2001:db8:1::/64"), ip("192.0.2.64")):
            b.unban(target)
        b.unban(ip("192.0.2.99")); b.unban(net("10.0.0.0/8"))   # not banned: no error
        print(json.dumps(len(b.list())))
    """)
    assert left == 0 and saved(ns)[1] == {"jw-sshd-4": {}, "jw-sshd-6": {}}


def test_ban_again_replaces_the_ttl_and_a_ttl_beyond_the_kernel_maximum_is_clamped(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.8'), 600); b.ban(ip('192.0.2.8'), 60)")
    assert 55 <= saved(ns)[1]["jw-sshd-4"]["192.0.2.8"] <= 60

    in_ns(ns, "b.ban(ip('192.0.2.8'), None)")
    assert saved(ns)[1]["jw-sshd-4"]["192.0.2.8"] == 0

    logged = in_ns(ns, """
        import io, logging
        stream = io.StringIO(); logging.basicConfig(stream=stream)
        b.ban(ip('192.0.2.8'), 400 * 86400)
        print(json.dumps(stream.getvalue()))
    """)
    assert 2147400 <= saved(ns)[1]["jw-sshd-4"]["192.0.2.8"] <= 2147483  # about 24.8 days
    assert "1 ban(s) longer than the kernel's ipset maximum of 2147483 s (24.8 days) clamped to it" in logged


def test_a_ban_ends_in_the_kernel_without_the_agent(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.9'), 1); b.ban(ip('192.0.2.10'), 600)")  # the process then exits

    wait_until(lambda: "192.0.2.9" not in saved(ns)[1]["jw-sshd-4"], "the kernel to remove the 1 s ban")
    assert "192.0.2.10" in saved(ns)[1]["jw-sshd-4"]


def test_bad_items_in_ban_many_are_named_and_the_rest_is_banned(ns):
    error = error_of(ns, """b.setup(); b.ban_many([(ip("192.0.2.1"), 60), ("192.0.2.2", 60), (ip("192.0.2.3"), -5),
                    (net("0.0.0.0/0"), 60), (net("203.0.113.0/24"), 60), (ip("2001:db8::3"), 0)])""")

    assert "ipset: ban 4 of 6 targets in jail sshd" in error
    assert "('192.0.2.2', 60): a str, not an ipaddress address or network" in error
    assert "(IPv4Address('192.0.2.3'), -5): ttl -5 is not seconds above 0" in error
    assert "(IPv4Network('0.0.0.0/0'), 60): a /0 network would ban everyone" in error
    assert "(IPv6Address('2001:db8::3'), 0): ttl 0" in error
    assert set(saved(ns)[1]["jw-sshd-4"]) == {"192.0.2.1", "203.0.113.0/24"}


def test_teardown_removes_hook_rules_then_sets_and_nothing_else(ns):
    ns.run("ipset", "create", "foreign", "hash:ip")
    ns.run("iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
    ns.run("iptables-legacy", "-A", "INPUT", "-m", "set", "--match-set", "foreign", "src", "-j", "DROP")
    ns.run("ip6tables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.10'), 600)", jail="nginx")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.11'), 600); b.teardown(); b.teardown()")

    sets, members = saved(ns)
    assert set(sets) == {"foreign", "jw-nginx-4", "jw-nginx-6"} and set(members["jw-nginx-4"]) == {"192.0.2.10"}
    assert hooks(ns, 4) == ["-A INPUT -m set --match-set jw-nginx-4 src -j DROP",
                            "-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT",
                            "-A INPUT -m set --match-set foreign src -j DROP"]

    in_ns(ns, "b.teardown()", jail="nginx")
    assert set(saved(ns)[0]) == {"foreign"}
    assert hooks(ns, 4) == ["-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT",
                            "-A INPUT -m set --match-set foreign src -j DROP"]
    assert hooks(ns, 6) == ["-A INPUT -p udp -m udp --dport 9 -j ACCEPT"]


def test_teardown_names_the_rule_an_administrator_added_on_our_set(ns):
    in_ns(ns, "b.setup()")
    ns.run("iptables-legacy", "-A", "FORWARD", "-m", "set", "--match-set", "jw-sshd-4", "src", "-j", "DROP")

    error = error_of(ns, "b.teardown()")
    assert "set jw-sshd-4 is still used by rules in filter chain(s) FORWARD" in error
    assert hooks(ns, 4) == [] and "jw-sshd-4" in saved(ns)[0]

    ns.run("iptables-legacy", "-F", "FORWARD")
    in_ns(ns, "b.teardown()")
    assert saved(ns)[0] == {}


def test_setup_after_a_crash_adopts_the_sets_the_bans_and_the_hook_rules(ns):
    crashed = ns.run_python(PREFIX + "import os; b = IpsetBackend('sshd'); b.setup(); b.ban(ip('192.0.2.12'), 600)\n"
                            "os.kill(os.getpid(), 9)")
    assert crashed.returncode == -9

    listed = in_ns(ns, "b.setup(); print(json.dumps({str(k): v for k, v in b.list().items()}))")

    assert list(listed) == ["192.0.2.12"] and 590 <= listed["192.0.2.12"] <= 600
    assert hooks(ns, 4) == ["-A INPUT -m set --match-set jw-sshd-4 src -j DROP"] and len(hooks(ns, 6)) == 1


def test_setup_repairs_what_an_administrator_flushed_or_destroyed(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.13'), 600)")
    ns.run("ipset", "flush", "jw-sshd-4")
    ns.run("iptables-legacy", "-F", "INPUT")

    listed = in_ns(ns, "b.setup(); print(json.dumps(len(b.list()))); b.ban(ip('192.0.2.14'), 600)")
    assert listed == 0 and set(saved(ns)[1]["jw-sshd-4"]) == {"192.0.2.14"}
    assert hooks(ns, 4) == ["-A INPUT -m set --match-set jw-sshd-4 src -j DROP"]

    ns.run("ip6tables-legacy", "-F", "INPUT")
    ns.run("ipset", "destroy", "jw-sshd-6")
    in_ns(ns, "b.setup()")
    assert "jw-sshd-6" in saved(ns)[0] and hooks(ns, 6) == ["-A INPUT -m set --match-set jw-sshd-6 src -j DROP"]


def test_changed_action_and_ports_replace_the_hook_rule(ns):
    in_ns(ns, "b.setup()")
    in_ns(ns, "b.setup()", action="reject", ports=(22, 2222), protocol="tcp")

    assert hooks(ns, 4) == ["-A INPUT -p tcp -m multiport --dports 22,2222 -m set --match-set jw-sshd-4 src "
                            "-j REJECT --reject-with icmp-port-unreachable"]
    assert hooks(ns, 6) == ["-A INPUT -p tcp -m multiport --dports 22,2222 -m set --match-set jw-sshd-6 src "
                            "-j REJECT --reject-with icmp6-port-unreachable"]


def test_the_hook_goes_at_the_top_of_the_chosen_chain_which_must_exist(ns):
    error = error_of(ns, "b.setup()", chain="DOCKER-USER")
    assert "chain DOCKER-USER does not exist in the legacy iptables filter table" in error

    for tool in ("iptables-legacy", "ip6tables-legacy"):
        ns.run(tool, "-N", "DOCKER-USER")
        ns.run(tool, "-A", "DOCKER-USER", "-j", "RETURN")
    in_ns(ns, "b.setup(); b.setup()", chain="DOCKER-USER", ports=53, protocol="udp")

    assert hooks(ns, 4, "DOCKER-USER") == [
        "-A DOCKER-USER -p udp -m multiport --dports 53 -m set --match-set jw-sshd-4 src -j DROP",
        "-A DOCKER-USER -j RETURN"]
    assert len(hooks(ns, 6, "DOCKER-USER")) == 2 and hooks(ns, 4) == []


def test_a_set_of_another_type_is_refused_with_the_way_out(ns):
    ns.run("ipset", "create", "jw-sshd-4", "hash:ip", "timeout", "0")
    error = error_of(ns, "b.setup()")
    assert "set jw-sshd-4 exists as hash:ip, IPv4, with timeouts, but this backend needs hash:net, IPv4" in error
    assert "ipset destroy jw-sshd-4" in error

    ns.run("ipset", "destroy", "jw-sshd-4")
    ns.run("ipset", "create", "jw-sshd-4", "hash:net")
    assert "exists as hash:net, IPv4, without timeouts" in error_of(ns, "b.setup()")


def test_a_set_type_the_kernel_lacks_names_the_module(ns):
    error = error_of(ns, "import firewall._ipset_netlink as n; n.SET_TYPE = 'hash:jailwarden'; b.setup()")
    assert "the kernel lacks set type hash:jailwarden: load kernel module ip_set_hash_jailwarden" in error


def test_without_cap_net_admin_the_error_says_so(ns):
    require_tools("setpriv")
    result = ns.run_python(PREFIX + "IpsetBackend('sshd').setup()", wrapper=NO_NET_ADMIN)
    assert result.returncode != 0
    assert "Operation not permitted" in result.stderr and "CAP_NET_ADMIN" in result.stderr


def test_jail_names_and_options_ipset_cannot_take_are_refused_before_any_kernel_call():
    assert IpsetBackend("a" * 26).set_names == {4: f"jw-{'a' * 26}-4", 6: f"jw-{'a' * 26}-6"}
    with pytest.raises(BackendError, match="longer than ipset's 31 characters: shorten the jail name to at most 26"):
        IpsetBackend("a" * 27)
    with pytest.raises(BackendError, match="a jail name for ipset may use"):
        IpsetBackend("ssh d")
    with pytest.raises(BackendError, match="action 'accept': use one of drop, reject"):
        IpsetBackend("sshd", action="accept")
    with pytest.raises(BackendError, match="up to 15 port numbers"):
        IpsetBackend("sshd", ports=range(1, 17))
    with pytest.raises(BackendError, match="protocol 'icmp'"):
        IpsetBackend("sshd", ports=(22,), protocol="icmp")


def test_from_an_event_loop_it_says_to_use_a_thread_and_from_a_thread_it_works(ns):
    first_error, listed = in_ns(ns, """
        import asyncio
        from firewall import BackendError
        async def main():
            try:
                b.setup()
            except BackendError as e:
                error = str(e)
            await asyncio.to_thread(b.setup)
            await asyncio.to_thread(b.ban, ip("192.0.2.20"), None)
            return error, {str(k): v for k, v in (await asyncio.to_thread(b.list)).items()}
        print(json.dumps(asyncio.run(main())))
    """)
    assert "called in a thread that runs an asyncio event loop: call it through asyncio.to_thread" in first_error
    assert listed == {"192.0.2.20": None}


def test_ban_many_of_10000_is_batched_and_fast(ns):
    result = in_ns(ns, """
        import firewall._ipset_netlink as netlink
        messages = []
        real = netlink.IpsetSocket._send_add
        netlink.IpsetSocket._send_add = lambda self, *args: messages.append(1) or real(self, *args)
        b.setup()
        items = [(ip(f"10.{i >> 8 & 255}.{i & 255}.1"), 3600) for i in range(5000)]
        items += [(ip(f"2001:db8::{i:x}"), None) for i in range(5000)]
        start = time.perf_counter(); b.ban_many(items); seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "messages": len(messages), "listed": len(b.list())}))
    """)

    print(f"\nban_many of 10,000: {result['seconds']:.3f} s in {result['messages']} netlink messages")
    assert result["messages"] <= 12 and result["listed"] == 10_000
    assert result["seconds"] < 1.0
    _, members = saved(ns)
    assert len(members["jw-sshd-4"]) == 5000 and len(members["jw-sshd-6"]) == 5000


# -- packets

@pytest.fixture
def pair(interpreter):
    require_root()
    require_tools(*TOOLS)
    with listening_pair("jwip", interpreter) as link:
        yield link


def test_packets_from_a_banned_address_are_dropped_until_unban_or_kernel_expiry(pair):
    link = pair
    in_ns(link.a, "b.setup()")

    in_ns(link.a, f"b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), 600)")
    assert link.connect(link.a4) == "TimeoutError" and link.connect(link.a6) == "TimeoutError"

    in_ns(link.a, f"b.unban(ip({link.b4!r})); b.unban(ip({link.b6!r}))")
    assert link.connect(link.a4) == "connected" and link.connect(link.a6) == "connected"

    # Networks, ended by the kernel alone: the process that banned them has exited.
    in_ns(link.a, f"b.ban(net({link.b4 + '/24'!r}, strict=False), 2); b.ban(net({link.b6 + '/64'!r}, strict=False), 2)")
    assert link.connect(link.a4) == "TimeoutError" and link.connect(link.a6) == "TimeoutError"
    wait_until(lambda: link.connect(link.a4) == "connected", "the kernel to expire the 2 s IPv4 ban")
    wait_until(lambda: link.connect(link.a6) == "connected", "the kernel to expire the 2 s IPv6 ban")


def test_reject_on_the_jails_port_refuses_at_once_and_leaves_other_ports(pair):
    link = pair
    options = {"action": "reject", "protocol": "tcp", "ports": (8022,)}
    in_ns(link.a, f"b.setup(); b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), None)", **options)

    assert link.connect(link.a4) == "ConnectionRefusedError"  # ICMP port unreachable, not a timeout
    # Seen on Linux 6.18: TCP ignores the ICMPv6 error to the first SYN, and takes the one to the
    # SYN sent again after 1 s.
    assert link.connect(link.a6, timeout=3) == "ConnectionRefusedError"
    assert link.connect(link.a4, 8023) == "connected" and link.connect(link.a6, 8023) == "connected"
    in_ns(link.a, f"b.unban(ip({link.b4!r}))", **options)
    assert link.connect(link.a4) == "connected"
