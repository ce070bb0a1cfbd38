"""The nftables backend's objects in libnftables JSON: the shared table, a jail's sets, base chain
and rules, and set elements to and from `ipaddress` targets. Pure data, no I/O."""

from __future__ import annotations

import bisect
import ipaddress
import math
from dataclasses import dataclass

from . import Target

FAMILY = "inet"
TABLE = "jailwarden"
PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True)
class JailSet:
    """One of a jail's four sets: addresses (hash, fast at any size) or networks (interval)."""

    name: str
    version: int  # 4 or 6
    networks: bool

    @property
    def type(self) -> str:
        return f"ipv{self.version}_addr"

    @property
    def flags(self) -> list[str]:
        return ["interval", "timeout"] if self.networks else ["timeout"]

    @property
    def protocol(self) -> str:
        return "ip" if self.version == 4 else "ip6"


def jail_sets(jail: str) -> list[JailSet]:
    return [JailSet(f"{jail}_v4", 4, False), JailSet(f"{jail}_v6", 6, False),
            JailSet(f"{jail}_v4net", 4, True), JailSet(f"{jail}_v6net", 6, True)]


def where(**names: str) -> dict:
    return {"family": FAMILY, "table": TABLE, **names}


def table_command(verb: str) -> dict:
    return {verb: {"table": {"family": FAMILY, "name": TABLE}}}


def set_command(verb: str, jail_set: JailSet) -> dict:
    if verb == "add":
        return {"add": {"set": where(name=jail_set.name, type=jail_set.type, flags=jail_set.flags)}}
    return {verb: {"set": where(name=jail_set.name)}}


def chain_command(verb: str, chain: str, priority: int) -> dict:
    if verb == "add":
        return {"add": {"chain": where(name=chain, type="filter", hook="input", prio=priority, policy="accept")}}
    return {verb: {"chain": where(name=chain)}}


def _match(left: dict, right: object) -> dict:
    return {"match": {"op": "==", "left": left, "right": right}}


def rule_commands(chain: str, sets: list[JailSet], action: str, protocol: str | None,
                  ports: tuple[int, ...]) -> list[dict]:
    """One rule per set: `[protocol/ports] <ip|ip6> saddr @set counter <drop|reject>`."""
    scope: list[dict] = []
    if protocol and ports:
        scope.append(_match({"payload": {"protocol": protocol, "field": "dport"}}, {"set": list(ports)}))
    elif protocol:
        scope.append(_match({"meta": {"key": "l4proto"}}, protocol))
    elif ports:
        # `th dport` needs a transport protocol with ports in front of it.
        scope.append(_match({"meta": {"key": "l4proto"}}, {"set": list(PROTOCOLS)}))
        scope.append(_match({"payload": {"protocol": "th", "field": "dport"}}, {"set": list(ports)}))
    if action == "drop":
        verdict: dict = {"drop": None}
    elif protocol == "tcp":
        verdict = {"reject": {"type": "tcp reset"}}
    else:
        # icmpx picks ICMP or ICMPv6 by family; a TCP client sees "connection refused" either way.
        verdict = {"reject": {"type": "icmpx", "expr": "port-unreachable"}}
    return [{"add": {"rule": where(chain=chain, expr=[
        *scope,
        _match({"payload": {"protocol": jail_set.protocol, "field": "saddr"}}, f"@{jail_set.name}"),
        {"counter": None},
        verdict,
    ])}} for jail_set in sets]


def normalise(target: object) -> Target:
    """An address or network as the kernel stores it: IPv4-mapped IPv6 as IPv4, a full-length
    prefix as the address. Raises TypeError/ValueError for anything else."""
    if isinstance(target, str):
        raise TypeError("a string, not an ipaddress object")
    if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is not None:
        return target.ipv4_mapped
    if isinstance(target, ipaddress.IPv6Network) and target.prefixlen >= 96:
        mapped = target.network_address.ipv4_mapped
        if mapped is not None:
            target = ipaddress.IPv4Network((mapped, target.prefixlen - 96))
    if isinstance(target, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return target.network_address if target.prefixlen == target.max_prefixlen else target
    if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return target
    raise TypeError(f"not an address or network: {type(target).__name__}")


def timeout_seconds(ttl: float | None) -> int | None:
    """libnftables' JSON takes whole seconds and silently ignores anything else (the element would
    then never expire), so round up to an int, never below one second."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return max(1, math.ceil(ttl))


def element(target: Target, timeout: int | None) -> object:
    value: object = str(target)
    if isinstance(target, ipaddress.IPv4Network | ipaddress.IPv6Network):
        value = {"prefix": {"addr": str(target.network_address), "len": target.prefixlen}}
    return value if timeout is None else {"elem": {"val": value, "timeout": timeout}}


def element_command(verb: str, jail_set: JailSet, elements: list[object]) -> dict:
    return {verb: {"element": where(name=jail_set.name, elem=elements)}}


def parse_elements(listing: dict) -> dict[Target, float | None]:
    """`{target: seconds left or None}` from a `list set` JSON answer. A range added by hand is
    reported as the networks that cover it."""
    found: dict[Target, float | None] = {}
    for entry in listing.get("nftables", []):
        for item in entry.get("set", {}).get("elem", []):
            value, ttl = item, None
            if isinstance(item, dict) and "elem" in item:
                value = item["elem"]["val"]
                if "timeout" in item["elem"]:
                    ttl = float(item["elem"].get("expires", 0))
            for target in _targets(value):
                found[target] = ttl
    return found


def _targets(value: object) -> list[Target]:
    if isinstance(value, str):
        return [ipaddress.ip_address(value)]
    if isinstance(value, dict) and "prefix" in value:
        return [normalise(ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}"))]
    if isinstance(value, dict) and "range" in value:
        first, last = (ipaddress.ip_address(bound) for bound in value["range"])
        return [normalise(network) for network in ipaddress.summarize_address_range(first, last)]
    raise ValueError(f"unexpected set element {value!r}")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def fit_networks(present: list[Network], new: list[Network]) -> tuple[list[Network], list[tuple[Network, Network]]]:
    """Which `new` networks an interval set holding `present` can take: it refuses overlapping
    elements, and CIDR blocks overlap only by containment. Returns the accepted networks (those
    equal to a present one included) and `(refused, overlapped)` pairs; among new ones the larger
    block wins. Integer keys and a sorted list keep this fast for many networks."""
    occupied: dict[tuple[int, int, int], Network] = {}  # (version, first address, prefix length)
    starts: list[tuple[int, int, int]] = []  # the same keys, sorted
    lengths: dict[int, set[int]] = {4: set(), 6: set()}  # prefix lengths in use, per version

    def occupy(network: Network) -> None:
        key = (network.version, int(network.network_address), network.prefixlen)
        occupied[key] = network
        bisect.insort(starts, key)
        lengths[network.version].add(network.prefixlen)

    def overlapping(network: Network) -> Network | None:
        version, first, length = network.version, int(network.network_address), network.prefixlen
        bits = network.max_prefixlen
        for shorter in lengths[version]:  # a banned block containing this one
            if shorter < length:
                container = occupied.get((version, first >> (bits - shorter) << (bits - shorter), shorter))
                if container is not None:
                    return container
        index = bisect.bisect_left(starts, (version, first, -1))  # a banned block inside this one
        last = int(network.broadcast_address)
        while index < len(starts) and starts[index][0] == version and starts[index][1] <= last:
            if starts[index] != (version, first, length):
                return occupied[starts[index]]
            index += 1
        return None

    for network in present:
        occupy(network)
    accepted: list[Network] = []
    refused: list[tuple[Network, Network]] = []
    for network in sorted(set(new), key=lambda n: (n.prefixlen, n.version, int(n.network_address))):
        other = overlapping(network)
        if other is not None:
            refused.append((network, other))
            continue
        accepted.append(network)
        if (network.version, int(network.network_address), network.prefixlen) not in occupied:
            occupy(network)
    return accepted, refused
