"""How often a reporting action may tell a shared blocklist about an address: once per address per
`interval`, and at most `daily_limit` reports a UTC day, whatever the number of bans."""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime, timezone

log = logging.getLogger("jailwarden.actions")

REMEMBERED = 100_000  # addresses whose last report time is kept


class Pacing:
    def __init__(self, who: str, interval: float, daily_limit: int) -> None:
        if not interval >= 0 or isinstance(daily_limit, bool) or not isinstance(daily_limit, int) or daily_limit < 1:
            raise ValueError(f"{who}: interval must be at least 0 seconds and daily_limit at least 1")
        self.who, self.interval, self.daily_limit = who, float(interval), daily_limit
        self._reported: OrderedDict[str, float] = OrderedDict()
        self._day, self._today = "", 0
        self.skipped = 0

    def allows(self, address: str, now: float) -> bool:
        """May `address` be reported at `now`? A report refused here is counted in `skipped`."""
        last = self._reported.get(address)
        if last is not None and now - last < self.interval:
            self.skipped += 1
            return False
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._today = day, 0
        if self._today >= self.daily_limit:
            self.skipped += 1
            if self._today == self.daily_limit:
                log.warning("action %s: daily limit of %d reports reached; none until 00:00 UTC", self.who,
                            self.daily_limit)
                self._today += 1
            return False
        return True

    def sent(self, address: str, now: float) -> None:
        self._today += 1
        self._reported[address] = now
        self._reported.move_to_end(address)
        if len(self._reported) > REMEMBERED:
            self._reported.popitem(last=False)
