"""Facts about this host: its own addresses, read from the kernel over netlink (they are never
banned, and a syslog sender using one of them is a local process), its names (kept out of the
log lines that leave it), and its accounts' uids."""

from __future__ import annotations

import ipaddress
import logging
import pwd
import socket

from agent.addresses import Address, normalise

log = logging.getLogger("jailwarden")


async def read_own_addresses() -> set[Address] | None:
    """`own_addresses()` from a worker thread; None (logged) when netlink refuses."""
    import asyncio  # here: test-filter imports this module for account_uid, and starts faster without

    try:
        return await asyncio.to_thread(own_addresses)
    except Exception as error:  # noqa: BLE001 - a locked-down container: the caller keeps loopback protected
        log.error("cannot list this host's addresses to protect them from bans: %s", error)
        return None


def own_addresses() -> set[Address]:
    """Every address of every interface (raises OSError when netlink is refused).

    Blocking, and not callable from inside a running asyncio loop (pyroute2 0.9 runs a loop
    of its own): from async code, use `asyncio.to_thread(own_addresses)`."""
    from pyroute2 import IPRoute

    addresses: set[Address] = set()
    with IPRoute() as ipr:
        for message in ipr.get_addr():
            # On point-to-point links IFA_ADDRESS is the peer's and IFA_LOCAL ours; elsewhere
            # both are ours. Taking both protects the peer too, which errs on the safe side.
            for name in ("IFA_LOCAL", "IFA_ADDRESS"):
                value = message.get_attr(name)
                if value:
                    addresses.add(normalise(ipaddress.ip_address(value.split("%")[0])))
    return addresses


def account_uid(name: str) -> int | None:
    """The uid of the account `name` on this host (filters name daemons' accounts), or None."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def host_names() -> tuple[str, ...]:
    """This host's names: its hostname, its fully qualified name (which may ask DNS) and that
    name's first label."""
    names = {socket.gethostname(), socket.getfqdn()}
    return tuple(sorted(names | {name.split(".")[0] for name in names}))
