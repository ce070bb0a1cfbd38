"""The pipeline: an event in, what it changed out. Router -> filters -> jails -> ban book,
sans-IO: the caller passes `now` and acts on the returned outcomes (log, firewall, store)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from agent.addresses import AddressSet, Network
from agent.bans import Ban, BanBook, BanPolicy
from agent.events import LogEvent
from agent.jail import BanDecision, Jail
from agent.prefixes import PrefixTracker
from agent.router import Router
from parsers.filter import Failure, Filter


@dataclass(slots=True)
class JailSetup:
    """One configured jail: its filter (compiled for its mode), its counter and its ban policy."""

    name: str
    filter: Filter
    jail: Jail
    policy: BanPolicy
    fingerprint: str = ""  # of the filter file and mode it was built from, so a reload sees a change
    prefixes: PrefixTracker | None = None  # aggregation by prefix, if the jail has it


class Outcome(NamedTuple):
    """What one failure did in one jail.

    kind: "counted" (in the window, no ban yet), "banned" (`ban` is the resulting ban),
    "extended" (the address was banned already and reached maxretry again: `ban` is the same
    ban ending later), "held" (the same, but the ban already ends later than a new one would),
    "ignored" (the address is on the ignore list), "untrusted" (the jail requires a program
    identity the writer cannot forge, and this entry's can be forged), "evidence" (a line that
    names the address of an attempt another line counts), "stale" (older than findtime),
    "covered" (from before the start of the address's current ban in the jail, which answers it
    already: lines read again after a crash, or before a ban the firewall held at start).
    """

    kind: str
    jail: str
    failure: Failure
    ban: Ban | None = None
    decision: BanDecision | None = None


_NOTHING: tuple[Outcome, ...] = ()


class Pipeline:
    def __init__(self, jails: Iterable[JailSetup], book: BanBook) -> None:
        self.jails = {setup.name: setup for setup in jails}
        self.book = book
        # Never banned in any jail: the host's own addresses (loopback always, in Jail).
        self.protected = AddressSet()
        self.router = Router(setup.filter for setup in self.jails.values())
        self._by_filter: dict[int, list[JailSetup]] = {}
        for setup in self.jails.values():
            self._by_filter.setdefault(id(setup.filter), []).append(setup)
        # Filters whose regexes may be slow on what a local user writes, used only by jails that
        # count trusted entries: an untrusted entry is not run through them at all (one forged
        # 64 KiB line would otherwise hold the whole loop).
        self._trusted_only = {key for key, setups in self._by_filter.items()
                              if not setups[0].filter.linear and all(s.jail.require_trusted for s in setups)}

    def handle(self, event: LogEvent, now: float) -> tuple[Outcome, ...] | list[Outcome]:
        """Run one event through every jail that wants it."""
        outcomes: list[Outcome] | None = None
        for flt in self.router.candidates(event):
            if id(flt) in self._trusted_only and flt.identify(event) is False:
                continue
            failure = flt.match(event)
            if failure is None:
                continue
            for setup in self._by_filter[id(flt)]:
                outcome = self._record(setup, failure, now)
                if outcomes is None:
                    outcomes = []
                outcomes.append(outcome)
        return _NOTHING if outcomes is None else outcomes

    def record(self, jail: str, failure: Failure, now: float) -> Outcome:
        """A failure reported straight to `jail` (an application's report), through the same
        checks as one a filter found: ignore list, findtime, maxretry."""
        return self._record(self.jails[jail], failure, now)

    def _record(self, setup: JailSetup, failure: Failure, now: float) -> Outcome:
        jail = setup.jail
        if jail.require_trusted and not failure.trusted:
            return Outcome("untrusted", setup.name, failure)
        if not failure.counts:
            return Outcome("evidence", setup.name, failure)
        if jail.is_ignored(failure.address) or failure.address in self.protected:
            return Outcome("ignored", setup.name, failure)
        if failure.time <= now - jail.findtime:
            return Outcome("stale", setup.name, failure)
        ban = self.book.current(setup.name, failure.address)
        if ban is not None and failure.time <= ban.start:
            return Outcome("covered", setup.name, failure)
        decision = jail.record(failure, now)
        if decision is None:
            return Outcome("counted", setup.name, failure)
        result = self.book.ban(decision, now, setup.policy)
        kind = "banned" if ban is None else "extended" if result.end > ban.end else "held"
        return Outcome(kind, setup.name, failure, result, decision)

    def aggregate(self, ban: Ban, now: float) -> Ban | str | None:
        """A new ban of one address, counted towards its prefix: the prefix's ban when it reaches
        the jail's aggregation threshold, or why it cannot be banned (a protected or ignored
        address lies in it), or None."""
        setup = self.jails.get(ban.jail)
        if setup is None or setup.prefixes is None or isinstance(ban.address, Network):
            return None
        prefix = setup.prefixes.record(ban.address, now)
        if prefix is None or self.book.current(ban.jail, prefix) is not None:
            return None
        if prefix.is_loopback or self.protected.overlaps(prefix) or setup.jail.ignore.overlaps(prefix):
            return f"{prefix} holds one of this host's addresses or an address on the ignore list"
        rule = setup.prefixes.rule
        return self.book.ban((ban.jail, prefix), now, setup.policy,
                             reason=f"{rule.bans} addresses of {prefix} banned within {rule.window:g} s")
