"""The route backend against the real kernel, inside network namespaces created per test: what
`ip route` shows after each call, jails kept apart by their metric, foreign routes left alone,
adoption after a crash or an administrator's flush, batching, and a blackhole route really
cutting a TCP connection off (the SYN still arrives; the answer has no way back).

Routes have no expiry, so there is no kernel-expiry test here: the agent unbans.
"""

from __future__ import annotations

import json
import textwrap
import zlib

import pytest

from firewall._route_netlink import BATCH

from .conftest import require_root, require_tools
from .netns import NO_NET_ADMIN, NetworkNamespace, listening_pair
from .polling import wait_until

PREFIX = ("import ipaddress, json, time\nfrom firewall.route import RouteBackend\n"
          "ip, net = ipaddress.ip_address, ipaddress.ip_network\n"
          "def listed(b): return {str(k): v for k, v in b.list().items()}\n")


def metric(jail: str) -> int:
    """The default metric of a jail, as the backend documents it."""
    return 40_000 + zlib.crc32(jail.encode()) % 20_000


@pytest.fixture
def ns(interpreter):
    require_root()
    require_tools("ip")
    with NetworkNamespace("jwrt", interpreter) as namespace:
        yield namespace


def in_ns(namespace: NetworkNamespace, body: str, jail: str = "sshd", **options):
    """Run `body` in the namespace with `b` the jail's backend; returns the JSON it printed last."""
    code = PREFIX + f"b = RouteBackend({jail!r}, **{options!r})\n" + textwrap.dedent(body)
    return namespace.python(code)


def routes(namespace: NetworkNamespace, protocol: str | None = "149") -> set[tuple[str, str, int]]:
    """The kernel's own view: {(type, destination, metric)} of the routes with that protocol
    (None: the administrator's `ip route add` routes, protocol boot) in every table."""
    found = set()
    for family in ("-4", "-6"):
        for route in json.loads(namespace.run("ip", "-j", family, "route", "show", "table", "all").stdout):
            if route.get("protocol") == protocol and route.get("table") != "local":
                found.add((route["type"], route["dst"], route.get("metric", 0)))
    return found


def test_setup_twice_needs_no_kernel_objects_and_lists_nothing(ns):
    assert in_ns(ns, "b.setup(); b.setup(); print(json.dumps(listed(b)))") == {}
    assert routes(ns) == set()


def test_ban_v4_v6_and_networks_shows_in_kernel_and_list_then_unban_empties(ns):
    listed = in_ns(ns, """
        b.setup()
        b.ban(ip("192.0.2.7"), 600); b.ban(ip("2001:db8::7"), None)
        b.ban(net("198.51.100.0/24"), 300); b.ban(net("2001:db8:1::/64"), 30)
        b.ban(ip("::ffff:203.0.113.9"), 600)   # IPv4-mapped: banned as IPv4
        b.ban(ip("192.0.2.7"), 60)             # again: still one route
        print(json.dumps(listed(b)))
    """)

    m = metric("sshd")
    assert routes(ns) == {("blackhole", "192.0.2.7", m), ("blackhole", "198.51.100.0/24", m),
                          ("blackhole", "203.0.113.9", m), ("blackhole", "2001:db8::7", m),
                          ("blackhole", "2001:db8:1::/64", m)}
    # No expiry in the kernel: every ttl is None.
    assert listed == {"192.0.2.7": None, "198.51.100.0/24": None, "203.0.113.9": None, "2001:db8::7": None,
                      "2001:db8:1::/64": None}

    left = in_ns(ns, """
        for target in (ip("192.0.2.7"), ip("203.0.113.9"), ip("2001:db8::7"), net("198.51.100.0/24"),
                       net("2001:db8:1::/64")):
            b.unban(target)
        b.unban(ip("192.0.2.99")); b.unban(net("10.0.0.0/8"))   # not banned: no error
        print(json.dumps(listed(b)))
    """)
    assert left == {} and routes(ns) == set()


def test_kind_option_and_a_changed_kind_replaces_the_route(ns):
    in_ns(ns, "b.ban(ip('192.0.2.8'), None); b.ban(ip('2001:db8::8'), None)", kind="unreachable")
    assert {kind for kind, _, _ in routes(ns)} == {"unreachable"}

    in_ns(ns, "b.ban(ip('192.0.2.8'), None); b.ban(ip('2001:db8::8'), None)", kind="prohibit")
    m = metric("sshd")
    assert routes(ns) == {("prohibit", "192.0.2.8", m), ("prohibit", "2001:db8::8", m)}


def test_two_jails_ban_the_same_address_and_unban_it_independently(ns):
    in_ns(ns, "b.ban(ip('192.0.2.20'), 600)", jail="sshd")
    in_ns(ns, "b.ban(ip('192.0.2.20'), 604800)", jail="recidive")
    assert routes(ns) == {("blackhole", "192.0.2.20", metric("sshd")), ("blackhole", "192.0.2.20", metric("recidive"))}

    listed = in_ns(ns, "b.unban(ip('192.0.2.20')); print(json.dumps(listed(b)))", jail="sshd")
    assert listed == {} and routes(ns) == {("blackhole", "192.0.2.20", metric("recidive"))}
    assert in_ns(ns, "print(json.dumps(listed(b)))", jail="recidive") == {"192.0.2.20": None}


def test_a_foreign_route_with_our_metric_is_named_and_left_alone(ns):
    ns.run("ip", "route", "add", "blackhole", "192.0.2.30", "metric", str(metric("sshd")))
    error = in_ns(ns, """
        try:
            b.ban_many([(ip("192.0.2.30"), None), (ip("192.0.2.31"), None)])
        except Exception as e:
            print(json.dumps(str(e)))
    """)

    assert f"192.0.2.30/32 with metric {metric('sshd')} exists in table 254 that jailwarden did not add" in error
    assert routes(ns) == {("blackhole", "192.0.2.31", metric("sshd"))}
    assert routes(ns, None) == {("blackhole", "192.0.2.30", metric("sshd"))}
    in_ns(ns, "b.unban(ip('192.0.2.30')); b.teardown()")
    assert routes(ns, None) == {("blackhole", "192.0.2.30", metric("sshd"))}


def test_bad_items_in_ban_many_are_named_and_the_rest_is_banned(ns):
    error = in_ns(ns, """
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
    assert {destination for _, destination, _ in routes(ns)} == {"192.0.2.1", "2001:db8::1"}


def test_teardown_removes_only_this_jails_routes(ns):
    ns.run("ip", "route", "add", "blackhole", "198.51.100.7")
    ns.run("ip", "route", "add", "blackhole", "192.0.2.11", "metric", "5")       # same address as a ban
    ns.run("ip", "-6", "route", "add", "blackhole", "2001:db8::11", "proto", "static")
    ns.run("ip", "route", "add", "unreachable", "203.0.113.0/24", "proto", "149", "table", "100")
    foreign = {protocol: routes(ns, protocol) for protocol in (None, "static", "149")}
    in_ns(ns, "b.ban(ip('192.0.2.11'), 600)", jail="nginx")
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.11'), 600); b.ban(ip('2001:db8::11'), 600); b.teardown(); b.teardown()")

    assert routes(ns) == foreign["149"] | {("blackhole", "192.0.2.11", metric("nginx"))}
    in_ns(ns, "b.teardown()", jail="nginx")
    assert {protocol: routes(ns, protocol) for protocol in (None, "static", "149")} == foreign


def test_setup_after_a_crash_adopts_the_bans_left_in_the_kernel(ns):
    crashed = ns.run_python(PREFIX + "import os; b = RouteBackend('sshd'); b.setup(); b.ban(ip('192.0.2.12'), 600)\n"
                            "os.kill(os.getpid(), 9)")
    assert crashed.returncode == -9

    assert in_ns(ns, "b.setup(); print(json.dumps(listed(b)))") == {"192.0.2.12": None}


def test_setup_after_an_administrator_flushed_our_routes(ns):
    in_ns(ns, "b.setup(); b.ban(ip('192.0.2.13'), 600); b.ban(ip('2001:db8::13'), 600)")
    ns.run("ip", "route", "flush", "proto", "149")
    ns.run("ip", "-6", "route", "flush", "proto", "149")

    listed = in_ns(ns, "b.setup(); before = listed(b); b.ban(ip('192.0.2.14'), 600); print(json.dumps(before))")
    assert listed == {} and routes(ns) == {("blackhole", "192.0.2.14", metric("sshd"))}


def test_options_are_checked_when_the_backend_is_built(ns):
    errors = in_ns(ns, """
        from firewall import BackendError
        errors = []
        for options in ({"kind": "drop"}, {"table": 255}, {"table": 0}, {"protocol": 4}, {"protocol": 256},
                        {"metric": 0}, {"metric": True}):
            try:
                RouteBackend("sshd", **options)
            except BackendError as e:
                errors.append(e.reason)
        print(json.dumps(errors))
    """)

    assert len(errors) == 7
    assert "kind must be one of blackhole, unreachable, prohibit" in errors[0]
    assert "0-4 are the kernel's, boot and static routes" in errors[3]


def test_without_cap_net_admin_the_error_says_so(ns):
    require_tools("setpriv")
    result = ns.run_python(PREFIX + "RouteBackend('sshd').setup()", wrapper=NO_NET_ADMIN)
    assert result.returncode != 0
    assert "BackendError" in result.stderr and "CAP_NET_ADMIN" in result.stderr


def test_ban_many_of_10000_is_batched_and_fast(ns):
    result = in_ns(ns, """
        import socket
        sends = []
        class Counting(socket.socket):
            def send(self, data, *flags):
                sends.append(len(data))
                return super().send(data, *flags)
        socket.socket = Counting
        b.setup(); sends.clear()
        items = [(ip(f"10.{i >> 8 & 255}.{i & 255}.1"), 3600) for i in range(5000)]
        items += [(ip(f"2001:db8::{i:x}"), None) for i in range(5000)]
        start = time.perf_counter(); b.ban_many(items); seconds = time.perf_counter() - start
        sent = len(sends)
        start = time.perf_counter(); count = len(b.list()); list_seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "sends": sent, "listed": count, "list_seconds": list_seconds}))
    """)

    print(f"\nban_many of 10,000: {result['seconds']:.3f} s ({10_000 / result['seconds']:,.0f} bans/s) in "
          f"{result['sends']} netlink sends; list() {result['list_seconds']:.3f} s")
    assert result["sends"] == -(-10_000 // BATCH) and result["listed"] == 10_000
    assert result["seconds"] < 5.0
    assert len(routes(ns)) == 10_000


# -- packets

@pytest.fixture
def pair(interpreter):
    require_root()
    require_tools("ip")
    with listening_pair("jwrt", interpreter) as link:
        yield link


def listen_drops(namespace: NetworkNamespace) -> int:
    """TcpExt ListenDrops: SYNs that reached a listener and were dropped (here: no route back)."""
    lines = [line.split() for line in namespace.run("cat", "/proc/net/netstat").stdout.splitlines()]
    names, values = [line for line in lines if line[0] == "TcpExt:"]
    return int(values[names.index("ListenDrops")])


def test_a_blackhole_route_to_the_client_cuts_it_off_until_unban(pair):
    link = pair
    in_ns(link.a, "b.setup()")

    in_ns(link.a, f"b.ban(ip({link.b4!r}), 600); b.ban(ip({link.b6!r}), 600)")
    drops = listen_drops(link.a)
    assert link.connect(link.a4) == "TimeoutError" and link.connect(link.a6) == "TimeoutError"
    # The SYNs did arrive (a route ban stops only the answers): the listener dropped them for
    # want of a route back to the client.
    assert listen_drops(link.a) >= drops + 2

    in_ns(link.a, f"b.unban(ip({link.b4!r})); b.unban(ip({link.b6!r}))")
    wait_until(lambda: link.connect(link.a4) == "connected", "IPv4 connect after unban")
    wait_until(lambda: link.connect(link.a6) == "connected", "IPv6 connect after unban")

    # A network: a /25 is longer than the on-link /24, so it wins the route lookup.
    in_ns(link.a, f"b.ban(net({link.b4 + '/25'!r}, strict=False), None)")
    assert link.connect(link.a4) == "TimeoutError"
    in_ns(link.a, f"b.unban(net({link.b4 + '/25'!r}, strict=False))")
    wait_until(lambda: link.connect(link.a4) == "connected", "IPv4 connect after the network's unban")


def test_a_ban_loses_to_a_route_with_the_same_prefix_and_a_lower_metric(pair):
    # Documented limit: the on-link 10.251.X.0/24 route has metric 0, a ban of that /24 has the jail's.
    link = pair
    in_ns(link.a, f"b.ban(net({link.b4 + '/24'!r}, strict=False), None)")
    assert link.connect(link.a4) == "connected"
