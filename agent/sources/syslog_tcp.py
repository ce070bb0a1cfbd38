"""One TCP syslog connection: the allow list and the connection limit when it is accepted,
RFC 6587 framing while it lasts, and the idle timeout that ends it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent.config_values import ListenAddress
from parsers.framing import FrameDecoder

if TYPE_CHECKING:
    from agent.sources.syslog import SyslogSource


class SyslogConnection(asyncio.BufferedProtocol):
    """Frames from one TCP peer, handed to the source as they complete.

    Reads go into one buffer the source shares among its connections (the loop fills it and
    hands it over in one step), so a connection holds only what its decoder keeps, and one
    read is small enough (64 KiB) that parsing it never holds up the loop for long.

    A connection is closed when no complete frame has arrived for `idle_timeout` seconds,
    whether the peer sent nothing or only bytes that never finish a frame (slow-loris): a
    frame's bytes are held at most that long. The timer is lazy: progress only stores the
    time, and the one timer re-arms itself when it fires early.
    """

    __slots__ = ("_source", "_listen", "_transport", "_decoder", "_timer", "_progress", "sender", "address",
                 "trusted")

    def __init__(self, source: SyslogSource, listen: ListenAddress) -> None:
        self._source = source
        self._listen = listen
        self._transport: asyncio.Transport | None = None
        self._decoder: FrameDecoder | None = None  # None: not accepted, or closed
        self._timer: asyncio.TimerHandle | None = None
        self._progress = 0.0  # loop time of the last complete frame (or of the accept)
        self.sender = ""  # "sender ADDRESS", for the problem log
        self.address = ""  # the peer's address as text, for _SOURCE_ADDRESS
        self.trusted = False  # are its messages trusted (see SyslogSource.is_trusted)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        source = self._source
        self._transport = transport
        try:
            peer = transport.get_extra_info("peername")
            allowed, self.address = source.check_sender(peer[0] if peer else "")
            self.sender = f"sender {self.address}"
            if not allowed:
                source.counts["dropped_not_allowed"] += 1
                source.problems.report(self.sender, f"TCP connection to {self._listen} closed: not in the allow list")
                transport.abort()
                return
            if len(source.connections) >= source.config.max_connections:
                source.counts["connections_refused"] += 1
                source.problems.report(self.sender, f"TCP connection to {self._listen} closed: "
                                                    f"max_connections ({source.config.max_connections}) are open")
                transport.abort()
                return
            # Decided once: the peer's socket, and so its owner, lives as long as the connection.
            self.trusted = source.is_trusted("tcp", peer, transport.get_extra_info("sockname"))
            self._decoder = self._new_decoder(source.config.max_message)
            source.connections.add(self)
            source.counts["connections_accepted"] += 1
            loop = asyncio.get_running_loop()
            self._progress = loop.time()
            self._timer = loop.call_at(self._progress + source.config.idle_timeout, self._check_idle)
            if source.paused:
                transport.pause_reading()
        except Exception as error:  # nothing a peer sends may escape into the loop
            self._fail(error)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._source.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        try:
            items = decoder.feed(self._source.read_buffer[:nbytes])
            if items:
                self._progress = asyncio.get_running_loop().time()
                self._source.accept_frames(items, self.address, self.sender, self.trusted)
        except Exception as error:
            self._fail(error)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost delivers a last unterminated line

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self, deliver: bool = True) -> None:
        """Close the connection; with `deliver`, a last frame the peer did not terminate is kept."""
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        self._source.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._end(decoder, deliver)

    def _new_decoder(self, max_message: int) -> FrameDecoder:
        return FrameDecoder(max_message)

    def _end(self, decoder: FrameDecoder, deliver: bool) -> None:
        source = self._source
        try:
            items = decoder.close()
            if items and deliver:
                source.accept_frames(items, self.address, self.sender, self.trusted)
        except Exception as error:
            source.problems.report(self.sender, f"internal error closing its TCP connection: {error!r}", error)
        self._transport.abort()

    def pause(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume(self, now: float) -> None:
        if self._transport is not None and self._decoder is not None:
            self._progress = now  # the time paused was the receiver's doing, not the peer's
            self._transport.resume_reading()

    def _check_idle(self) -> None:
        if self._decoder is None:
            return
        source = self._source
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = source.config.idle_timeout
        if source.paused or now < self._progress + timeout:
            deadline = now + timeout if source.paused else self._progress + timeout
            self._timer = loop.call_at(deadline, self._check_idle)
            return
        source.counts["connections_timed_out"] += 1
        source.problems.report(self.sender, f"TCP connection to {self._listen} closed: no complete message "
                                            f"in {timeout:g} s (idle_timeout)")
        self.close(deliver=False)

    def _fail(self, error: Exception) -> None:
        self._source.counts["errors"] += 1
        self._source.problems.report(self.sender or "sender unknown",
                                     f"internal error on its TCP connection, closed: {error!r}", error)
        self.close(deliver=False)
        if self._transport is not None:
            self._transport.abort()
