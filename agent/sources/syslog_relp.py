"""One RELP connection (rsyslog's omrelp): a TCP syslog connection whose messages are each
acknowledged once the receiver has queued them, so that a client keeps and sends again whatever
the agent did not take, across the agent's restarts.
"""

from __future__ import annotations

import asyncio

from typing import TYPE_CHECKING

from agent import __version__
from agent.config_values import ListenAddress
from agent.sources.syslog_tcp import SyslogConnection
from parsers.relp import SERVER_CLOSE, RelpSession

if TYPE_CHECKING:
    from agent.sources.syslog import SyslogSource

DRAIN_TIMEOUT = 0.5  # how long a closing session may take to read our last acknowledgements
_SOFTWARE = f"jailwarden,{__version__},https://jailwarden.invalid/"


class RelpConnection(SyslogConnection):
    """Allow list, connection limit, idle timeout and pausing as for TCP syslog; RELP framing.

    A message is acknowledged after it is in the source's queue, which the agent empties into
    the jails before it exits, so an acknowledged message is matched even when the agent stops
    right after. Pausing (the queue is full) stops the acknowledgements too, which makes the
    client wait. When the agent stops, each session gets RELP's `serverclose` hint after its last
    acknowledgement, and the connection is closed once the client has read them (see _end).
    """

    __slots__ = ("drained",)

    def __init__(self, source: SyslogSource, listen: ListenAddress) -> None:
        super().__init__(source, listen)
        self.drained: asyncio.Future | None = None  # set while closing: done when the peer has closed

    def _new_decoder(self, max_message: int) -> RelpSession:  # type: ignore[override]
        return RelpSession(max_message, _SOFTWARE)

    def buffer_updated(self, nbytes: int) -> None:
        session = self._decoder
        if session is None:
            return
        source = self._source
        try:
            out = session.feed(source.read_buffer[:nbytes])
            if out.messages:
                self._progress = asyncio.get_running_loop().time()
                dropped = source.counts["dropped_queue_full"]
                source.accept_frames(out.messages, self.address, self.sender, self.trusted)
                if source.counts["dropped_queue_full"] != dropped:
                    # Some were not taken: acknowledge none and end the session, so that the
                    # client sends them again later (those that were taken may come twice).
                    source.problems.report(self.sender, f"RELP session to {self._listen} ended unacknowledged: "
                                                        f"the queue is full")
                    self.close(deliver=False)
                    return
            if out.reply:
                self._transport.write(out.reply)
            if out.error is not None:
                source.counts["framing_errors"] += 1
                source.problems.report(self.sender, f"RELP session to {self._listen} closed: {out.error}")
            if out.close:
                self.close()
        except Exception as error:
            self._fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._source.draining.discard(self)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _end(self, session: RelpSession, deliver: bool) -> None:  # type: ignore[override]
        transport = self._transport
        if not deliver:
            transport.abort()
            return
        # Closing a socket with unread input makes the kernel send a reset, and a reset can
        # destroy acknowledgements the client has not read yet: it would send those messages
        # again. So: the hint, then our end of the stream, then read (and drop, unacknowledged)
        # until the client closes, for at most DRAIN_TIMEOUT (the source waits for that at stop).
        if not session.closed:
            transport.write(SERVER_CLOSE)
        transport.write_eof()
        transport.resume_reading()
        loop = asyncio.get_running_loop()
        self.drained = loop.create_future()
        self._source.draining.add(self)
        loop.call_later(DRAIN_TIMEOUT, self.abort)

    def abort(self) -> None:
        self._transport.abort()
