"""The ipset backend: a jail's bans as entries of two kernel ip sets (`hash:net`, IPv4 and IPv6,
each entry with its own timeout, so the kernel ends a ban on time even when the agent is dead),
and one hook rule per family that drops or rejects what comes from them.

Sets over netlink (pyroute2, `_ipset_netlink`), hook rules in the legacy xtables filter table
(python-iptables, `_xtables`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from . import BackendError, Target, refused_items
from ._xtables import HookRule, XtablesError, chains_using, ensure, remove

log = logging.getLogger(__name__)

# The kernel keeps an entry's timeout in milliseconds in an unsigned int and silently clamps
# larger values to this (IPSET_MAX_TIMEOUT, include/linux/netfilter/ipset/ip_set_timeout.h).
MAX_TIMEOUT = (2**32 - 1 >> 1) // 1000  # 2147483 s, about 24.8 days
MAX_SET_NAME = 31  # IPSET_MAXNAMELEN (32) less the terminating NUL
ACTIONS = {"drop": "DROP", "reject": "REJECT"}
PROTOCOLS = ("tcp", "udp")
MAX_PORTS = 15  # what the multiport match takes
_JAIL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class IpsetBackend:
    """Bans in ip sets `jw-<jail>-4` and `jw-<jail>-6` (so a jail name has at most 26 characters),
    matched by a hook rule at the top of a filter-table chain.

    Options (keyword arguments):
    - `chain="INPUT"`: the filter-table chain for the hook rules, e.g. "FORWARD" or "DOCKER-USER";
      it must exist in the legacy xtables (what python-iptables writes).
    - `action="drop"`: "drop" or "reject" (ICMP port unreachable).
    - `ports=()`: ban only these destination ports (at most 15), e.g. `(22, 2222)`; empty: all traffic.
    - `protocol="tcp"`: "tcp" or "udp", the protocol of `ports`.
    - `maxelem=1048576`: most entries per set (the kernel's default, 65536, is too few to restore
      100,000 bans). An existing set keeps its own size until teardown and setup recreate it.
    - `ipv6=True`: False for a host without ip6tables; IPv6 targets are then refused.

    A ttl is rounded up to whole seconds; a ttl over 2147483 s (24.8 days, the kernel's maximum)
    is clamped to it, with a warning: the agent has to ban again when the kernel entry ends.
    A ttl of None is an entry with timeout 0, which the kernel never expires.
    `list()` gives a network of one address (/32, /128) as the address.

    Each thread that calls gets a netlink socket of its own (kept until teardown() or close()), so
    calls may come from any thread, but not from a thread running an asyncio event loop (use
    `asyncio.to_thread`): pyroute2 0.8+ runs its own.
    """

    name = "ipset"

    def __init__(self, jail: str, *, chain: str = "INPUT", action: str = "drop", ports: int | Iterable[int] = (),
                 protocol: str = "tcp", maxelem: int = 1 << 20, ipv6: bool = True) -> None:
        self.jail = jail
        configure = f"configure jail {jail!r}"
        if not isinstance(jail, str) or not _JAIL_NAME.fullmatch(jail):
            raise BackendError(self.name, configure, "a jail name for ipset may use letters, digits, '_', '.', '-'")
        self.set_names = {4: f"jw-{jail}-4", 6: f"jw-{jail}-6"}
        if len(self.set_names[4]) > MAX_SET_NAME:
            raise BackendError(self.name, configure, f"set name {self.set_names[4]!r} is longer than ipset's "
                               f"{MAX_SET_NAME} characters: shorten the jail name to at most {MAX_SET_NAME - 5}")
        if action not in ACTIONS:
            raise BackendError(self.name, configure, f"action {action!r}: use one of {', '.join(ACTIONS)}")
        if protocol not in PROTOCOLS:
            raise BackendError(self.name, configure, f"protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        ports = (ports,) if isinstance(ports, int) else tuple(ports)
        if len(ports) > MAX_PORTS or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
                                              for p in ports):
            raise BackendError(self.name, configure, f"ports {ports!r}: up to {MAX_PORTS} port numbers 1-65535")
        if not isinstance(chain, str) or not chain or len(chain) > 28:
            raise BackendError(self.name, configure, f"chain {chain!r}: a chain name of 1 to 28 characters")
        if not isinstance(maxelem, int) or maxelem < 1:
            raise BackendError(self.name, configure, f"maxelem {maxelem!r}: a positive number of entries")
        self.chain = chain
        self.maxelem = maxelem
        self.versions = (4, 6) if ipv6 else (4,)
        self.hooks = {version: HookRule(self.set_names[version], ACTIONS[action], protocol if ports else None, ports)
                      for version in self.versions}
        self._local = threading.local()  # .socket: this thread's netlink socket
        self._sockets: set = set()  # every thread's, for close()
        self._sockets_lock = threading.Lock()

    @contextmanager
    def _netlink(self, action: str) -> Iterator:
        """This thread's netlink socket (opened on first use: opening costs more than a ban), its
        errors as BackendError. A call that fails drops the socket, which may hold unread answers."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no event loop runs in this thread: pyroute2 may run its own
        else:
            raise BackendError(self.name, action, "called in a thread that runs an asyncio event loop: call it "
                               "through asyncio.to_thread (pyroute2's synchronous API runs an event loop of its own)")
        try:
            from . import _ipset_netlink as netlink
        except ImportError as error:
            raise BackendError(self.name, action, f"pyroute2 is not usable ({error}): install pyroute2") from error
        socket = getattr(self._local, "socket", None)
        if socket is None:
            try:
                socket = netlink.IpsetSocket()
            except netlink.IpsetUnavailable as error:
                raise BackendError(self.name, action, str(error)) from error
            except netlink.NetlinkError as error:
                raise BackendError(self.name, action, netlink.explain(error)) from error
            with self._sockets_lock:
                self._local.socket = socket
                self._sockets.add(socket)
        try:
            yield netlink, socket
        except BaseException as error:
            self._close(socket)
            if isinstance(error, netlink.NetlinkError):
                raise BackendError(self.name, action, netlink.explain(error)) from error
            raise

    def _close(self, socket) -> None:
        with self._sockets_lock:
            self._sockets.discard(socket)
            if getattr(self._local, "socket", None) is socket:
                del self._local.socket
        socket.close()

    def close(self) -> None:
        """Close the netlink sockets of every thread (the next call opens a new one)."""
        with self._sockets_lock:
            sockets, self._sockets, self._local = self._sockets, set(), threading.local()
        for socket in sockets:
            socket.close()

    def _xtables(self, action: str, operation, *args):
        try:
            return operation(*args)
        except XtablesError as error:
            raise BackendError(self.name, action, str(error)) from error

    def setup(self) -> None:
        with self._netlink(f"setup jail {self.jail}") as (netlink, sock):
            for version in self.versions:
                self._adopt_or_create(netlink, sock, version, self.set_names[version])
        for version in self.versions:
            if self._xtables(f"setup hook rule in {self.chain}", ensure, version, self.chain, self.hooks[version]):
                log.info("jail %s: hook rule for set %s inserted at the top of chain %s (IPv%d)",
                         self.jail, self.set_names[version], self.chain, version)

    def _adopt_or_create(self, netlink, sock, version: int, name: str) -> None:
        header = sock.header(name)
        if header is None:
            try:
                sock.create(name, version, self.maxelem)
                return
            except netlink.NetlinkError as error:
                if error.code != errno.EEXIST:
                    raise
                header = sock.header(name)  # created meanwhile by another process: check it like ours
        if header is None or (header.type, header.family) != (netlink.SET_TYPE, version) or header.timeout is None:
            found = f"{header.type}, IPv{header.family}, {'with' if header.timeout is not None else 'without'} " \
                    "timeouts" if header else "gone again"
            raise BackendError(self.name, f"setup set {name}", f"set {name} exists as {found}, but this backend needs "
                               f"{netlink.SET_TYPE}, IPv{version}, with timeouts: destroy it (`ipset destroy {name}`, "
                               "after deleting the rules that use it) or rename the jail")
        if header.maxelem is not None and header.maxelem < self.maxelem:
            log.warning("jail %s: set %s holds at most %d entries (maxelem %d asked): teardown and setup recreate it",
                        self.jail, name, header.maxelem, self.maxelem)

    def ban(self, target: Target, ttl: float | None) -> None:
        self.ban_many([(target, ttl)])

    def ban_many(self, items: Iterable[tuple[Target, float | None]]) -> None:
        """All valid items in as few netlink messages as fit (~32 KiB each) on one socket; then, if
        any item was refused, one BackendError naming each refused item and why."""
        items = list(items)
        refused: list[str] = []
        # Per family: (packed address, prefix length) -> (timeout, item); a target given twice is
        # banned once, with the last ttl.
        entries: dict[int, dict[tuple[bytes, int], tuple[int, object]]] = {version: {} for version in self.versions}
        clamped = 0
        for item in items:
            try:
                target, ttl = item
                key = self._key(target)
                timeout = _timeout(ttl)
            except (TypeError, ValueError) as error:
                refused.append(f"{item!r}: {error}")
                continue
            if ttl is not None and ttl > MAX_TIMEOUT:
                clamped += 1
            entries[4 if len(key[0]) == 4 else 6][key] = (timeout, item)
        if clamped:
            log.warning("jail %s: %d ban(s) longer than the kernel's ipset maximum of %d s (24.8 days) clamped to it",
                        self.jail, clamped, MAX_TIMEOUT)
        if any(entries.values()):
            with self._netlink(f"ban {len(items) - len(refused)} targets in jail {self.jail}") as (netlink, sock):
                for version, batch in entries.items():
                    if batch:
                        kernel_refused = sock.add(self.set_names[version], version,
                                                  (key + (timeout,) for key, (timeout, _) in batch.items()))
                        refused += [f"{batch[entry[:2]][1]!r}: {netlink.explain(error)}"
                                    for entry, error in kernel_refused]
        if refused:
            raise refused_items(self.name, self.jail, len(items), refused)

    def unban(self, target: Target) -> None:
        try:
            address, prefix = self._key(target)
        except ValueError as error:
            raise BackendError(self.name, f"unban {target} in jail {self.jail}", str(error)) from error
        version = 4 if len(address) == 4 else 6
        with self._netlink(f"unban {target} in jail {self.jail}") as (netlink, sock):
            try:
                sock.delete(self.set_names[version], version, address, prefix)
            except netlink.NetlinkError as error:
                if error.code != errno.ENOENT:  # no set: nothing of ours is banned
                    raise

    def list(self) -> dict[Target, float | None]:
        bans: dict[Target, float | None] = {}
        with self._netlink(f"list jail {self.jail}") as (netlink, sock):
            for version in self.versions:
                name = self.set_names[version]
                try:
                    for address, prefix, timeout in sock.entries(name):
                        bans[_target(address, prefix)] = None if timeout == netlink.PERMANENT else float(timeout)
                except netlink.NetlinkError as error:
                    if error.code == errno.ENOENT:
                        raise BackendError(self.name, f"list jail {self.jail}",
                                           f"set {name} does not exist: run setup") from error
                    raise
        return bans

    def teardown(self) -> None:
        # Hook rules first: the kernel refuses to destroy a set a rule still uses.
        for version in self.versions:
            self._xtables(f"teardown hook rule in {self.chain}", remove, version, self.chain, self.set_names[version])
        with self._netlink(f"teardown jail {self.jail}") as (netlink, sock):
            for version in self.versions:
                name = self.set_names[version]
                try:
                    sock.destroy(name)
                except netlink.NetlinkError as error:
                    if error.code == errno.ENOENT:
                        continue
                    if error.code == netlink.IPSET_ERR_BUSY:
                        chains = self._xtables(f"teardown set {name}", chains_using, version, name)
                        where = f"rules in filter chain(s) {', '.join(chains)}" if chains else "a rule in another " \
                            "table or a list:set"
                        raise BackendError(self.name, f"teardown set {name}", f"set {name} is still used by {where}: "
                                           "delete those, then teardown again") from error
                    raise
        self.close()

    def _key(self, target: object) -> tuple[bytes, int]:
        key = _key(target)
        if len(key[0]) == 16 and 6 not in self.versions:
            raise ValueError("IPv6 is off for this jail (option ipv6=False)")
        return key


def _key(target: object) -> tuple[bytes, int]:
    """(packed network address, prefix length) of an address (a /32 or /128) or network, IPv4-
    mapped IPv6 as IPv4. Packed bytes, not ipaddress networks: building 100,000 networks costs
    more than sending them to the kernel."""
    if isinstance(target, ipaddress.IPv4Address):
        return target.packed, 32
    if isinstance(target, ipaddress.IPv6Address):
        return (target.ipv4_mapped.packed, 32) if target.ipv4_mapped else (target.packed, 128)
    if not isinstance(target, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise ValueError(f"a {type(target).__name__}, not an ipaddress address or network")
    address, prefix = target.network_address, target.prefixlen
    if address.version == 6 and prefix >= 96 and address.ipv4_mapped is not None:
        address, prefix = address.ipv4_mapped, prefix - 96
    if prefix == 0:
        raise ValueError("a /0 network would ban everyone (and hash:net sets refuse /0)")
    return address.packed, prefix


def _target(address: bytes, prefix: int) -> Target:
    """The address for a /32 or /128, else the network (from ints: ~4x faster than from bytes)."""
    if len(address) == 4:
        if prefix == 32:
            return ipaddress.IPv4Address(address)
        return ipaddress.IPv4Network((int.from_bytes(address, "big"), prefix))
    if prefix == 128:
        return ipaddress.IPv6Address(address)
    return ipaddress.IPv6Network((int.from_bytes(address, "big"), prefix))


def _timeout(ttl: float | None) -> int:
    """The kernel timeout for `ttl`: 0 (no end) for None, else whole seconds from 1 to MAX_TIMEOUT."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"ttl {ttl!r} is not seconds above 0, nor None for a ban without end")
    return MAX_TIMEOUT if ttl >= MAX_TIMEOUT else math.ceil(ttl)
