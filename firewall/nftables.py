"""The nftables backend: a jail's bans as elements with kernel timeouts in sets of the shared
`inet jailwarden` table, dropped or rejected by the jail's own base chain on hook input.

Everything goes through libnftables' JSON API inside this process (firewall/libnftables.py);
each call is one transaction.
"""

from __future__ import annotations

import ipaddress
import re
import threading

from . import BackendError, Target, refused_items
from ._nftables_ruleset import (
    FAMILY,
    PROTOCOLS,
    TABLE,
    JailSet,
    chain_command,
    element,
    element_command,
    fit_networks,
    jail_sets,
    normalise,
    parse_elements,
    rule_commands,
    set_command,
    table_command,
    timeout_seconds,
    where,
)
from .libnftables import NftError, open_nftables, run_json

CHUNK = 25_000  # targets per transaction in ban_many: bounds the JSON text and the netlink batch
_JAIL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,200}")
# One libnftables context per process, used under one lock: the context is not thread-safe, and
# serialising setup/teardown keeps one jail's teardown from deleting the table under another's setup.
_LOCK = threading.Lock()
_HANDLE = None


class NftablesBackend:
    """Bans in nftables sets with kernel-side expiry.

    Per jail, in table `inet jailwarden` (shared by all jails):
    - sets `<jail>_v4` / `<jail>_v6` (`ipv4_addr` / `ipv6_addr`, flags timeout) for addresses and
      `<jail>_v4net` / `<jail>_v6net` (flags interval, timeout) for networks. Addresses are kept
      out of the interval sets because nftables 1.0.6 re-reads a whole interval set on every
      change (~2 s per ban at 100,000 elements) and refuses an address inside a banned network;
    - base chain `<jail>` (type filter, hook input) with one rule per set.

    Options:
    - `priority=-10`: the chain's priority. Before the usual `filter` chains (0), so banned
      traffic is gone before other rules count or log it, and after conntrack (-200). A drop
      in any base chain is final whatever the order, so this is about cost, not correctness.
    - `action="drop"`: or "reject" (TCP reset with protocol "tcp", else ICMP port unreachable).
    - `protocol=None`: "tcp", "udp" or "sctp" to match only that protocol.
    - `ports=()`: destination ports to match (with protocol None: any of tcp/udp/sctp).

    ttl is rounded up to whole seconds (libnftables' JSON unit); None bans without timeout.
    """

    name = "nftables"

    def __init__(self, jail: str, *, priority: int = -10, action: str = "drop", protocol: str | None = None,
                 ports: tuple[int, ...] | list[int] = ()) -> None:
        if not isinstance(jail, str) or not _JAIL_NAME.fullmatch(jail):
            raise BackendError(self.name, f"configure jail {jail!r}", "a jail name for nftables must be letters, "
                               "digits, '_', '.', '-', starting with a letter or '_'")
        if isinstance(priority, bool) or not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
            raise BackendError(self.name, f"configure jail {jail}", f"priority must be an integer, not {priority!r}")
        if action not in ("drop", "reject"):
            raise BackendError(self.name, f"configure jail {jail}", f"action must be drop or reject, not {action!r}")
        if protocol is not None and protocol not in PROTOCOLS:
            raise BackendError(self.name, f"configure jail {jail}", f"protocol must be one of {PROTOCOLS} or None")
        ports = tuple(ports)
        if any(isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536 for port in ports):
            raise BackendError(self.name, f"configure jail {jail}", f"ports must be integers 1-65535, not {ports!r}")
        self.jail, self.priority, self.action, self.protocol = jail, priority, action, protocol
        self.ports = tuple(sorted(set(ports)))
        self.chain = jail
        self.sets = jail_sets(jail)

    # -- the interface

    def setup(self) -> None:
        """Create table, sets, chain and rules, adopting what exists (bans in existing sets stay).
        The chain is flushed and refilled in the same transaction, so rules never pile up."""
        with _LOCK:
            listing = self._structure("set up")
            for jail_set in self.sets:
                self._check_adoptable(jail_set, listing["sets"].get(jail_set.name))
            # `add set` on an adopted set with other flags (say, an extra `interval`) fails: skip those.
            commands = [table_command("add"), *(set_command("add", jail_set) for jail_set in self.sets
                                                if jail_set.name not in listing["sets"])]
            chain = listing["chains"].get(self.chain)
            wanted = {"type": "filter", "hook": "input", "prio": self.priority}
            if chain is not None and any(chain.get(key) != value for key, value in wanted.items()):
                # A chain's hook and priority cannot be changed in place: replace it, atomically.
                commands += [chain_command("flush", self.chain, 0), chain_command("delete", self.chain, 0)]
            commands += [chain_command("add", self.chain, self.priority), chain_command("flush", self.chain, 0)]
            commands += rule_commands(self.chain, self.sets, self.action, self.protocol, self.ports)
            self._run("set up", commands)

    def ban(self, target: Target, ttl: float | None) -> None:
        self.ban_many([(target, ttl)])

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None:
        """Ban all valid items (a few transactions of CHUNK targets); then, if any item was refused,
        raise one BackendError naming each refused item and why."""
        wanted: dict[JailSet, dict[Target, int | None]] = {jail_set: {} for jail_set in self.sets}
        refused: list[str] = []
        items = list(items)
        for item in items:
            try:
                target, ttl = item
                normal = normalise(target)
                wanted[self._set_for(normal)][normal] = timeout_seconds(ttl)
            except (TypeError, ValueError) as error:
                refused.append(f"{item!r}: {error}")
        with _LOCK:
            for jail_set, bans in wanted.items():
                if jail_set.networks and bans:
                    refused += self._ban_networks(jail_set, bans)
                elif bans:
                    self._ban_addresses(jail_set, bans)
        if refused:
            raise refused_items(self.name, self.jail, len(items), refused)

    def unban(self, target: Target) -> None:
        try:
            target = normalise(target)
        except (TypeError, ValueError) as error:
            raise BackendError(self.name, f"unban {target!r} in jail {self.jail}", str(error)) from None
        jail_set = self._set_for(target)
        with _LOCK:
            if jail_set.networks:
                # Interval sets refuse adding an overlapping network, so only delete what is there.
                if target in self._elements(jail_set, f"unban {target}"):
                    self._run(f"unban {target}", [element_command("delete", jail_set, [element(target, None)])])
                return
            # Deleting a missing element fails the whole transaction; adding it first makes it present.
            self._run(f"unban {target}", [element_command(verb, jail_set, [element(target, None)])
                                          for verb in ("add", "delete")])

    def list(self) -> dict[Target, float | None]:
        with _LOCK:
            found: dict[Target, float | None] = {}
            for jail_set in self.sets:
                found.update(self._elements(jail_set, "list bans"))
            return found

    def teardown(self) -> None:
        """Delete this jail's chain and sets; the table too when nothing else is left in it."""
        with _LOCK:
            listing = self._structure("tear down")
            if not listing["exists"]:
                return
            commands = []
            if self.chain in listing["chains"]:
                commands += [chain_command("flush", self.chain, 0), chain_command("delete", self.chain, 0)]
            ours = {self.chain, *(jail_set.name for jail_set in self.sets)}
            commands += [set_command("delete", jail_set) for jail_set in self.sets if jail_set.name in listing["sets"]]
            if not (listing["others"] or (set(listing["chains"]) | set(listing["sets"])) - ours):
                commands.append(table_command("delete"))
            if commands:
                self._run("tear down", commands)

    # -- helpers (called with _LOCK held)

    def _check_adoptable(self, jail_set: JailSet, found: dict | None) -> None:
        """An existing set is adopted with its elements if it can hold what this jail puts in it."""
        if found is None or (found.get("type") == jail_set.type and set(jail_set.flags) <= set(found.get("flags", []))):
            return
        name = f"{FAMILY} {TABLE} {jail_set.name}"
        raise BackendError(self.name, f"set up jail {self.jail}", (
            f"set {name} exists as type {found.get('type')} flags {','.join(found.get('flags', [])) or 'none'}, "
            f"expected {jail_set.type} flags {','.join(jail_set.flags)}; remove it with `nft delete set {name}`"))

    def _set_for(self, target: Target) -> JailSet:
        networks = isinstance(target, ipaddress.IPv4Network | ipaddress.IPv6Network)
        return next(s for s in self.sets if s.version == target.version and s.networks == networks)

    def _ban_addresses(self, jail_set: JailSet, bans: dict[Target, int | None]) -> None:
        # add (a no-op when present) + delete + add with the new timeout: the kernels before 6.10
        # keep an existing element's old timeout on a plain add, and "ban replaces the ttl".
        targets = list(bans)
        for start in range(0, len(targets), CHUNK):
            chunk = targets[start:start + CHUNK]
            bare = [element(target, None) for target in chunk]
            self._run(f"ban {len(chunk)} address(es)", [
                element_command("add", jail_set, bare), element_command("delete", jail_set, bare),
                element_command("add", jail_set, [element(target, bans[target]) for target in chunk])])

    def _ban_networks(self, jail_set: JailSet, bans: dict[Target, int | None]) -> list[str]:
        """Ban networks; one overlapping a different banned network is refused (an interval set
        cannot hold both), the same network gets its new timeout."""
        present = self._elements(jail_set, "ban networks")
        accepted, refused = fit_networks(list(present), list(bans))
        replace = [network for network in accepted if network in present]
        commands = []
        if replace:
            commands.append(element_command("delete", jail_set, [element(network, None) for network in replace]))
        for start in range(0, len(accepted), CHUNK):
            chunk = accepted[start:start + CHUNK]
            commands.append(element_command("add", jail_set, [element(network, bans[network]) for network in chunk]))
        if commands:
            self._run(f"ban {len(accepted)} network(s)", commands)
        return [f"{network}: overlaps banned network {other}; unban that first" for network, other in refused]

    def _elements(self, jail_set: JailSet, action: str) -> dict[Target, float | None]:
        return parse_elements(self._run(action, [{"list": {"set": where(name=jail_set.name)}}]))

    def _structure(self, action: str) -> dict:
        """Our table without set elements: `exists`, `sets` and `chains` by name, and `others`
        (any other kind of object in the table)."""
        try:
            output = run_json(_handle(), [{"list": {"table": {"family": FAMILY, "name": TABLE}}}], terse=True)
        except NftError as error:
            if "No such file or directory" in str(error):
                return {"exists": False, "sets": {}, "chains": {}, "others": []}
            raise self._failure(action, str(error)) from None
        structure: dict = {"exists": True, "sets": {}, "chains": {}, "others": []}
        for entry in output.get("nftables", []):
            kind, body = next(iter(entry.items()))
            if kind in ("set", "chain"):
                structure[f"{kind}s"][body["name"]] = body
            elif kind not in ("metainfo", "table", "rule"):
                structure["others"].append(kind)
        return structure

    def _run(self, action: str, commands: list[dict]) -> dict:
        try:
            return run_json(_handle(), commands)
        except NftError as error:
            raise self._failure(action, str(error)) from None

    def _failure(self, action: str, reason: str) -> BackendError:
        if "Operation not permitted" in reason:
            reason += " (needs root or CAP_NET_ADMIN in this network namespace)"
        elif "No such file or directory" in reason:
            reason += f" (table {FAMILY} {TABLE}, a set or chain of jail {self.jail} is missing: run setup() first)"
        elif "Protocol not supported" in reason or "Address family not supported" in reason:
            reason += " (the kernel has no nf_tables: load the nf_tables module)"
        return BackendError(self.name, f"{action} in jail {self.jail}", reason)


def _handle():
    global _HANDLE
    if _HANDLE is None:
        _HANDLE = open_nftables()
    return _HANDLE
