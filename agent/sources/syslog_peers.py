"""Which local user sent a syslog message over UDP or TCP.

A sender on loopback (or on one of the host's own addresses) is a process on this host, and
every local user can send there: the allow list cannot tell rsyslogd from `logger --server
127.0.0.1` run by anyone. The kernel can. The sending socket is in /proc/net/{tcp,udp}{,6}
with its owner's uid, so a local message is trusted only when that socket belongs to a
trusted uid (root by default: rsyslogd, syslog-ng).

TCP is checked once, when the connection is accepted; the peer's socket exists as long as the
connection does. For UDP the sender's socket may already be closed when its datagram is read
(`logger` exits right after sending): then the owner is unknown and the message untrusted,
which errs on the safe side; a forwarder such as rsyslogd keeps its socket open. Answers are
kept for `_TTL` seconds per sender port, and lookups are capped per second, so a flood of new
source ports costs a bounded amount of work (beyond it, messages count as untrusted).
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterable

from agent.addresses import Address, normalise

_TTL = 1.0  # seconds an answer is reused: a port freed by a trusted sender is not inherited for long
_MEMO_LIMIT = 4096
_LOOKUPS_PER_SECOND = 200


def _proc_address(text: str) -> tuple[Address, int]:
    # "0100007F:0202": the address as the kernel's 32-bit words in host byte order, the port in hex.
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    return normalise(ipaddress.ip_address(packed)), int(port, 16)


def socket_owners(transport: str, address: Address, port: int, peer_of: tuple[Address, int] | None = None,
                  root: str = "/proc/net") -> set[int]:
    """The uids owning a local `transport` socket that can have sent from (address, port): for
    TCP, the one bound there and connected to `peer_of`; for UDP, also one bound to the
    wildcard address on that port (an unbound socket that sent gets 0.0.0.0:PORT). Empty when
    there is none (closed, or not on this host)."""
    owners = set()
    for name in (transport, transport + "6"):
        try:
            with open(f"{root}/{name}", encoding="ascii") as table:
                next(table)
                for line in table:
                    columns = line.split()
                    try:
                        local, local_port = _proc_address(columns[1])
                        if local_port != port or not (local == address or
                                                      (transport == "udp" and local.is_unspecified)):
                            continue
                        if peer_of is not None and _proc_address(columns[2]) != peer_of:
                            continue
                        owners.add(int(columns[7]))
                    except (ValueError, IndexError):
                        continue
        except (OSError, StopIteration):
            continue
    return owners


class LocalSenders:
    """Decides whether a sender is local and, if so, whether its socket's owner is trusted."""

    def __init__(self, own: Iterable[Address], trusted_uids: Iterable[int] = (0,), clock=time.monotonic) -> None:
        self.own = frozenset(normalise(address) for address in own)
        self.trusted_uids = frozenset(trusted_uids)
        self._clock = clock
        self._memo: dict[tuple[str, Address, int], tuple[bool, float]] = {}
        self._budget_second = 0.0
        self._budget = _LOOKUPS_PER_SECOND
        self.lookups = 0

    def is_local(self, address: Address) -> bool:
        return address.is_loopback or address in self.own

    def trusted(self, transport: str, sender: tuple[Address, int], listener: tuple[Address, int] | None = None
                ) -> bool:
        """Is the local sender's socket owned by a trusted uid? (Call only for local senders.)"""
        now = self._clock()
        key = (transport, *sender)
        known = self._memo.get(key)
        if known is not None and known[1] > now:
            return known[0]
        second = int(now)
        if second != self._budget_second:
            self._budget_second, self._budget = second, _LOOKUPS_PER_SECOND
        if self._budget <= 0:
            return False
        self._budget -= 1
        self.lookups += 1
        owners = socket_owners(transport, *sender, peer_of=listener if transport == "tcp" else None)
        # Sockets sharing a port (SO_REUSEADDR) could each have sent: all must be trusted.
        verdict = bool(owners) and owners <= self.trusted_uids
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = (verdict, now + _TTL)
        return verdict


def peer_address(peer: tuple) -> tuple[Address, int] | None:
    """(address, port) of a socket-layer peer tuple, None if it is not an IP peer."""
    try:
        return normalise(ipaddress.ip_address(str(peer[0]).partition("%")[0])), int(peer[1])
    except (ValueError, IndexError, TypeError):
        return None
