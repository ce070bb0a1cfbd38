"""A jail counts failures per address within `findtime` and decides when an address earns a ban."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.addresses import Address, AddressSet, Network, normalise
from parsers.filter import Failure


@dataclass(slots=True, frozen=True)
class BanDecision:
    """`address` reached `failures` (= maxretry) failures in `jail`; decided at `time` (the `now`)."""

    jail: str
    address: Address
    time: float
    failures: int
    failure: Failure


class Jail:
    """Per-address failure windows for one jail.

    Times: a failure counts at its own log time, clamped to `now` (a sender whose clock runs
    ahead cannot make its failures outlive the window). A failure already `findtime` or more
    older than `now` — replayed history, a late-forwarded line — is dropped and not tracked, so
    replaying the last `findtime` of the journal at start-up counts exactly what is still live.
    Failures may arrive out of order; each window is kept sorted.

    Memory: a window is a sorted tuple of at most `maxretry` times, in a dict kept in the order
    addresses last failed, bounded to `max_tracked` addresses (when full, the least recently
    failing address is forgotten). A window whose newest failure is `findtime` older than the
    largest `now` seen is dead: it is swept from the front of that order as failures come in,
    and never counted. (A plain ordered dict of tuples: a cachetools TTL cache took three dict
    entries and a link object per address, ~2.5 times the memory in a unique-address flood.)
    """

    def __init__(
        self,
        name: str,
        *,
        maxretry: int,
        findtime: float,
        ignore: AddressSet | Iterable[Network | Address] = (),
        max_tracked: int = 100_000,
        require_trusted: bool = False,
    ) -> None:
        if maxretry < 1:
            raise ValueError(f"maxretry must be at least 1, got {maxretry}")
        if not (0 < findtime < math.inf):
            raise ValueError(f"findtime must be a positive number of seconds, got {findtime}")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be at least 1, got {max_tracked}")
        self.name = name
        self.maxretry = maxretry
        self.findtime = findtime
        self.ignore = ignore if isinstance(ignore, AddressSet) else AddressSet(ignore)
        # Only failures whose program identity the writer could not forge count.
        self.require_trusted = require_trusted
        self.max_tracked = max_tracked
        self._clock = -math.inf
        self._windows: OrderedDict[Address, tuple[float, ...]] = OrderedDict()
        # Addresses whose window changed since the last `changed_windows()`, so the store is sent
        # only those; beyond `max_tracked` of them it is cleared and the next call lists all.
        self._changed: set[Address] = set()
        self._overflowed = False

    def record(self, failure: Failure, now: float) -> BanDecision | None:
        """Count one failure; a `BanDecision` when its address reaches `maxretry` within `findtime`."""
        if not failure.counts or (self.require_trusted and not failure.trusted):
            return None
        address = normalise(failure.address)
        if self.is_ignored(address):
            return None
        cutoff = now - self.findtime
        when = min(failure.time, now)
        if when <= cutoff:
            return None
        self._advance(now)
        windows = self._windows
        window = windows.pop(address, None)
        # A line standing for several identical failures adds them all (never more than
        # needed to reach maxretry, so a forged huge count costs no memory).
        added = (when,) * min(failure.repeat, self.maxretry)
        times = added if window is None else tuple(sorted([t for t in window if t > cutoff] + list(added)))
        self._changed_one(address)
        if len(times) >= self.maxretry:
            return BanDecision(self.name, address, now, len(times), failure)
        windows[address] = times
        if len(windows) > self.max_tracked:
            windows.popitem(last=False)
        return None

    def _changed_one(self, address: Address) -> None:
        changed = self._changed
        changed.add(address)
        if len(changed) > self.max_tracked:
            changed.clear()
            self._overflowed = True

    def _advance(self, now: float) -> None:
        """Move the clock to `now` (never back) and drop the dead windows at the front."""
        if now <= self._clock:
            return
        self._clock = now
        cutoff = now - self.findtime
        windows = self._windows
        while windows:
            address = next(iter(windows))
            if windows[address][-1] > cutoff:
                break
            del windows[address]

    def _live(self, times: tuple[float, ...]) -> tuple[float, ...]:
        cutoff = self._clock - self.findtime
        return times if times[0] > cutoff else tuple(t for t in times if t > cutoff)

    def is_ignored(self, address: Address) -> bool:
        # Loopback whatever the ignore list says: banning it breaks the host's own services.
        return address.is_loopback or address in self.ignore

    def forget(self, address: Address) -> None:
        """Drop the address's window (after a manual unban, so it starts again from zero). A
        network (a prefix ban) has no window."""
        if isinstance(address, Network):
            return
        address = normalise(address)
        self._windows.pop(address, None)
        self._changed_one(address)

    def windows(self) -> dict[Address, list[float]]:
        """Each tracked address's failure times, as of the latest `now` seen."""
        return {address: list(live) for address, times in self._windows.items() if (live := self._live(times))}

    def changed_windows(self, everything: bool = False) -> tuple[dict[Address, list[float] | None], bool]:
        """(windows, complete): the windows that changed since the last call (None: the address
        has none any more), for the store; windows that merely expire are not listed (the store
        prunes them). `complete` when every live window is listed instead, and only those: asked
        for with `everything`, or because more addresses changed than the jail tracks (a unique-
        address flood while the store was not written); the store then replaces all it holds."""
        changed, self._changed = self._changed, set()
        if everything or self._overflowed:
            self._overflowed = False
            return self.windows(), True
        windows = self._windows
        return {address: list(live) if (times := windows.get(address)) is not None and (live := self._live(times))
                else None for address in changed}, False

    def restore(self, address: Address, times: Iterable[float], now: float) -> None:
        """Put back a window saved by `windows()`; times outside `findtime` of `now` are dropped."""
        cutoff = now - self.findtime
        window = sorted(min(t, now) for t in times if t > cutoff)[-(self.maxretry - 1):] if self.maxretry > 1 else []
        if window:
            self._advance(now)
            address = normalise(address)
            self._windows.pop(address, None)
            self._windows[address] = tuple(window)
            if len(self._windows) > self.max_tracked:
                self._windows.popitem(last=False)

    def take_over(self, old: Jail, now: float) -> None:
        """This jail replaces `old` (a reload changed its settings): its windows, and what of them
        the store has not been sent yet, carry over."""
        for address, times in old.windows().items():
            self.restore(address, times, now)
        self._changed |= old._changed
        self._overflowed = old._overflowed

    def tracked(self) -> int:
        """How many addresses have a window, as of the latest `now` this jail saw (one whose
        failures all came out of order may be counted until it reaches the front and is swept)."""
        return len(self._windows)

    def __repr__(self) -> str:
        return f"Jail({self.name!r}, maxretry={self.maxretry}, findtime={self.findtime})"
