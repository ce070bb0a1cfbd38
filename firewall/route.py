"""The route backend: a blackhole (or unreachable, or prohibit) route per banned address or
network, IPv4 and IPv6, in the main routing table, written over netlink (pyroute2's messages).

A route ban stops this host's answers, not the attacker's packets: a SYN still arrives, but the
SYN-ACK has no route back, so no TCP connection (and no UDP reply) ever gets through.
"""

from __future__ import annotations

import errno
import threading
import zlib

from . import BackendError, Target, refused_items
from ._route_netlink import KINDS, RECEIVE_TIMEOUT, Mark, Request, RouteSocket, describe, has_net_admin
from .targets import Network, as_network, as_target, check_ttl, network_to_unban

# Routing protocol numbers at or above RTPROT_STATIC (4) are not interpreted by the kernel, only
# stored and shown. 149 is unassigned in the kernel's rtnetlink.h and iproute2's rt_protos (8-18,
# 42, 99, 186-192 are taken), so `ip route show proto 149` is exactly jailwarden's routes.
RTPROT_JAILWARDEN = 149
RT_TABLE_MAIN = 254
# A route's identity is (table, destination, metric), so each jail gets its own metric: two jails
# can ban the same address (sshd for ten minutes, recidive for a week) without one's unban
# lifting the other's.
METRIC_BASE, METRIC_SPAN = 40_000, 20_000


class RouteBackend:
    """Bans as routes: `ip route add blackhole 192.0.2.1 proto 149 metric M` per address or network.

    Ours are the routes with routing protocol `protocol` and metric `metric` in table `table`;
    list and teardown touch nothing else (not another jail's, not the administrator's).

    Options:
    - `kind="blackhole"`: or "unreachable" / "prohibit" (local senders get EHOSTUNREACH /
      EACCES instead of silence; the remote side sees no answer either way).
    - `table=254` (main): lookups use it without any policy rule. Another table only works
      with an `ip rule` that sends traffic to it, which this backend does not create.
    - `protocol=149`: the routing protocol number that marks jailwarden's routes (5-255).
    - `metric=None`: the jail's metric, by default 40000 + crc32(jail) % 20000 (stable across
      restarts). Two jails that hash alike share routes: give one an explicit metric.

    A route to a banned address matches before any shorter prefix (a /32 beats the subnet route);
    a route with the same prefix and a lower metric (e.g. an administrator's host route) wins
    over ours. Routes only stop replies: the attacker's packets still reach local sockets, so a
    UDP service still receives them and a TCP listener sees SYNs (the handshake never finishes).
    Routes have no expiry: the ttl is checked and otherwise ignored, the agent unbans on schedule,
    and `list()` returns None as the ttl of every ban. Nothing needs creating, so `setup()` only
    checks access, and `teardown()` deletes this jail's routes.
    """

    name = "route"

    def __init__(self, jail: str, *, kind: str = "blackhole", table: int = RT_TABLE_MAIN,
                 protocol: int = RTPROT_JAILWARDEN, metric: int | None = None) -> None:
        configure = f"configure jail {jail!r}"
        if kind not in KINDS:
            raise BackendError(self.name, configure, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not _integer(table, 1, 2**32 - 1) or table in (253, 255):
            raise BackendError(self.name, configure, f"table must be 1-4294967295 other than default (253) and "
                               f"local (255), not {table!r}")
        if not _integer(protocol, 5, 255):
            raise BackendError(self.name, configure, f"protocol must be 5-255 (0-4 are the kernel's, boot and "
                               f"static routes), not {protocol!r}")
        if metric is None:
            metric = METRIC_BASE + zlib.crc32(str(jail).encode()) % METRIC_SPAN
        if not _integer(metric, 1, 2**32 - 1):
            raise BackendError(self.name, configure, f"metric must be 1-4294967295, not {metric!r}")
        self.jail, self.kind = jail, KINDS[kind]
        self.mark = Mark(table, protocol, metric)
        self._socket: RouteSocket | None = None
        self._lock = threading.Lock()  # one netlink conversation at a time on the shared socket

    # -- the interface

    def setup(self) -> None:
        """Check that routes can be read and written here; the routes of an earlier run stay."""
        if has_net_admin() is False:
            raise BackendError(self.name, f"set up jail {self.jail}", "needs CAP_NET_ADMIN to change routes "
                               "(run the agent as root)")
        self.list()

    def ban(self, target: Target, ttl: float | None) -> None:
        self.ban_many([(target, ttl)])

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None:
        """All valid items in batches of requests on one socket; then, if any was refused, one
        BackendError naming each refused item and why."""
        wanted: dict[Network, object] = {}
        refused: list[str] = []
        for item in items:
            try:
                target, ttl = item
                check_ttl(ttl)
                wanted[as_network(target)] = item
            except (TypeError, ValueError) as error:
                refused.append(f"{item!r}: {error}")
        action = f"ban {len(wanted)} targets in jail {self.jail}"
        results = self._apply(action, [Request(network, self.kind) for network in wanted])
        existing = [network for network, code in results.items() if code == errno.EEXIST]
        if existing:
            # The same (table, destination, metric) exists: ours from an earlier ban (kept, its kind
            # updated if the option changed), or someone else's, which is not ours to replace.
            ours = self._routes(action, {network.version for network in existing})
            changed = [network for network in existing if network in ours and ours[network] != self.kind]
            replaced = self._apply(action, [Request(network, self.kind, replace=True) for network in changed])
            for network, code in replaced.items():
                if code:
                    refused.append(f"{wanted[network]!r}: {describe(code)}")
            for network in existing:
                if network not in ours:
                    refused.append(f"{wanted[network]!r}: a route to {network} with metric {self.mark.metric} "
                                   f"exists in table {self.mark.table} that jailwarden did not add")
        for network, code in results.items():
            if code not in (0, errno.EEXIST):
                refused.append(f"{wanted[network]!r}: {describe(code)}")
        if refused:
            raise refused_items(self.name, self.jail, len(items), refused)

    def unban(self, target: Target) -> None:
        network = network_to_unban(self.name, self.jail, target)
        action = f"unban {network} in jail {self.jail}"
        code = self._apply(action, [Request(network)])[network]
        if code not in (0, errno.ESRCH):  # ESRCH: no such route of ours, so not banned
            raise BackendError(self.name, action, describe(code))

    def list(self) -> dict[Target, float | None]:
        """Every destination of this jail's routes, with None as ttl (routes have no expiry)."""
        return {as_target(network): None for network in self._routes(f"list jail {self.jail}", {4, 6})}

    def teardown(self) -> None:
        """Delete this jail's routes (and no other), then close the socket."""
        action = f"tear down jail {self.jail}"
        results = self._apply(action, [Request(network) for network in self._routes(action, {4, 6})])
        failed = [f"{network}: {describe(code)}" for network, code in results.items() if code not in (0, errno.ESRCH)]
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        if failed:
            raise BackendError(self.name, action, "; ".join(failed[:20]))

    # -- netlink

    def _apply(self, action: str, requests: list[Request]) -> dict[Network, int]:
        """{network: errno (0: done)} for each request."""
        if not requests:
            return {}
        with self._lock:
            try:
                codes = self._connected(action).apply(self.mark, requests)
            except OSError as error:
                self._reset()
                raise BackendError(self.name, action, _said(error)) from None
        if errno.EPERM in codes or errno.EACCES in codes:
            raise BackendError(self.name, action, describe(errno.EPERM))
        return {request.network: code for request, code in zip(requests, codes, strict=True)}

    def _routes(self, action: str, versions: set[int]) -> dict[Network, int]:
        with self._lock:
            try:
                routes: dict[Network, int] = {}
                for version in sorted(versions):
                    routes.update(self._connected(action).routes(self.mark, version))
                return routes
            except OSError as error:
                self._reset()
                raise BackendError(self.name, action, _said(error)) from None

    def _connected(self, action: str) -> RouteSocket:
        if self._socket is None:
            try:
                self._socket = RouteSocket()
            except OSError as error:
                raise BackendError(self.name, action, f"cannot open a netlink socket: {error.strerror}") from None
        return self._socket

    def _reset(self) -> None:
        # A socket that failed half-way may hold answers to old requests: start afresh next time.
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _integer(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _said(error: OSError) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer from the kernel within {RECEIVE_TIMEOUT:g} s"
    return describe(error.errno) if error.errno else str(error)
