"""Which local user sent a syslog message over TCP.

A sender on loopback (or on one of the host's own addresses) is a process on this host, and
every local user can send there: the allow list cannot tell rsyslogd from `logger --server
127.0.0.1` run by anyone. For TCP the kernel can: when a connection is accepted, the peer's
end is in /proc/net/tcp{,6}, by its exact address pair, with the uid of the process that
created it. It is believed only while that socket is open (state ESTABLISHED, with an inode):
a socket closed before the accept lingers as an orphan that the kernel lists as uid 0, and a
user could otherwise pass for root by closing fast.

UDP gets no such answer. A datagram's socket is usually closed by the time it is read
(`logger` exits at once), and a socket still bound to the port says nothing sound about who
sent: another user's socket may have shared the port (SO_REUSEADDR) or used the other address
family, and be gone. So a local UDP sender is never trusted; local forwarders should use TCP or
the unix socket.

The lookup asks the kernel for that one socket (sock_diag netlink, by its exact address pair:
~20 us whatever the number of sockets). Where netlink is refused it falls back to reading
/proc/net/tcp{,6}, which walks the kernel's whole established hash (~15 ms on a host with 24 GiB,
whatever few sockets it holds), so lookups are at most `_LOOKUPS_PER_SECOND` a second: beyond
that, new connections count as untrusted.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterable

from agent.addresses import Address, normalise

_LOOKUPS_PER_SECOND = 500
_ESTABLISHED = "01"
_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF


def _proc_hex(address: Address, port: int, width: int) -> str:
    """An address and port as /proc/net/tcp{,6} print them: the address as 32-bit words in host
    byte order ("0100007F" is 127.0.0.1 on little-endian), then ":" and the port in hex.
    `width` 16 writes IPv4 as IPv4-mapped IPv6, as tcp6 lists a v4 peer of a v6 socket."""
    packed = address.packed
    if width == 16 and len(packed) == 4:
        packed = b"\0" * 10 + b"\xff\xff" + packed
    words = struct.unpack(f">{len(packed) // 4}I", packed)
    return struct.pack(f"={len(words)}I", *words).hex().upper() + f":{port:04X}"


def diag_owner(peer: tuple[Address, int], listener: tuple[Address, int]) -> int | None:
    """What `tcp_owner` says, asked of the kernel by sock_diag for the one socket at `peer`
    connected to `listener` (a hash lookup, not a walk). OSError where netlink is refused."""
    (address, port), (listening, listen_port) = peer, listener
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    request = (struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 1)  # TCP_ESTABLISHED only
               + struct.pack(">HH", port, listen_port) + address.packed.ljust(16, b"\0")
               + listening.packed.ljust(16, b"\0") + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        netlink.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + request)
        answer = netlink.recv(4096)
    if len(answer) < 16 + 88 or struct.unpack_from("=H", answer, 4)[0] == _NLMSG_ERROR:
        return None  # ENOENT: no such socket (closed, or not on this host)
    state = answer[17]
    uid, inode = struct.unpack_from("=II", answer, 16 + 4 + 48 + 12)
    return uid if state == 1 and inode != 0 else None


def socket_owner(peer: tuple[Address, int], listener: tuple[Address, int]) -> int | None:
    """The uid of the open local socket at `peer` connected to `listener`: by sock_diag, or
    from /proc/net/tcp{,6} where netlink is refused."""
    try:
        return diag_owner(peer, listener)
    except OSError:
        return tcp_owner(peer, listener)


def tcp_owner(peer: tuple[Address, int], listener: tuple[Address, int], root: str = "/proc/net") -> int | None:
    """The uid of the open local socket at `peer` connected to `listener`, None if there is none
    (closed, orphaned, or not on this host)."""
    for name, width in (("tcp", 4), ("tcp6", 16)):
        if width == 4 and peer[0].version == 6:
            continue
        try:
            with open(f"{root}/{name}", encoding="ascii") as table:
                text = table.read()
        except OSError:
            continue
        key = f" {_proc_hex(*peer, width)} {_proc_hex(*listener, width)} {_ESTABLISHED} "
        at = text.find(key)
        if at < 0:
            continue
        columns = text[at:text.find("\n", at)].split()
        # local remote st tx:rx tr:when retrnsmt uid timeout inode
        if len(columns) > 8 and columns[8] != "0":
            return int(columns[6])
    return None


class LocalSenders:
    """Decides whether a sender is local and, if so, whether it is trusted."""

    def __init__(self, own: Iterable[Address], trusted_uids: Iterable[int] = (0,), clock=time.monotonic) -> None:
        self.own = frozenset(normalise(address) for address in own)
        self.trusted_uids = frozenset(trusted_uids)
        self._clock = clock
        self._budget_second = 0
        self._budget = _LOOKUPS_PER_SECOND

    def is_local(self, address: Address) -> bool:
        return address.is_loopback or address in self.own

    def trusted(self, transport: str, sender: tuple[Address, int], listener: tuple[Address, int] | None) -> bool:
        """Is this local sender trusted? Over TCP when its open socket belongs to a trusted uid;
        over UDP never (see the module's docstring)."""
        if transport != "tcp" or listener is None:
            return False
        second = int(self._clock())
        if second != self._budget_second:
            self._budget_second, self._budget = second, _LOOKUPS_PER_SECOND
        if self._budget <= 0:
            return False
        self._budget -= 1
        uid = socket_owner((normalise(sender[0]), sender[1]), (normalise(listener[0]), listener[1]))
        return uid is not None and uid in self.trusted_uids


def peer_address(peer: tuple) -> tuple[Address, int] | None:
    """(address, port) of a socket-layer peer tuple, None if it is not an IP peer."""
    try:
        return normalise(ipaddress.ip_address(str(peer[0]).partition("%")[0])), int(peer[1])
    except (ValueError, IndexError, TypeError):
        return None
