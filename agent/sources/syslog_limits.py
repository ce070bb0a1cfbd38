"""Limits of the syslog receiver that are not about sockets: which senders are allowed, and a
log of senders' problems that says who and why without letting one sender flood the agent's log.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

from agent.addresses import AddressSet, Network
from parsers.filter import normalise

# Enough for every sender a forwarding setup has; a flood of spoofed UDP sources only costs
# re-parsing once the memo is cleared.
_SENDER_MEMO_LIMIT = 4096


class SenderCheck:
    """Is a sender, as the socket layer names it ("127.0.0.1", "::ffff:10.0.0.1",
    "fe80::1%eth0"), on the allow list? Also gives its address as text for `_SOURCE_ADDRESS`,
    IPv4-mapped IPv6 written as IPv4. Memoised: it runs for every datagram."""

    __slots__ = ("_allowed", "_memo")

    def __init__(self, allow: Iterable[Network]) -> None:
        self._allowed = AddressSet(allow)
        self._memo: dict[str, tuple[bool, str]] = {}

    def __call__(self, host: str) -> tuple[bool, str]:
        """(allowed, address as text) for a sender host string."""
        known = self._memo.get(host)
        if known is not None:
            return known
        try:
            address = normalise(ipaddress.ip_address(host.partition("%")[0]))
            known = (address in self._allowed, str(address))
        except ValueError:
            known = (False, host)
        if len(self._memo) >= _SENDER_MEMO_LIMIT:
            self._memo.clear()
        self._memo[host] = known
        return known


class ProblemLog:
    """Logs problems by who caused them ("sender 192.0.2.7": malformed input, refused
    connections), at most one line per sender per `interval` seconds; what it held back is
    summed up per sender by `flush()`.

    Senders are held in a dict bounded by `max_senders`; problems of further senders are only
    counted and summed up as one line, so a flood from spoofed addresses cannot grow it.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_senders: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._max_senders = max_senders
        self._clock = clock
        self._senders: dict[str, list] = {}  # sender -> [time last logged, problems held back]
        self._others = 0  # problems of senders beyond max_senders, held back

    def report(self, sender: str, problem: str, exc_info: BaseException | None = None) -> None:
        now = self._clock()
        entry = self._senders.get(sender)
        if entry is None:
            if len(self._senders) >= self._max_senders:
                self._others += 1
                return
            self._senders[sender] = [now, 0]
            self._logger.warning("syslog: %s: %s", sender, problem, exc_info=exc_info)
        elif now - entry[0] >= self._interval:
            held = entry[1]
            entry[0], entry[1] = now, 0
            more = f" ({held} more problems not logged since the last line)" if held else ""
            self._logger.warning("syslog: %s: %s%s", sender, problem, more, exc_info=exc_info)
        else:
            entry[1] += 1

    def flush(self, everything: bool = False) -> None:
        """Sum up the problems held back for senders whose interval is over (all senders with
        `everything`, at stop), and forget those senders."""
        now = self._clock()
        for sender, (logged, held) in list(self._senders.items()):
            if everything or now - logged >= self._interval:
                if held:
                    self._logger.warning("syslog: %s: %d more problems since the line logged %.0f s ago",
                                         sender, held, now - logged)
                del self._senders[sender]
        if self._others:
            self._logger.warning("syslog: %d problems from other senders not logged (more than %d senders "
                                 "had problems at once)", self._others, self._max_senders)
            self._others = 0
