"""How often one caller (a uid on the report socket, the HTTP endpoint's token) may report
failures: a token bucket per caller, refilled at `rate` a second up to `burst`. Sans-IO: the
caller passes `now`, any monotonic clock's seconds."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable


class RateLimit:
    def __init__(self, rate: float, burst: int, max_callers: int = 4096) -> None:
        if not 0 < rate < math.inf or burst < 1 or max_callers < 1:
            raise ValueError(f"a rate limit needs rate > 0, burst >= 1 and max_callers >= 1, got {rate}, {burst}, "
                             f"{max_callers}")
        self.rate = rate
        self.burst = burst
        self._max_callers = max_callers
        # caller -> (tokens left, when last seen); least recently seen first. A forgotten caller
        # comes back with a full bucket, which is what the oldest one has refilled to anyway.
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, caller: Hashable, now: float) -> float:
        """0.0 when `caller` may report now (and one report is spent), else the seconds until
        it may report once more."""
        tokens, last = self._buckets.pop(caller, (float(self.burst), now))
        # max(0, ...): a clock that stepped back refills nothing rather than draining the bucket.
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[caller] = (tokens, now)
        if len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)
        return wait

    def refusal(self, who: str, wait: float) -> str:
        """What a caller refused for `wait` seconds is told; `who` names it ("uid 33")."""
        retry = max(0.01, math.ceil(wait * 100) / 100)  # never "try again in 0 s"
        return (f"rate limited: more than {self.rate:g} reports a second from {who} (burst {self.burst}); "
                f"try again in {retry:g} s")

    def __len__(self) -> int:
        """Callers remembered."""
        return len(self._buckets)
