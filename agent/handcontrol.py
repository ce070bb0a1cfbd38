"""What people and applications ask of the running agent, on the control and report sockets:
ban or unban by hand, report a failure; and the addresses no ban may touch (the host's own, those
users are logged in from), kept up to date, with the check that keeps a ban off them.
A part of `Agent` (agent/daemon.py), kept apart so that the daemon's module stays about running."""

from __future__ import annotations

import asyncio
import time

from agent.addresses import Address, AddressSet, Network
from agent.bans import Ban, BanPolicy
from agent.events import LogEvent
from agent.host import read_own_addresses
from agent.pipeline import Outcome
from parsers.filter import Failure


class HandControl:
    """Mixed into Agent; uses its pipeline, banned(), lift(), fleet, sessions, sources and _report()."""

    def protection(self, jail: str, address: Address | Network) -> str | None:
        """Why `address` (or a network: anything in it) must not be banned in `jail`, or None."""
        network = isinstance(address, Network)
        if address.is_loopback:
            return "it is a loopback address"
        if self.sessions is not None and any(session in address if network else session == address
                                             for session in self.sessions.addresses):
            return "a user is logged in on this host from it (see `who`)"
        if self.pipeline.protected.overlaps(address) if network else address in self.pipeline.protected:
            return "it is one of this host's own addresses" if not network else "it holds this host's addresses"
        ignore = self.pipeline.jails[jail].jail.ignore
        if ignore.overlaps(address) if network else self.pipeline.jails[jail].jail.is_ignored(address):
            return f"it is on jail {jail}'s ignore list" if not network else f"it overlaps jail {jail}'s ignore list"
        return None

    def report_failure(self, jail: str, address: Address, reason: str) -> Outcome:
        """An application reported a failure of `address` (control or report socket)."""
        now = time.time()
        event = LogEvent(now, "api", reason, {}, True)
        outcome = self.pipeline.record(jail, Failure(address, "report", now, reason, trusted=True), now)
        self._report(outcome, event)
        return outcome

    def manual_ban(self, jail: str, address: Address, seconds: float | None) -> Ban:
        policy = self.pipeline.jails[jail].policy if seconds is None else BanPolicy(seconds)
        ban = self.pipeline.book.ban((jail, address), time.time(), policy, reason="manual ban")
        self.banned(ban)
        return ban

    def manual_unban(self, jail: str | None, address: Address | None) -> list[Ban]:
        """Lift the bans of `address` (None: every address) in `jail` (None: every jail); the
        failure windows go too, so the next failure starts from zero."""
        book, now = self.pipeline.book, time.time()
        bans = [ban for ban in book.active(jail) if address is None or ban.address == address]
        for ban in bans:
            book.unban(ban.jail, ban.address, now)
            setup = self.pipeline.jails.get(ban.jail)
            if setup is not None:
                setup.jail.forget(ban.address)
            self.evidence.forget(ban.jail, ban.address)
            self.lift(ban, now, "manual unban")
            if self.fleet is not None:
                self.fleet.publish("unban", ban, now)
        return bans

    async def _protect_own_addresses(self) -> None:
        if self.sessions is not None:
            await asyncio.to_thread(self.sessions.refresh)
        addresses = await read_own_addresses()
        if addresses is not None:  # None: logged; loopback stays protected
            self.own = frozenset(addresses)
            for source in self.sources:
                if source.name == "syslog":  # its senders from these addresses are local processes
                    source.local_senders.own = self.own
        self._protect()

    def _protect(self) -> None:
        sessions = self.sessions.addresses if self.sessions is not None else frozenset()
        self.pipeline.protected = AddressSet(self.own | sessions)

    async def _refresh_own_addresses(self) -> None:
        while True:  # addresses come and go (DHCP, VPNs); a minute's lag is the cost of no netlink watch
            for _ in range(30):
                await asyncio.sleep(2)
                # utmp is a small file, looked at (a stat) every 2 s: a new session is protected at once.
                if self.sessions is not None and await asyncio.to_thread(self.sessions.refresh):
                    self._protect()
            await self._protect_own_addresses()
