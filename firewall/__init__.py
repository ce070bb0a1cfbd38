"""Firewall backends: putting bans into the kernel and taking them out.

A backend is one module and one class, registered in `BACKENDS` by name and built as
`backend_class(name)(jail, **options)`, one instance per jail. The interface:

- `setup()`: create what the backend needs (sets, chains, hook rules); idempotent, and it
  adopts what an earlier run left behind, so a crash between `setup` and `teardown` is repaired
  by the next `setup`.
- `ban(target, ttl)`: `target` an `ipaddress` address or network (IPv4-mapped IPv6 already
  normalised to IPv4 by the caller), `ttl` seconds or None for a ban without end. Banning
  what is already banned replaces its ttl.
- `ban_many(items)`: the same for many `(target, ttl)` pairs, batched where the mechanism allows.
- `unban(target)`: no error if it was not banned.
- `list()`: what the kernel holds now, `{target: seconds left or None}`, for reconciling.
- `teardown()`: remove exactly what `setup` created, nothing else.

Every failure raises `BackendError`, saying which backend, what it tried and what to do; a
`ban_many` that refused some items applies the rest and then raises one naming them.
Nothing here imports from `agent`, and nothing runs a command: only netlink (pyroute2),
libxtables (python-iptables), libnftables, and files.
"""

from __future__ import annotations

import importlib
import ipaddress
from typing import Protocol

Target = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network


class BackendError(Exception):
    """A backend that could not do something: `backend`, what it tried, and why (actionable).

    `partial` is true when `ban_many` applied every item but the ones the reason names, which
    it refused for good (not an address, IPv6 where the jail has none, a foreign route in the
    way): trying them again would fail again."""

    def __init__(self, backend: str, action: str, reason: str, partial: bool = False) -> None:
        super().__init__(f"{backend}: {action}: {reason}")
        self.backend = backend
        self.action = action
        self.reason = reason
        self.partial = partial


def refused_items(backend: str, jail: str, total: int, refused: list[str]) -> BackendError:
    """The partial BackendError of a `ban_many` that refused `refused` ("item: why") of `total`."""
    shown = "; ".join(refused[:20]) + (f"; and {len(refused) - 20} more" if len(refused) > 20 else "")
    return BackendError(backend, f"ban {len(refused)} of {total} targets in jail {jail}", shown, partial=True)


class Backend(Protocol):
    name: str

    def setup(self) -> None: ...

    def ban(self, target: Target, ttl: float | None) -> None: ...

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None: ...

    def unban(self, target: Target) -> None: ...

    def list(self) -> dict[Target, float | None]: ...

    def teardown(self) -> None: ...


BACKENDS = {
    "ipset": "firewall.ipset:IpsetBackend",
    "nftables": "firewall.nftables:NftablesBackend",
    "iptables": "firewall.iptables:IptablesBackend",
    "route": "firewall.route:RouteBackend",
    "hostsdeny": "firewall.hostsdeny:HostsDenyBackend",
    "log": "firewall.log:LogBackend",
}


def backend_class(name: str) -> type:
    """The class registered as `name`; imported only when chosen (each needs its own library)."""
    module, _, attribute = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
