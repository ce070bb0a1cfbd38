"""Netlink plumbing for the route backend: route messages encoded with pyroute2's `rtmsg`, sent
in batches on one NETLINK_ROUTE socket with an acknowledgement per message, and route dumps
that decode only the routes carrying our mark.

Its own socket rather than pyroute2's IPRoute: IPRoute waits for each request's answer before
sending the next, and its request API differs between pyroute2 0.7 and 0.9; `rtmsg` does not.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .targets import Network

RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RECEIVE_TIMEOUT = 10.0  # seconds
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
RT_TABLE_COMPAT = 252  # rtm_table when the id needs the 32-bit RTA_TABLE attribute
RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 0, 255
KINDS = {"blackhole": 6, "unreachable": 7, "prohibit": 8}  # RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT
BATCH = 64  # requests per send: the kernel queues one ack (~1 KiB of receive buffer) for each
DUMP_ATTEMPTS = 3  # a dump the kernel marks as interrupted (routes changed meanwhile) is read again
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_PROTOCOL_OFFSET = _HEADER.size + 5  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type


@dataclass(frozen=True, slots=True)
class Mark:
    """What makes a route ours: its table, routing protocol number and metric."""

    table: int
    protocol: int
    metric: int


@dataclass(frozen=True, slots=True)
class Request:
    """One route to add (`kind` an RTN_* type, `replace` to overwrite the same route) or delete."""

    network: Network
    kind: int | None = None
    replace: bool = False


class RouteSocket:
    """A NETLINK_ROUTE socket; not thread-safe (the backend holds a lock around it)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        # The kernel answers at once; a receive that waits this long (TimeoutError, an OSError the
        # backend reports) means something is wrong, and must not hold the backend's lock forever.
        self._socket.settimeout(RECEIVE_TIMEOUT)
        self._socket.bind((0, 0))
        self._sequence = 0

    def close(self) -> None:
        self._socket.close()

    def apply(self, mark: Mark, requests: list[Request]) -> list[int]:
        """Send `requests` in batches; the errno of each (0: done), in the same order."""
        results = [0] * len(requests)
        for start in range(0, len(requests), BATCH):
            first = self._sequence + 1
            batch = requests[start:start + BATCH]
            self._socket.send(b"".join(self._encode(mark, request) for request in batch))
            waiting = len(batch)
            while waiting:
                for kind, _flags, sequence, body in self._messages(self._socket.recv(65536)):
                    if kind == NLMSG_ERROR and first <= sequence < first + len(batch):
                        results[start + sequence - first] = -struct.unpack_from("=i", body)[0]
                        waiting -= 1
        return results

    def routes(self, mark: Mark, version: int) -> dict[Network, int]:
        """{destination: RTN_* type} of the routes of `version` (4 or 6) carrying `mark`."""
        for _attempt in range(DUMP_ATTEMPTS):
            found, interrupted = self._dump(mark, version)
            if not interrupted:
                break
        return found

    def _dump(self, mark: Mark, version: int) -> tuple[dict[Network, int], bool]:
        request = rtmsg()
        request["family"] = socket.AF_INET if version == 4 else socket.AF_INET6
        self._socket.send(self._finish(request, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP))
        dump = self._sequence
        found: dict[Network, int] = {}
        interrupted = False
        while True:
            data = self._socket.recv(1 << 20)
            offset = 0
            while offset < len(data):
                length, kind, flags, sequence, _port = _HEADER.unpack_from(data, offset)
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if sequence != dump:
                    pass  # an ack left over from a request that failed half-way
                elif kind == NLMSG_DONE:
                    return found, interrupted
                elif kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                    raise OSError(code, os.strerror(code))
                # Decoding a route with pyroute2 costs ~50 us: only ours are decoded.
                elif kind == RTM_NEWROUTE and data[offset + _PROTOCOL_OFFSET] == mark.protocol:
                    route = rtmsg(data[offset:offset + length])
                    route.decode()
                    if (route.get_attr("RTA_TABLE") or route["table"]) == mark.table and \
                            route.get_attr("RTA_PRIORITY") == mark.metric:
                        destination = route.get_attr("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
                        found[ipaddress.ip_network(f"{destination}/{route['dst_len']}")] = route["type"]
                offset += (length + 3) & ~3

    def _encode(self, mark: Mark, request: Request) -> bytes:
        message = rtmsg()
        message["family"] = socket.AF_INET if request.network.version == 4 else socket.AF_INET6
        message["dst_len"] = request.network.prefixlen
        message["table"] = mark.table if mark.table < 256 else RT_TABLE_COMPAT
        message["proto"] = mark.protocol
        message["attrs"] = [("RTA_DST", str(request.network.network_address)), ("RTA_PRIORITY", mark.metric),
                            ("RTA_TABLE", mark.table)]
        if request.kind is None:
            # As `ip route del`: any scope and type, but only with our protocol, metric and table.
            message["scope"], message["type"] = RT_SCOPE_NOWHERE, 0
            return self._finish(message, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
        message["scope"], message["type"] = RT_SCOPE_UNIVERSE, request.kind
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if request.replace else NLM_F_EXCL)
        return self._finish(message, RTM_NEWROUTE, flags)

    def _finish(self, message, kind: int, flags: int) -> bytes:
        """`message` with its netlink header (the next sequence number), encoded."""
        self._sequence += 1
        message["header"]["type"], message["header"]["flags"] = kind, flags
        message["header"]["sequence_number"] = self._sequence
        message.encode()
        return bytes(message.data)

    @staticmethod
    def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, flags, sequence, _port = _HEADER.unpack_from(data, offset)
            yield kind, flags, sequence, data[offset + _HEADER.size:offset + length]
            offset += (length + 3) & ~3


def has_net_admin() -> bool | None:
    """Whether this process holds CAP_NET_ADMIN (None: cannot tell)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 12 & 1)
    except OSError:
        pass
    return None


def describe(code: int) -> str:
    """An errno from a route request, said for an administrator."""
    if code in (errno.EPERM, errno.EACCES):
        return f"{os.strerror(code)}: needs CAP_NET_ADMIN (run the agent as root)"
    if code in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
        return f"{os.strerror(code)}: the kernel has no IPv6 (or it is disabled)"
    return os.strerror(code)
