"""RFC 6587 TCP framing of syslog: octet counting and newline-delimited, as an incremental
decoder that takes bytes and yields frames. Memory is bounded by the largest frame allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parsers.syslog import EXCERPT_CHARS, excerpt

_FRAME_TRAILER = re.compile(rb"[\n\x00]")


@dataclass(slots=True, frozen=True)
class FramingError:
    """A fault in a TCP stream (bad length, oversize or truncated frame); decoding goes on."""

    reason: str
    excerpt: str


class FrameDecoder:
    """Splits a TCP syslog stream into frames (RFC 6587).

    Each frame is framed on its own: one starting with a digit 1-9 is octet-counted
    ("LEN SP MSG", delivered exactly as counted, trailing LF included); any other is
    newline-delimited (LF, CRLF or NUL ends it; the terminator is removed and blank frames
    are dropped). Any split of the stream into feed() calls gives the same output, and at
    most about `max_frame` bytes are kept between calls whatever the input.
    """

    def __init__(self, max_frame: int = 65536) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be at least 1, not {max_frame}")
        self._max_frame = max_frame
        self._pending = bytearray()
        self._skip = 0              # bytes of an oversize octet-counted frame still to drop
        self._discarding = False    # dropping an oversize newline frame up to its terminator
        self._as_line = False       # after a bad length field: read this frame as newline-delimited
        self._searched = 0          # bytes of _pending known to hold no terminator (no rescans)

    def feed(self, data: bytes) -> list[bytes | FramingError]:
        """Take the next bytes of the stream; return the frames and errors they complete."""
        out: list[bytes | FramingError] = []
        buffer = self._pending
        buffer += data
        position = 0
        while position < len(buffer):
            if self._skip:
                taken = min(self._skip, len(buffer) - position)
                self._skip -= taken
                position += taken
            elif self._discarding:
                trailer = _FRAME_TRAILER.search(buffer, position)
                self._discarding = trailer is None
                position = len(buffer) if trailer is None else trailer.end()
            else:
                if not self._as_line and 0x31 <= buffer[position] <= 0x39:
                    next_position = self._octet_counted(buffer, position, out)
                else:
                    next_position = self._newline_delimited(buffer, position, out)
                if next_position is None:
                    break
                position = next_position
        del buffer[:position]
        return out

    def close(self) -> list[bytes | FramingError]:
        """End of stream: return what the pending bytes amount to, and reset the decoder."""
        out: list[bytes | FramingError] = []
        pending = self._pending
        if pending and not self._skip and not self._discarding:  # those were reported already
            if not self._as_line and 0x31 <= pending[0] <= 0x39:
                out.append(FramingError("stream ended inside an octet-counted frame", excerpt(pending)))
            else:
                self._deliver_line(pending, 0, len(pending), out)
        self._pending = bytearray()
        self._skip, self._discarding, self._as_line, self._searched = 0, False, False, 0
        return out

    def _octet_counted(self, buffer: bytearray, start: int, out: list[bytes | FramingError]) -> int | None:
        """Read the octet-counted frame at `start`; return where the next frame starts, None to wait."""
        end = start
        limit = min(len(buffer), start + 10)
        while end < limit and 0x30 <= buffer[end] <= 0x39:
            end += 1
        if end - start > 9:
            reason = "octet count has more than 9 digits"
        elif end == len(buffer):
            return None
        elif buffer[end] != 0x20:
            reason = "octet count is not followed by a space"
            end += 1
        else:
            length = int(buffer[start:end])
            if length > self._max_frame:
                out.append(FramingError(f"octet-counted frame of {length} bytes exceeds max_frame {self._max_frame}",
                                        excerpt(buffer[start:end])))
                self._skip = length  # skipping exactly the frame keeps the frames after it
                return end + 1
            if end + 1 + length > len(buffer):
                return None
            out.append(bytes(buffer[end + 1:end + 1 + length]))
            return end + 1 + length
        # Most likely a newline-framing sender whose message starts with digits: deliver it.
        out.append(FramingError(reason + "; reading a newline-delimited frame", excerpt(buffer[start:end])))
        self._as_line = True
        return start

    def _newline_delimited(self, buffer: bytearray, start: int, out: list[bytes | FramingError]) -> int | None:
        """Read the newline-delimited frame at `start`; return where the next frame starts, None to wait."""
        trailer = _FRAME_TRAILER.search(buffer, start + self._searched)
        if trailer is None:
            # One byte over max_frame may still be the CR of a CRLF, so wait for one more.
            if len(buffer) - start <= self._max_frame + 1:
                self._searched = len(buffer) - start
                return None
            out.append(self._oversize_line(buffer, start))
            self._searched, self._as_line, self._discarding = 0, False, True
            return len(buffer)
        self._searched, self._as_line = 0, False
        self._deliver_line(buffer, start, trailer.start(), out)
        return trailer.end()

    def _deliver_line(self, buffer: bytearray, start: int, stop: int, out: list[bytes | FramingError]) -> None:
        if stop > start and buffer[stop - 1] == 0x0D:
            stop -= 1
        if stop - start > self._max_frame:
            out.append(self._oversize_line(buffer, start))
        elif stop > start:
            out.append(bytes(buffer[start:stop]))

    def _oversize_line(self, buffer: bytearray, start: int) -> FramingError:
        # The excerpt stays within max_frame + 1 bytes so it is the same however the stream
        # was split: that much is all the decoder has seen when it stops waiting.
        shown = buffer[start:start + min(EXCERPT_CHARS, self._max_frame + 1)]
        return FramingError(f"newline-delimited frame exceeds max_frame {self._max_frame} bytes", excerpt(shown))
