"""The kernel's ip sets over netlink (pyroute2.IPSet), for the ipset backend: one `hash:net`
set per address family with the timeout extension, added to in batches, listed with the
seconds each entry has left.

Works with pyroute2 0.7.2 (Debian 12) and 0.9.x. Errors are pyroute2's `NetlinkError`
(with `.code`: an errno or an `IPSET_ERR_*` number); `explain()` turns one into advice.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyroute2 import IPSet
from pyroute2.netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_IPSET, nfgen_msg
from pyroute2.netlink.nfnetlink.ipset import (
    IPSET_CMD_ADD,
    IPSET_ERR_BUSY,
    IPSET_ERR_FIND_TYPE,
    IPSET_ERR_INVALID_CIDR,
    IPSET_ERR_IPADDR_IPV4,
    IPSET_ERR_IPADDR_IPV6,
    IPSET_ERR_MAX_SETS,
    IPSET_ERR_PROTOCOL,
    IPSET_ERR_TIMEOUT,
    IPSET_ERR_TYPE_SPECIFIC,
    IPSET_FLAG_LIST_HEADER,
)

Entry = tuple[bytes, int, int]  # packed network address, prefix length, timeout

SET_TYPE = "hash:net"
PERMANENT = 0  # the timeout of an entry without end, in a set with the timeout extension
IPSET_ERR_HASH_FULL = IPSET_ERR_TYPE_SPECIFIC  # include/linux/netfilter/ipset/ip_set_hash.h
IPSET_ERR_HASH_ELEM = IPSET_ERR_TYPE_SPECIFIC + 1
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
# Errors the kernel gives for one entry rather than for the whole set.
_ENTRY_ERRORS = {IPSET_ERR_INVALID_CIDR, IPSET_ERR_IPADDR_IPV4, IPSET_ERR_IPADDR_IPV6, IPSET_ERR_HASH_ELEM}

# A batch is one IPSET_CMD_ADD message whose IPSET_ATTR_ADT nest holds many IPSET_ATTR_DATA
# nests (what `ipset restore` sends). The nest length is a u16, and on an error the kernel echoes
# the whole request back, which must fit pyroute2 0.7.2's 64 KiB receive buffer: stay at 32 KiB.
BATCH_BYTES = 32 * 1024

_NLA_F_NET_BYTEORDER = 0x4000
_ATTR_ADT, _ATTR_DATA, _ATTR_IP, _ATTR_CIDR, _ATTR_TIMEOUT = 8, 7, 1, 3, 6
_ATTR_IPADDR = {4: 1, 16: 2}  # by address length


class _batch_msg(nfgen_msg):
    """IPSET_CMD_ADD with a pre-encoded IPSET_ATTR_ADT: pyroute2 would encode each nested
    attribute in Python (~0.13 ms per entry, 13 s for 100,000), struct does it in ~2 us.

    Derived from nfgen_msg, not ipset_msg: pyroute2 compiles an attribute map once per class and
    a subclass of an already compiled ipset_msg would silently use ipset_msg's map."""

    nla_map = (
        (1, 'IPSET_ATTR_PROTOCOL', 'uint8'),
        (2, 'IPSET_ATTR_SETNAME', 'asciiz'),
        (8 | NLA_F_NESTED, 'IPSET_ATTR_ADT', 'cdata'),  # raw bytes; the kernel wants the nested flag
        # The kernel requires IPSET_ATTR_LINENO next to IPSET_ATTR_ADT. Its value stays 0 and the
        # entries carry none, so an error comes back as a plain error code (not "line N").
        (9, 'IPSET_ATTR_LINENO', 'uint32'),
    )


def _encode_entry(address: bytes, prefix: int, timeout: int) -> bytes:
    ip_nest = struct.pack("=HH", 4 + len(address), _ATTR_IPADDR[len(address)] | _NLA_F_NET_BYTEORDER) + address
    body = (struct.pack("=HH", 4 + len(ip_nest), _ATTR_IP | NLA_F_NESTED) + ip_nest
            + struct.pack("=HHB3x", 5, _ATTR_CIDR, prefix)
            + struct.pack("=HH", 8, _ATTR_TIMEOUT | _NLA_F_NET_BYTEORDER) + struct.pack(">I", timeout))
    return struct.pack("=HH", 4 + len(body), _ATTR_DATA | NLA_F_NESTED) + body


def _chunks(entries: Iterable[Entry]) -> Iterator[list[tuple[Entry, bytes]]]:
    chunk: list[tuple[Entry, bytes]] = []
    size = 0
    for entry in entries:
        encoded = _encode_entry(*entry)
        if size + len(encoded) > BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append((entry, encoded))
        size += len(encoded)
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class SetHeader:
    name: str
    type: str
    family: int  # 4 or 6
    timeout: int | None  # the set's default timeout, None without the timeout extension
    maxelem: int | None
    references: int  # how many rules use the set (a set in use cannot be destroyed)
    entries: int


class IpsetUnavailable(Exception):
    """The kernel has no ipset subsystem to talk to; the message names the module to load."""


class IpsetSocket:
    """One netlink socket to the kernel's ipset subsystem, reused for every request."""

    def __init__(self) -> None:
        try:
            self._ipset = IPSet()  # asks the kernel for its ipset protocol version
        except NetlinkError as error:
            if error.code in (errno.EPERM, errno.EACCES):
                raise
            raise IpsetUnavailable(f"the kernel's ipset subsystem does not answer ({error}): load kernel module "
                                   "ip_set (modprobe ip_set)") from error
        except OSError as error:
            raise IpsetUnavailable(f"cannot open a netfilter netlink socket ({error}): load kernel module "
                                   "nfnetlink (modprobe nfnetlink)") from error

    def close(self) -> None:
        self._ipset.close()

    def header(self, name: str) -> SetHeader | None:
        """The set's type and options, or None if no set has that name."""
        try:
            messages = list(self._ipset.list(name, flags=IPSET_FLAG_LIST_HEADER))
        except NetlinkError as error:
            if error.code == errno.ENOENT:
                return None
            raise
        for message in messages:
            if message.get_attr('IPSET_ATTR_SETNAME') != name:
                continue
            data = message.get_attr('IPSET_ATTR_DATA')
            family = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(message.get_attr('IPSET_ATTR_FAMILY'), 0)
            return SetHeader(name=name, type=message.get_attr('IPSET_ATTR_TYPENAME'), family=family,
                             timeout=data.get_attr('IPSET_ATTR_TIMEOUT') if data else None,
                             maxelem=data.get_attr('IPSET_ATTR_MAXELEM') if data else None,
                             references=(data.get_attr('IPSET_ATTR_REFERENCES') or 0) if data else 0,
                             entries=(data.get_attr('IPSET_ATTR_ELEMENTS') or 0) if data else 0)
        return None

    def create(self, name: str, version: int, maxelem: int) -> None:
        """A `hash:net` set whose entries each carry their own timeout (set timeout 0)."""
        self._ipset.create(name, stype=SET_TYPE, family=FAMILIES[version], timeout=PERMANENT, maxelem=maxelem)

    def destroy(self, name: str) -> None:
        self._ipset.destroy(name)

    def add(self, name: str, version: int, entries: Iterable[Entry]) -> list[tuple[Entry, NetlinkError]]:
        """Add `entries` (packed address, prefix length, timeout), or replace the timeout of those
        already in, in as few messages as fit. Returns the entries the kernel refused, with its
        error; raises an error that concerns the whole set (missing, full, no permission)."""
        refused: list[tuple[Entry, NetlinkError]] = []
        for chunk in _chunks(entries):
            try:
                self._send_add(name, version, b"".join(encoded for _, encoded in chunk))
            except NetlinkError as error:
                if error.code not in _ENTRY_ERRORS:
                    raise
                # The kernel stops at the first refused entry (those before it are in): send this
                # chunk's entries one by one to learn which ones it refuses.
                for entry, encoded in chunk:
                    try:
                        self._send_add(name, version, encoded)
                    except NetlinkError as entry_error:
                        if entry_error.code not in _ENTRY_ERRORS:
                            raise
                        refused.append((entry, entry_error))
        return refused

    def _send_add(self, name: str, version: int, adt: bytes) -> None:
        message = _batch_msg()
        message['nfgen_family'] = FAMILIES[version]
        message['attrs'] = [['IPSET_ATTR_PROTOCOL', self._ipset._proto_version], ['IPSET_ATTR_SETNAME', name],
                            ['IPSET_ATTR_ADT', adt], ['IPSET_ATTR_LINENO', 0]]
        # No NLM_F_EXCL: the kernel then treats an entry that exists as "replace its timeout".
        tuple(self._ipset.nlm_request(message, IPSET_CMD_ADD | (NFNL_SUBSYS_IPSET << 8), NLM_F_REQUEST | NLM_F_ACK,
                                      terminate=lambda reply: reply['header']['type'] == NLMSG_ERROR))

    def delete(self, name: str, version: int, address: bytes, prefix: int) -> None:
        """Remove the entry for `address`/`prefix`; no error if it is not in the set."""
        entry = f"{ipaddress.ip_address(address)}/{prefix}"
        self._ipset.delete(name, entry, family=FAMILIES[version], exclusive=False, etype="net")

    def entries(self, name: str) -> Iterator[Entry]:
        """Every entry (packed address, prefix length, timeout), the timeout in seconds left (at
        least 1), or 0 for an entry without end.

        Read from the dump's raw bytes: pyroute2 decodes each nested attribute in Python
        (~0.13 ms per entry, 13 s for 100,000 entries)."""
        for message in self._ipset.list(name):
            raw = memoryview(message.data)[message.offset:message.offset + message['header']['length']]
            yield from _dump_entries(raw)


def _attributes(raw: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each netlink attribute in raw[start:end]."""
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", raw, start)
        if length < 4:
            return
        yield kind & ~(NLA_F_NESTED | _NLA_F_NET_BYTEORDER), start + 4, start + length
        start += (length + 3) & ~3


def _dump_entries(raw: memoryview) -> Iterator[Entry]:
    """The entries of one IPSET_CMD_LIST reply: nlmsghdr (16 bytes), nfgenmsg (4), attributes."""
    for kind, start, end in _attributes(raw, 20, len(raw)):
        if kind != _ATTR_ADT:
            continue
        for data_kind, data_start, data_end in _attributes(raw, start, end):
            if data_kind != _ATTR_DATA:
                continue
            address, prefix, timeout = None, None, PERMANENT
            for attr, begin, finish in _attributes(raw, data_start, data_end):
                if attr == _ATTR_IP:
                    for _, ip_begin, ip_end in _attributes(raw, begin, finish):
                        address = bytes(raw[ip_begin:ip_end])
                elif attr == _ATTR_CIDR:
                    prefix = raw[begin]
                elif attr == _ATTR_TIMEOUT:
                    timeout = struct.unpack_from(">I", raw, begin)[0]
            if address is not None:
                yield address, prefix if prefix is not None else 8 * len(address), timeout


def explain(error: BaseException) -> str:
    """What a netlink error from the ipset subsystem means and what to do about it."""
    code = getattr(error, "code", None) or getattr(error, "errno", None)
    module = "ip_set_" + SET_TYPE.replace(":", "_")
    advice = {
        errno.ENOENT: "the set does not exist: run setup",
        errno.EPERM: "permission denied: needs CAP_NET_ADMIN in this network namespace (run as root)",
        errno.EACCES: "permission denied: needs CAP_NET_ADMIN in this network namespace (run as root)",
        IPSET_ERR_PROTOCOL: "the kernel's ipset protocol differs from this pyroute2's: update pyroute2 or the kernel",
        IPSET_ERR_FIND_TYPE: f"the kernel lacks set type {SET_TYPE}: load kernel module {module} (modprobe {module})",
        IPSET_ERR_MAX_SETS: "the kernel's limit on ip sets is reached: raise ip_set's max_sets module parameter",
        IPSET_ERR_BUSY: "the set is still used by a rule",
        IPSET_ERR_TIMEOUT: "the set has no timeout extension",
        IPSET_ERR_INVALID_CIDR: "prefix length not allowed in a hash:net set (/1 to /32, /1 to /128)",
        IPSET_ERR_HASH_FULL: "the set is full: raise the maxelem option (then teardown and setup to recreate it)",
    }.get(code)
    return f"{advice} ({error})" if advice else str(error)
