"""RELP, rsyslog's Reliable Event Logging Protocol, server side: bytes from a client in,
syslog messages and the replies that acknowledge them out. No sockets here.

A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The client opens the session (offering
`relp_version` and `commands`), sends `syslog` frames, each acknowledged by a `rsp` frame with
the same transaction number, and ends with `close`. A client keeps every message it has not
seen acknowledged and sends it again on its next connection, so a message is lost only if it
was acknowledged and then not kept: the receiver acknowledges what it has taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsers.framing import FramingError
from parsers.syslog import excerpt

SERVER_CLOSE = b"0 serverclose 0\n"  # the server's hint that it is closing the session
_MAX_NUMBER_DIGITS = 9
_MAX_COMMAND = 32
_EXCERPT = 64  # bytes of a skipped message shown in its report


class RelpProtocolError(Exception):
    """The client broke the framing or the protocol: the session cannot go on."""


@dataclass(slots=True)
class RelpOutput:
    """What one feed() gives: messages to take (or oversize ones to count), the bytes to send
    back, and whether the session is over (send the reply, then close)."""

    messages: list[bytes | FramingError] = field(default_factory=list)
    reply: bytearray = field(default_factory=bytearray)
    close: bool = False
    error: str | None = None  # why the session ended, when the client broke the protocol


def response(txnr: int, text: str) -> bytes:
    data = text.encode()
    return b"%d rsp %d %s\n" % (txnr, len(data), data) if data else b"%d rsp 0\n" % txnr


class RelpSession:
    """One client's RELP session. feed() takes the stream's bytes in any split.

    `max_message` bounds a syslog message: a longer one is skipped without being buffered,
    reported as a FramingError and acknowledged (as TCP syslog drops it), so the client does
    not send it again forever. Anything else malformed ends the session: RELP has no way to
    find the next frame after a broken one.
    """

    def __init__(self, max_message: int, software: str) -> None:
        self._max_message = max_message
        self._software = software
        self._pending = bytearray()
        self._skip = 0  # data bytes (and the trailer) of an oversize frame still to drop
        # Its txnr and first data bytes (for the report, whatever the reads), answered once skipped.
        self._skipped: tuple[int, bytearray] | None = None
        self.opened = False
        self.closed = False

    def feed(self, data: bytes | memoryview) -> RelpOutput:
        out = RelpOutput()
        if self.closed:
            return out
        buffer = self._pending
        buffer += data
        position = 0
        try:
            while position < len(buffer) and not out.close:
                if self._skip:
                    taken = min(self._skip, len(buffer) - position)
                    shown = self._skipped[1]
                    shown += buffer[position:position + max(0, min(taken, self._skip - 1, _EXCERPT - len(shown)))]
                    self._skip -= taken
                    position += taken
                    if not self._skip:
                        self._finish_skip(buffer, position - 1, out)
                    continue
                frame_end = self._frame(buffer, position, out)
                if frame_end is None:
                    break
                position = frame_end
        except RelpProtocolError as error:
            out.close, out.error, self.closed = True, str(error), True
            self._pending = bytearray()
            return out
        del buffer[:position]
        return out

    def _frame(self, buffer: bytearray, start: int, out: RelpOutput) -> int | None:
        """Handle the frame at `start`; return where the next starts, None to wait for more."""
        fields_end = start
        parts: list[bytes] = []
        for _ in range(2):  # TXNR and COMMAND, each followed by a space
            header_end = buffer.find(b" ", fields_end, fields_end + _MAX_COMMAND + 1)
            seen = buffer[fields_end:header_end if header_end >= 0 else fields_end + _MAX_COMMAND + 1]
            if header_end < 0 and len(buffer) - fields_end > _MAX_COMMAND or b"\n" in seen:
                raise RelpProtocolError(f"malformed frame header '{excerpt(buffer[start:start + 64])}'")
            if header_end < 0:
                return None
            parts.append(bytes(buffer[fields_end:header_end]))
            fields_end = header_end + 1
        txnr_text, command_text = parts
        length_end = fields_end
        while length_end < len(buffer) and 0x30 <= buffer[length_end] <= 0x39:
            length_end += 1
        if length_end == len(buffer):
            if length_end - fields_end > _MAX_NUMBER_DIGITS:
                raise RelpProtocolError("DATALEN has more than 9 digits")
            return None
        txnr = _number(txnr_text, "TXNR")
        command = command_text.decode("ascii", "replace")
        if not command.isascii() or not command.isalpha():
            raise RelpProtocolError(f"command '{excerpt(command_text)}' is not 1 to 32 letters")
        length = _number(bytes(buffer[fields_end:length_end]), "DATALEN")
        if length == 0:
            if buffer[length_end] != 0x0A:
                raise RelpProtocolError(f"frame {txnr} '{command}' with DATALEN 0 does not end in LF")
            self._command(txnr, command, b"", out)
            return length_end + 1
        if buffer[length_end] != 0x20:
            raise RelpProtocolError(f"frame {txnr}: DATALEN is not followed by a space")
        data_start = length_end + 1
        if command == "syslog" and length > self._max_message:
            self._skip, self._skipped = length + 1, (txnr, bytearray())  # the data and its LF trailer
            return data_start
        if length > max(self._max_message, 64 * 1024):
            raise RelpProtocolError(f"frame {txnr} '{command}' of {length} bytes is too long")
        if data_start + length >= len(buffer):
            return None
        if buffer[data_start + length] != 0x0A:
            raise RelpProtocolError(f"frame {txnr} '{command}' does not end in LF after its {length} bytes")
        self._command(txnr, command, bytes(buffer[data_start:data_start + length]), out)
        return data_start + length + 1

    def _finish_skip(self, buffer: bytearray, trailer: int, out: RelpOutput) -> None:
        txnr, shown = self._skipped
        self._skipped = None
        if buffer[trailer] != 0x0A:
            raise RelpProtocolError(f"frame {txnr} 'syslog' does not end in LF after its data")
        out.messages.append(FramingError(f"RELP message exceeds max_message {self._max_message} bytes",
                                         excerpt(shown)))
        out.reply += response(txnr, "200 OK")

    def _command(self, txnr: int, command: str, data: bytes, out: RelpOutput) -> None:
        if command == "syslog":
            if not self.opened:
                raise RelpProtocolError(f"frame {txnr}: 'syslog' before the session was opened")
            out.messages.append(data)
            out.reply += response(txnr, "200 OK")
        elif command == "open":
            if self.opened:
                raise RelpProtocolError(f"frame {txnr}: 'open' on a session already open")
            offers = _offers(data)
            if "syslog" not in offers.get("commands", "").split(","):
                out.reply += response(txnr, "500 this server takes only the 'syslog' command")
                out.close, out.error, self.closed = True, "the client does not offer the 'syslog' command", True
                return
            self.opened = True
            out.reply += response(txnr, f"200 OK\nrelp_version=0\nrelp_software={self._software}\ncommands=syslog")
        elif command == "close":
            out.reply += response(txnr, "")
            out.close, self.closed = True, True
        else:
            out.reply += response(txnr, f"500 command '{command}' is not supported")


def _number(text: bytes, name: str) -> int:
    if not 1 <= len(text) <= _MAX_NUMBER_DIGITS or not text.isdigit():
        raise RelpProtocolError(f"{name} '{excerpt(text)}' is not a number of 1 to 9 digits")
    return int(text)


def _offers(data: bytes) -> dict[str, str]:
    """The open command's offers, one `name=value` per line."""
    offers = {}
    for line in data.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        offers[name.strip()] = value.strip()
    return offers
