"""Aggregation by prefix: when enough distinct addresses of one /24 (IPv4) or /64 (IPv6) are
banned in a jail within a window, the whole prefix earns a ban. Sans-IO: `now` is passed in."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from agent.addresses import Address, Network


@dataclass(slots=True, frozen=True)
class Aggregation:
    """Ban a prefix once `bans` distinct addresses in it were banned within `window` seconds."""

    bans: int = 5
    window: float = 3600.0
    ipv4: int = 24  # prefix length of an IPv4 address's prefix
    ipv6: int = 64

    def __post_init__(self) -> None:
        if self.bans < 2:
            raise ValueError(f"bans must be at least 2 (one ban is the address's own), got {self.bans}")
        if not 8 <= self.ipv4 <= 31:
            raise ValueError(f"ipv4 must be a prefix length from 8 to 31, got {self.ipv4}")
        if not 16 <= self.ipv6 <= 127:
            raise ValueError(f"ipv6 must be a prefix length from 16 to 127, got {self.ipv6}")
        if not self.window > 0:
            raise ValueError(f"window must be a positive duration, got {self.window}")


class PrefixTracker:
    """Per prefix, the distinct addresses banned in it and when (their latest ban).

    Memory: fewer than `bans` addresses per prefix (reaching `bans` ends the prefix's entry) and
    at most `max_prefixes` prefixes; when full, the prefix least recently banned in is forgotten.
    """

    def __init__(self, rule: Aggregation, max_prefixes: int = 100_000) -> None:
        self.rule = rule
        self.max_prefixes = max_prefixes
        self._prefixes: OrderedDict[Network, dict[Address, float]] = OrderedDict()

    def prefix_of(self, address: Address) -> Network:
        length = self.rule.ipv4 if address.version == 4 else self.rule.ipv6
        return ipaddress.ip_network((address, length), strict=False)

    def record(self, address: Address, now: float) -> Network | None:
        """`address` was banned at `now`: its prefix if that makes `bans` within `window`, else None."""
        prefix = self.prefix_of(address)
        banned = self._prefixes.pop(prefix, None) or {}
        cutoff = now - self.rule.window
        banned = {member: when for member, when in banned.items() if when > cutoff}
        banned[address] = now
        if len(banned) >= self.rule.bans:
            return prefix  # forgotten: the prefix's own ban answers the next ones
        self._prefixes[prefix] = banned
        if len(self._prefixes) > self.max_prefixes:
            self._prefixes.popitem(last=False)
        return None

    def __len__(self) -> int:
        return len(self._prefixes)
