"""The ban book: which addresses are banned in which jail, until when, and how often before.

It decides ban lengths and keeps the expiry schedule; it never touches the kernel.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, replace

from agent.addresses import Address, Network, normalise
from agent.jail import BanDecision

WEEK = 7 * 24 * 3600.0


@dataclass(slots=True, frozen=True)
class Ban:
    """`address` (or a network, banned for aggregation by prefix) banned in `jail` from `start` to
    `end` (`math.inf`: permanent).

    `offence` is 1 for the address's first ban in this jail within the ban history, 2 for the
    next, and so on.
    """

    jail: str
    address: Address
    start: float
    end: float
    offence: int
    reason: str = ""

    @property
    def permanent(self) -> bool:
        return self.end == math.inf


@dataclass(slots=True, frozen=True)
class BantimeIncrement:
    """Repeat offenders: the n-th ban lasts `bantime * factor**(n-1)`, but never more than `max`."""

    factor: float = 2.0
    max: float = WEEK

    def __post_init__(self) -> None:
        if not (1 <= self.factor < math.inf):
            raise ValueError(f"factor must be a number of at least 1, got {self.factor}")
        if not self.max > 0:
            raise ValueError(f"max must be a positive duration, got {self.max}")


@dataclass(slots=True, frozen=True)
class BanPolicy:
    """How long a jail bans: `bantime` seconds (`math.inf`: permanent), optionally growing."""

    bantime: float
    increment: BantimeIncrement | None = None

    def __post_init__(self) -> None:
        if not self.bantime > 0:
            raise ValueError(f"bantime must be positive (math.inf for permanent), got {self.bantime}")
        if self.increment is not None and self.increment.max < self.bantime:
            raise ValueError(
                f"the increment's max ({self.increment.max:g}s) is shorter than bantime ({self.bantime:g}s)"
            )

    def duration(self, offence: int) -> float:
        """Seconds the `offence`-th ban lasts."""
        if self.increment is None or offence <= 1:
            return self.bantime
        try:
            length = self.bantime * self.increment.factor ** (offence - 1)
        except OverflowError:
            length = math.inf
        return min(length, self.increment.max)


class BanBook:
    """Active bans per jail, their expiry schedule, and a bounded history of past bans.

    Schedule: bans ordered by end time. Unbanning or extending leaves the old entry scheduled;
    it is recognised as stale (the ban it names is no longer the active one) and skipped, and
    the schedule is rebuilt once stale entries outnumber active bans, so every operation stays
    O(log n) amortised. Permanent bans are never scheduled.

    History: when a ban ends (expiry or unban) its offence number and end time are remembered per
    (jail, address) for `history_window` seconds, so the next ban within that time is offence + 1.
    At most `max_history` entries are kept; beyond that the longest-released are forgotten first.

    Re-banning an address that is still banned in the same jail is not a new offence (the same
    burst of failures often yields more than one decision): the ban is extended to
    `now + duration(its offence)` if that ends later, and is otherwise left as it is.
    """

    def __init__(self, *, history_window: float = WEEK, max_history: int = 100_000) -> None:
        if not history_window >= 0:
            raise ValueError(f"history_window must not be negative, got {history_window}")
        if max_history < 0:
            raise ValueError(f"max_history must not be negative, got {max_history}")
        self.history_window = history_window
        self.max_history = max_history
        self._active: dict[str, dict[Address, Ban]] = {}
        self._count = 0
        # The expiry schedule: a heap of distinct end times, and the bans ending at each (one Ban,
        # or a list of them in the order they were scheduled). Comparing bare floats keeps the
        # heap about three times faster than (end, sequence, ban) tuples.
        self._schedule: list[float] = []
        self._due: dict[float, Ban | list[Ban]] = {}
        self._stale = 0
        # (jail, address) -> (offence, released); insertion order is roughly release order.
        self._history: OrderedDict[tuple[str, Address], tuple[int, float]] = OrderedDict()

    def ban(
        self,
        target: BanDecision | tuple[str, Address],
        now: float,
        policy: BanPolicy,
        reason: str = "",
    ) -> Ban:
        """Ban a jail's decision, or a (jail, address) pair (manual ban); returns the active ban."""
        if isinstance(target, BanDecision):
            jail, address = target.jail, target.address
            reason = reason or f"{target.failures} {target.failure.filter} failures"
        else:
            jail, address = target
            if not isinstance(address, Network):  # a network: aggregation by prefix
                address = normalise(address)
        bans = self._active.get(jail)
        if bans is None:
            bans = self._active[jail] = {}
        current = bans.get(address)
        if current is not None:
            end = now + policy.duration(current.offence)
            if end <= current.end:
                return current
            ban = replace(current, end=end)
        else:
            offence = self._previous_offence(jail, address, now) + 1
            ban = Ban(jail, address, now, now + policy.duration(offence), offence, reason)
            self._count += 1
        bans[address] = ban
        self._add_to_schedule(ban)
        if current is not None:
            self._drop_from_schedule(current)
        return ban

    def unban(self, jail: str, address: Address, now: float) -> Ban | None:
        """Lift the ban of `address` in `jail`; returns the ban as it was, or None if there was none."""
        if not isinstance(address, Network):
            address = normalise(address)
        ban = self._active.get(jail, {}).pop(address, None)
        if ban is None:
            return None
        self._count -= 1
        self._drop_from_schedule(ban)
        self._remember(ban, now)
        return ban

    def expire(self, now: float) -> list[Ban]:
        """Remove and return every ban with end <= now, earliest end first."""
        expired = []
        schedule = self._schedule
        while schedule and schedule[0] <= now:
            for ban in self._bans_due(heapq.heappop(schedule)):
                bans = self._active[ban.jail]
                if bans.get(ban.address) is not ban:
                    self._stale -= 1
                    continue
                del bans[ban.address]
                self._count -= 1
                self._remember(ban, ban.end)
                expired.append(ban)
        self._forget_history_before(now - self.history_window)
        return expired

    def next_expiry(self) -> float | None:
        """When the next ban ends (for the scheduler's sleep), or None if none ever will."""
        schedule = self._schedule
        while schedule:
            due = self._due[schedule[0]]
            if any(self._is_live(ban) for ban in (due if isinstance(due, list) else (due,))):
                return schedule[0]
            self._stale -= len(self._bans_due(heapq.heappop(schedule)))
        return None

    def restore(self, ban: Ban) -> None:
        """Re-add a ban read from the store as it is (offence included); one already over comes
        back from the next `expire()`, which also puts it into the history."""
        bans = self._active.setdefault(ban.jail, {})
        current = bans.get(ban.address)
        if current is ban:
            return
        bans[ban.address] = ban
        self._add_to_schedule(ban)
        if current is None:
            self._count += 1
        else:
            self._drop_from_schedule(current)

    def restore_history(self, jail: str, address: Address, offence: int, released: float) -> None:
        """Re-add a past ban read from the store, so the next ban of the address counts it."""
        self._remember(Ban(jail, address, released, released, offence), released)

    def next_offence(self, jail: str, address: Address, now: float) -> int:
        """The offence number a new ban of `address` in `jail` would get now."""
        return self._previous_offence(jail, address, now) + 1

    def active(self, jail: str | None = None) -> list[Ban]:
        """Active bans (of one jail, or all), each jail's in the order they were banned."""
        if jail is not None:
            return list(self._active.get(jail, {}).values())
        return [ban for bans in self._active.values() for ban in bans.values()]

    def count(self, jail: str) -> int:
        """How many bans are active in `jail` (len(self) counts every jail's)."""
        return len(self._active.get(jail, ()))

    def is_banned(self, jail: str, address: Address) -> bool:
        return normalise(address) in self._active.get(jail, {})

    def current(self, jail: str, address: Address) -> Ban | None:
        """The active ban of an already normalised `address` in `jail`, if any."""
        bans = self._active.get(jail)
        return bans.get(address) if bans else None

    def __len__(self) -> int:
        return self._count

    def _previous_offence(self, jail: str, address: Address, now: float) -> int:
        past = self._history.get((jail, address)) if self._history else None
        if past is None:
            return 0
        offence, released = past
        if released + self.history_window <= now:
            del self._history[(jail, address)]
            return 0
        return offence

    def _remember(self, ban: Ban, released: float) -> None:
        if self.max_history == 0:
            return
        key = (ban.jail, ban.address)
        self._history.pop(key, None)
        self._history[key] = (ban.offence, released)
        if len(self._history) > self.max_history:
            self._history.popitem(last=False)

    def _forget_history_before(self, cutoff: float) -> None:
        history = self._history
        while history and next(iter(history.values()))[1] <= cutoff:
            history.popitem(last=False)

    def _add_to_schedule(self, ban: Ban) -> None:
        end = ban.end
        if end == math.inf:
            return
        due = self._due.get(end)
        if due is None:
            self._due[end] = ban
            heapq.heappush(self._schedule, end)
        elif isinstance(due, list):
            due.append(ban)
        else:
            self._due[end] = [due, ban]

    def _bans_due(self, end: float) -> list[Ban] | tuple[Ban]:
        due = self._due.pop(end)
        return due if isinstance(due, list) else (due,)

    def _drop_from_schedule(self, ban: Ban) -> None:
        if ban.end == math.inf:
            return
        self._stale += 1
        if self._stale > self._count:
            self._schedule, self._due, self._stale = [], {}, 0
            for bans in self._active.values():
                for live in bans.values():
                    self._add_to_schedule(live)

    def _is_live(self, ban: Ban) -> bool:
        return self._active.get(ban.jail, {}).get(ban.address) is ban
