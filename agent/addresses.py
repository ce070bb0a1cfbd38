"""Addresses and networks: parsing them from config text, normalising them, and the ignore list."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from parsers.filter import Address, normalise

Network = IPv4Network | IPv6Network

# ::ffff:0:0/96 — the IPv4-mapped block; a mapped network keeps its IPv4 part below this prefix.
_MAPPED_PREFIX = 96


def parse_address(text: str) -> Address:
    """One address from text (control socket, CLI), normalised; ValueError says what is wrong."""
    try:
        return normalise(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_network(text: str) -> Network:
    """A single address (as a /32 or /128) or a CIDR network, normalised.

    A CIDR with host bits set (``192.0.2.1/24``) is an error rather than silently widened: in an
    ignore or allow list the writer may have meant the single address, and guessing the wider
    network would exempt hosts they never named.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    text = text.strip()
    if "/" not in text:
        return _normalise_network(ipaddress.ip_network(parse_address(text)))
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" not in str(error):
            raise ValueError(f"{text!r} is not an IP address or network") from None
        wider = ipaddress.ip_network(text, strict=False)
        address = text.split("/", 1)[0]
        raise ValueError(
            f"{text!r} has host bits set: write {wider} for the network or {address} for the single address"
        ) from None
    return _normalise_network(network)


def _normalise_network(network: Network) -> Network:
    if (
        network.version == 6
        and network.prefixlen >= _MAPPED_PREFIX
        and network.network_address.ipv4_mapped is not None
    ):
        return IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - _MAPPED_PREFIX))
    return network


class AddressSet:
    """An immutable set of addresses and networks with a fast membership test for one address.

    Single addresses sit in a hash set; networks are grouped by prefix length, so a lookup masks
    the address once per distinct prefix length (at most 33 for IPv4, 129 for IPv6) and does one
    set lookup each — independent of how many networks the list holds.
    """

    __slots__ = ("_by_prefix", "_exact", "_networks")

    def __init__(self, networks: Iterable[Network | Address] = ()) -> None:
        unique: dict[Network, None] = {}
        for item in networks:
            if isinstance(item, (IPv4Address, IPv6Address)):
                item = ipaddress.ip_network(normalise(item))
            elif not isinstance(item, (IPv4Network, IPv6Network)):
                raise TypeError(f"expected an address or network, got {type(item).__name__}")
            unique[_normalise_network(item)] = None
        self._networks = tuple(unique)
        self._exact = frozenset(n.network_address for n in self._networks if n.prefixlen == n.max_prefixlen)
        grouped: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in self._networks:
            if network.prefixlen < network.max_prefixlen:
                prefixes = grouped[network.version].setdefault(network.prefixlen, set())
                prefixes.add(int(network.network_address))
        self._by_prefix = {
            version: tuple(
                (int(_netmask(version, prefixlen)), frozenset(prefixes))
                for prefixlen, prefixes in sorted(by_length.items())
            )
            for version, by_length in grouped.items()
        }

    def __contains__(self, address: Address) -> bool:
        address = normalise(address)
        if address in self._exact:
            return True
        value = int(address)
        for mask, prefixes in self._by_prefix[address.version]:
            if value & mask in prefixes:
                return True
        return False

    def overlaps(self, network: Network) -> bool:
        """Does any address or network of the set lie in `network`, or contain it?"""
        return any(member.version == network.version and member.overlaps(network) for member in self._networks)

    def __or__(self, other: AddressSet) -> AddressSet:
        return AddressSet(self._networks + other._networks)

    def __iter__(self) -> Iterator[Network]:
        return iter(self._networks)

    def __len__(self) -> int:
        return len(self._networks)

    def __repr__(self) -> str:
        return f"AddressSet([{', '.join(str(n) for n in self._networks)}])"


def _netmask(version: int, prefixlen: int) -> Address:
    network = IPv4Network((0, prefixlen)) if version == 4 else IPv6Network((0, prefixlen))
    return network.netmask
