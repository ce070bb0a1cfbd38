"""Log backend: a dry run that bans nothing. Each ban and unban is logged to
`jailwarden.firewall` with its jail, target and ttl, and kept in memory so that `list()` answers
like a kernel set with timeouts would; nothing outside the process is touched."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable

from firewall import BackendError, Target

log = logging.getLogger("jailwarden.firewall")


class LogBackend:
    """Records bans instead of enforcing them (try a jail's filter and thresholds on live traffic).

    Options:
    - `clock` (default time.time): what "now" is, for tests.

    Bans end by themselves like kernel set entries: `list()` leaves out those past their end. The
    record lives in this process only, so a restarted agent finds nothing to adopt.
    """

    name = "log"

    def __init__(self, jail: str, clock: Callable[[], float] = time.time) -> None:
        self.jail = jail
        self._clock = clock
        self._ends: dict[Target, float | None] = {}  # target -> end (epoch seconds) or None: permanent

    def setup(self) -> None:
        log.info("jail %s: firewall backend log: dry run, bans are logged, nothing is blocked", self.jail)

    def ban(self, target: Target, ttl: float | None) -> None:
        try:
            self._ban(_normalise(target), _checked_ttl(ttl), self._clock())
        except ValueError as error:
            raise BackendError(self.name, f"ban {target!r}", str(error)) from None

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None:
        """Each item logged; one that is not an address or network with a valid ttl is skipped
        with a warning naming it, and the others are still recorded."""
        now = self._clock()
        for item in items:
            try:
                target, ttl = item
                self._ban(_normalise(target), _checked_ttl(ttl), now)
            except (TypeError, ValueError) as error:
                log.warning("jail %s: dry run: ban of %r skipped: %s", self.jail, item, error)

    def unban(self, target: Target) -> None:
        try:
            target = _normalise(target)
        except ValueError as error:
            raise BackendError(self.name, f"unban {target!r}", str(error)) from None
        was_banned = self._ends.pop(target, False) is not False
        log.info("jail %s: dry run: would unban %s%s", self.jail, target, "" if was_banned else " (was not banned)")

    def list(self) -> dict[Target, float | None]:
        now = self._clock()
        self._ends = {target: end for target, end in self._ends.items() if end is None or end > now}
        return {target: None if end is None else end - now for target, end in self._ends.items()}

    def teardown(self) -> None:
        # Like a real backend's teardown, the bans recorded go with it.
        log.info("jail %s: firewall backend log: teardown, %d recorded bans forgotten", self.jail, len(self._ends))
        self._ends.clear()

    def _ban(self, target: Target, ttl: float | None, now: float) -> None:
        self._ends[target] = None if ttl is None else now + ttl
        log.info("jail %s: dry run: would ban %s %s", self.jail, target,
                 "permanently" if ttl is None else f"for {ttl:.1f} s")


def _checked_ttl(ttl: object) -> float | None:
    if ttl is None or ttl == math.inf:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl {ttl!r} is not a positive number of seconds or None")
    return float(ttl)


def _normalise(target: object) -> Target:
    if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is not None:
        return target.ipv4_mapped
    if isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                           ipaddress.IPv6Network)):
        return target
    raise ValueError(f"{target!r} is not an ipaddress address or network")
