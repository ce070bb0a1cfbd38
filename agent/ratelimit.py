"""How often one caller (a uid on the report socket, the HTTP endpoint's token) may report
failures: a token bucket per caller, refilled at `rate` a second up to `burst`; and an endpoint's
counts of the reports it accepted and refused for the rate (`ReportLimit`). Sans-IO: the caller
passes `now`, any monotonic clock's seconds."""

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
        tokens = self._tokens(caller, now)
        self._buckets.pop(caller, None)
        wait = self._wait(tokens)
        self._buckets[caller] = (tokens if wait else tokens - 1.0, now)
        if len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)
        return wait

    def wait(self, caller: Hashable, now: float) -> float:
        """What take() would answer, spending nothing."""
        return self._wait(self._tokens(caller, now))

    def _tokens(self, caller: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(caller, (float(self.burst), now))
        # max(0, ...): a clock that stepped back refills nothing rather than draining the bucket.
        return min(float(self.burst), tokens + max(0.0, now - last) * self.rate)

    def _wait(self, tokens: float) -> float:
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def refusal(self, who: str, wait: float) -> str:
        """What a caller refused for `wait` seconds is told; `who` names it ("uid 33")."""
        retry = max(0.01, math.ceil(wait * 100) / 100)  # never "try again in 0 s"
        return (f"rate limited: more than {self.rate:g} reports a second from {who} (burst {self.burst}); "
                f"try again in {retry:g} s")

    def __len__(self) -> int:
        """Callers remembered."""
        return len(self._buckets)


class RateLimited(Exception):
    """A report refused for the rate: the message is what the caller is told, `wait` the seconds
    until it may report again."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


class ReportLimit:
    """An endpoint's reports: each caller held to `rate_limit` (None: no limit), and the counts
    `status` shows (`accepted`, `rate_limited`; an endpoint may add its own)."""

    def __init__(self, rate_limit: RateLimit | None) -> None:
        self.rate_limit = rate_limit
        self.counts = {"accepted": 0, "rate_limited": 0}

    def take(self, caller: Hashable, who: str, now: float) -> None:
        """Spend one of `caller`'s reports, or raise RateLimited with what `who` ("uid 33") is told."""
        if self.rate_limit is None:
            return
        wait = self.rate_limit.take(caller, now)
        if wait:
            self.counts["rate_limited"] += 1
            raise RateLimited(self.rate_limit.refusal(who, wait), wait)
