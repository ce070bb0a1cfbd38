"""What the rule- and route-based backends (iptables, route) ban: a target as a network, and
a checked ttl. One address is a /32 or /128 network there; `as_target` turns it back."""

from __future__ import annotations

import ipaddress
import math

from . import BackendError, Target

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def as_network(target: object) -> Network:
    """`target` as a network (an address as /32 or /128), IPv4-mapped IPv6 as IPv4. ValueError for
    anything but an ipaddress address or network, and for a /0, which would ban every address."""
    if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is not None:
        target = target.ipv4_mapped
    if isinstance(target, ipaddress.IPv6Network) and target.subnet_of(_MAPPED):
        target = ipaddress.IPv4Network((int(target.network_address) & 0xFFFFFFFF, target.prefixlen - 96))
    if isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(target)
    if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        if target.prefixlen == 0:
            raise ValueError(f"{target} would ban every address")
        return target
    raise ValueError(f"{target!r} is not an ipaddress address or network")


def network_to_unban(backend: str, jail: str, target: object) -> Network:
    """`as_network(target)` for an unban, with a BackendError naming the unban when `target` is
    no address or network."""
    try:
        return as_network(target)
    except (TypeError, ValueError) as error:
        raise BackendError(backend, f"unban {target!r} in jail {jail}", str(error)) from None


def as_target(network: Network) -> Target:
    return network.network_address if network.prefixlen == network.max_prefixlen else network


def check_ttl(ttl: object) -> None:
    """Rules and routes have no expiry, but a ttl that is not a duration is still the caller's error."""
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or math.isnan(ttl)
                            or ttl <= 0):
        raise ValueError(f"ttl {ttl!r} is not a positive number of seconds or None")
