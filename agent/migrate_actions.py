"""Fail2Ban's `action` entries sorted into what jailwarden does itself (a ban in a firewall
backend, on which ports) and what it does not (mail, reporting and other shell templates).

Only names and options are looked at: no action file is read, no command is run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.migrate_values import Reference, ports

# Fail2Ban ban actions by name prefix, and jailwarden's backend doing the same job.
_BACKENDS = (("iptables", "ipset"), ("ip6tables", "ipset"), ("ipset", "ipset"), ("nftables", "nftables"),
             ("route", "route"), ("hostsdeny", "hostsdeny"), ("dummy", "log"))
# Firewalls Fail2Ban drives through their own tools, which jailwarden does not.
_OTHER_FIREWALLS = ("firewallcmd", "shorewall", "ufw", "pf", "ipfw", "bsd-ipfw", "ipfilter", "npf", "apf",
                    "osx-afctl", "osx-ipfw", "symbiosis-blacklist", "nginx-block-map")
_SCOPED = ("ipset", "nftables", "iptables")  # backends that can limit a ban to ports


def firewall_backend(name: str) -> str | None:
    """jailwarden's backend for Fail2Ban ban action `name`: "" for a firewall jailwarden does not
    drive, None for an action that is no firewall at all."""
    for prefix, backend in _BACKENDS:
        if name == prefix or name.startswith(prefix + "-"):
            return backend
    if any(name == prefix or name.startswith(prefix + "-") for prefix in _OTHER_FIREWALLS):
        return ""
    return None


@dataclass(slots=True, frozen=True)
class BanActions:
    backend: str
    source: str  # the Fail2Ban ban actions it stands for, for a comment
    ports: tuple[int, ...] = ()  # (): every port
    protocol: str = "tcp"
    problems: tuple[tuple[str, str, str], ...] = ()  # (action name, jail key, reason)


def ban_actions(entries: list[Reference], ban_names: set[str], agent_backend: str,
                value: Callable[[str], str | None]) -> BanActions:
    """What a jail's `entries` amount to. `ban_names` are its banaction and banaction_allports
    (ban actions even when their names are unknown); `value(key)` reads the jail's port and
    protocol for ban actions that do not name their own."""
    problems: list[tuple[str, str, str]] = []
    bans: list[tuple[Reference, str]] = []
    for entry in entries:
        backend = firewall_backend(entry.name)
        if entry.name.endswith(".py"):
            problems.append((entry.name, "action", f"{entry.describe()} is not converted: a Python action of "
                             "Fail2Ban's, which jailwarden does not load"))
        elif backend is None and entry.name not in ban_names:
            problems.append((entry.name, "action", f"{entry.describe()} is not converted: Fail2Ban runs it as "
                             "shell commands; jailwarden never runs shell commands"))
        else:
            bans.append((entry, backend or ""))
    if not bans:
        problems.append(("", "action", "no ban action: written as backend \"log\" (bans are logged, no firewall is "
                         "changed), as Fail2Ban only ran the actions named here"))
        return BanActions("log", "Fail2Ban had no ban action", problems=tuple(problems))
    for entry, backend in bans:
        if not backend:
            problems.append((entry.name, "banaction", f"ban action {entry.name} has no jailwarden backend: the "
                             f"jail uses [agent] backend ({agent_backend})"))
    backends = list(dict.fromkeys(backend for _, backend in bans if backend))
    chosen = backends[0] if backends else agent_backend
    if len(backends) > 1:
        problems.append(("", "action", f"ban actions {', '.join(e.name for e, _ in bans)} use different "
                         f"firewalls; a jailwarden jail uses one: {chosen}"))
    source = ", ".join(dict.fromkeys(entry.name for entry, _ in bans))
    if chosen not in _SCOPED:
        return BanActions(chosen, source, problems=tuple(problems))
    scope, protocol = _scope([entry for entry, _ in bans], value, problems)
    return BanActions(chosen, source, scope, protocol, tuple(problems))


def _scope(bans: list[Reference], value: Callable[[str], str | None],
           problems: list[tuple[str, str, str]]) -> tuple[tuple[int, ...], str]:
    """The ports and protocol the ban actions cover; () is every port."""
    found: dict[int, None] = {}
    protocols = set()
    for entry in bans:
        if "allports" in entry.name:
            return (), "tcp"
        protocol = (entry.options.get("protocol") or value("protocol") or "tcp").strip().lower()
        text = entry.options.get("port") or value("port") or ""
        try:
            listed = ports(text, protocol)
        except ValueError as error:
            problems.append((entry.name, "port", f"{error}: the jail bans every port"))
            return (), "tcp"
        if not listed:
            return (), "tcp"
        found.update(dict.fromkeys(listed))
        protocols.add(protocol)
    if len(protocols) > 1 or not protocols <= {"tcp", "udp"}:
        problems.append(("", "protocol", f"ports of {' and '.join(sorted(protocols))}: a jailwarden jail bans the "
                         "ports of tcp or of udp; written without ports (all traffic is banned)"))
        return (), "tcp"
    return tuple(found), protocols.pop()
