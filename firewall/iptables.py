"""The iptables backend (for hosts without ipset): one rule per banned address or network in a
chain of the jail's own in the IPv4 and IPv6 filter tables, entered by a jump from a parent chain.

Written through python-iptables (legacy xtables, in-process libiptc); plumbing in _iptables_xt.py.
"""

from __future__ import annotations

import re

from . import BackendError, Target, refused_items
from ._iptables_xt import NAME, VERDICTS, Tables, ban_rule, banned_sources, jump_rule, jumps_to, load_iptc
from .targets import Network, as_network, as_target, check_ttl, network_to_unban

CHAIN_MAX = 28  # XT_EXTENSION_MAXNAMELEN 29 including the terminating NUL
MULTIPORT_MAX = 15  # ports one multiport match holds
PROTOCOLS = ("tcp", "udp", "sctp")
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]*")


class IptablesBackend:
    """Bans as iptables rules `-A jw-<jail> -s ADDRESS -j DROP` (or REJECT), IPv4 and IPv6.

    Per jail, in the filter table of iptables and ip6tables:
    - chain `jw-<jail>` with one rule per banned address or network;
    - one jump to it at the top of the parent chain (more than one when `ports` are set without
      a `protocol`: one per protocol).

    Options:
    - `chain="INPUT"`: the parent chain holding the jump (a built-in or an existing user chain).
    - `action="drop"`: or "reject" (ICMP port unreachable, so a client fails at once).
    - `protocol=None`: "tcp", "udp" or "sctp": only that protocol enters the jail's chain.
    - `ports=()`: destination ports (at most 15) entering the jail's chain; with protocol None
      one jump each for tcp, udp and sctp.
    - `ipv6=True`: False leaves ip6tables alone (kernels without IPv6); IPv6 bans are refused.
    - `jail_chain=None`: the jail's chain name, `jw-<jail>` by default; at most 28 characters.

    iptables rules have no expiry: the ttl is checked and otherwise ignored, this backend keeps no
    timers (the agent unbans on schedule), and `list()` returns None as the ttl of every ban.
    `setup()` adopts an existing chain and jump; `teardown()` removes the jump, flushes and
    deletes the chain, and touches no other rule. Each call is one commit per table, taken under
    the xtables lock that iptables(8) uses.
    """

    name = NAME

    def __init__(self, jail: str, *, chain: str = "INPUT", action: str = "drop", protocol: str | None = None,
                 ports: tuple[int, ...] | list[int] = (), ipv6: bool = True, jail_chain: str | None = None) -> None:
        configure = f"configure jail {jail!r}"
        own = f"jw-{jail}" if jail_chain is None else jail_chain
        for option, value in (("jail_chain", own), ("chain", chain)):
            if not isinstance(value, str) or not _CHAIN_NAME.fullmatch(value) or len(value) > CHAIN_MAX:
                raise BackendError(self.name, configure, f"{option} {value!r} is not a usable iptables chain name "
                                   f"(letters, digits, '_.:@+-', at most {CHAIN_MAX} characters); for a long jail "
                                   "name set the option jail_chain")
        if own == chain:
            raise BackendError(self.name, configure, f"the jail's chain and its parent chain are both {chain!r}")
        if action not in VERDICTS:
            raise BackendError(self.name, configure, f"action must be drop or reject, not {action!r}")
        if protocol is not None and protocol not in PROTOCOLS:
            raise BackendError(self.name, configure, f"protocol must be one of {PROTOCOLS} or None, not {protocol!r}")
        ports = tuple(sorted(set(ports)))
        if any(isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536 for port in ports):
            raise BackendError(self.name, configure, f"ports must be integers 1-65535, not {ports!r}")
        if len(ports) > MULTIPORT_MAX:
            raise BackendError(self.name, configure, f"at most {MULTIPORT_MAX} ports (one multiport match), "
                               f"not {len(ports)}")
        self.jail, self.parent, self.chain, self.verdict = jail, chain, own, VERDICTS[action]
        self.protocols: tuple[str | None, ...] = (protocol,) if protocol or not ports else PROTOCOLS
        self.ports = ports
        self.versions = (4, 6) if ipv6 else (4,)
        self._iptc = load_iptc()
        self._tables = Tables(self._iptc)

    # -- the interface

    def setup(self) -> None:
        """Create the chain and the jump, adopting those that exist (bans in the chain stay). A jump
        to the chain that the options no longer describe is replaced."""
        for version in self.versions:
            self._tables.change(version, f"set up jail {self.jail}", self._ensure)

    def ban(self, target: Target, ttl: float | None) -> None:
        self.ban_many([(target, ttl)])

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None:
        """All valid items in one commit per table; then, if any item was refused, one BackendError
        naming each refused item and why."""
        wanted: dict[int, dict[Network, None]] = {version: {} for version in (4, 6)}
        refused: list[str] = []
        for item in items:
            try:
                target, ttl = item
                check_ttl(ttl)
                network = as_network(target)
                if network.version not in self.versions:
                    raise ValueError("IPv6 is disabled for this jail (ipv6=False)")
                wanted[network.version][network] = None
            except (TypeError, ValueError) as error:
                refused.append(f"{item!r}: {error}")
        for version, networks in wanted.items():
            if networks:
                self._tables.change(version, f"ban {len(networks)} targets in jail {self.jail}",
                                    lambda table, networks=networks: self._add(table, networks))
        if refused:
            raise refused_items(self.name, self.jail, len(items), refused)

    def unban(self, target: Target) -> None:
        network = network_to_unban(self.name, self.jail, target)
        if network.version in self.versions:
            self._tables.change(network.version, f"unban {network} in jail {self.jail}",
                                lambda table: self._remove(table, network))

    def list(self) -> dict[Target, float | None]:
        """Every source banned in the jail's chain, with None as ttl (rules have no expiry)."""
        bans: dict[Target, float | None] = {}
        for version in self.versions:
            found = self._tables.read(version, f"list jail {self.jail}", self._sources)
            bans.update((as_target(network), None) for network in found)
        return bans

    def teardown(self) -> None:
        """Remove the jumps to the jail's chain from the parent chain, then flush and delete it."""
        for version in self.versions:
            self._tables.change(version, f"tear down jail {self.jail}", self._remove_all)

    # -- inside one table's transaction

    def _ensure(self, table) -> None:
        iptc = self._iptc
        if not table.is_chain(self.parent):
            raise BackendError(self.name, f"set up jail {self.jail}", f"the parent chain {self.parent!r} does not "
                               "exist in the filter table; create it or set the option chain")
        if not table.is_chain(self.chain):
            table.create_chain(self.chain)
        rule_class = self._rule_class(table)
        wanted = [jump_rule(iptc, rule_class, self.chain, protocol, self.ports) for protocol in self.protocols]
        present = jumps_to(iptc, rule_class, table, self.parent, self.chain)
        if len(present) == len(wanted) and all(sum(rule == jump for rule in present) == 1 for jump in wanted):
            return  # exactly the jumps we want, each once: left where they are (an administrator may have moved them)
        # Otherwise all go and the wanted ones come back at the top. libiptc deletes the first rule
        # equal to the one given, so deleting only a duplicate could delete the one to keep.
        parent = iptc.Chain(table, self.parent)
        for rule in present:
            parent.delete_rule(rule)
        for rule in reversed(wanted):
            parent.insert_rule(rule)

    def _add(self, table, networks: dict[Network, None]) -> None:
        if not table.is_chain(self.chain):
            self._ensure(table)  # an administrator deleted the chain: ban into a new one, with its jump
        chain, rule_class = self._iptc.Chain(table, self.chain), self._rule_class(table)
        present = banned_sources(table, self.chain)
        for network in networks:
            rules = [rule_class(entry, chain) for entry in present.get(network, [])]
            if any(rule.target.name == self.verdict for rule in rules):
                continue
            for rule in rules:  # banned with the other action before a configuration change
                chain.delete_rule(rule)
            chain.append_rule(ban_rule(self._iptc, rule_class, network, self.verdict))

    def _remove(self, table, network: Network) -> None:
        if table.is_chain(self.chain):
            chain, rule_class = self._iptc.Chain(table, self.chain), self._rule_class(table)
            # Delete the kernel's own rules (an administrator's REJECT may have other options).
            for rule in [rule_class(entry, chain) for entry in banned_sources(table, self.chain).get(network, [])]:
                chain.delete_rule(rule)

    def _sources(self, table) -> dict[Network, list]:
        return banned_sources(table, self.chain) if table.is_chain(self.chain) else {}

    def _rule_class(self, table) -> type:
        return self._tables.rule[6 if isinstance(table, self._iptc.Table6) else 4]

    def _remove_all(self, table) -> None:
        if table.is_chain(self.parent):
            parent = self._iptc.Chain(table, self.parent)
            for rule in jumps_to(self._iptc, self._rule_class(table), table, self.parent, self.chain):
                parent.delete_rule(rule)
        if table.is_chain(self.chain):
            table.flush_entries(self.chain)
            try:
                table.delete_chain(self.chain)
            except self._iptc.IPTCError as error:
                raise BackendError(self.name, f"tear down jail {self.jail}", (
                    f"{error}: chain {self.chain} is still the target of a rule outside {self.parent}; find it "
                    f"with `iptables-legacy -S | grep -- '-j {self.chain}'` and delete it")) from None
