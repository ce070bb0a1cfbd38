"""The RELP server session (parsers/relp.py) driven with bytes, as rsyslog's omrelp sends them."""

from __future__ import annotations

import pytest

from parsers.framing import FramingError
from parsers.relp import RelpSession

MESSAGE = b"<38>1 2026-12-02T08:00:00+00:00 host sshd 41 - - Failed password for root from 203.0.113.7 port 22 ssh2"


def frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    if not data:
        return b"%d %s 0\n" % (txnr, command.encode())
    return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data)


OPEN = frame(1, "open", b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
                        b"commands=syslog\n")


def opened() -> RelpSession:
    session = RelpSession(1024, "jailwarden,test")
    out = session.feed(OPEN)
    assert out.reply.startswith(b"1 rsp ") and not out.close
    return session


def test_open_is_answered_with_the_syslog_command_and_messages_are_acknowledged_by_txnr():
    session = RelpSession(1024, "jailwarden,test")
    out = session.feed(OPEN)
    data = b"200 OK\nrelp_version=0\nrelp_software=jailwarden,test\ncommands=syslog"
    assert bytes(out.reply) == b"1 rsp %d %s\n" % (len(data), data)
    out = session.feed(frame(2, "syslog", MESSAGE) + frame(3, "syslog", b"second"))
    assert out.messages == [MESSAGE, b"second"]
    assert bytes(out.reply) == b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n"
    out = session.feed(frame(4, "close"))
    assert bytes(out.reply) == b"4 rsp 0\n" and out.close and out.error is None


def test_any_split_of_the_stream_gives_the_same_messages_and_replies():
    stream = OPEN + frame(2, "syslog", MESSAGE) + frame(3, "syslog", b"x" * 300) + frame(4, "close")
    whole = RelpSession(1024, "s").feed(stream)
    for size in (1, 2, 7, 64):
        session = RelpSession(1024, "s")
        messages, reply = [], bytearray()
        for start in range(0, len(stream), size):
            out = session.feed(stream[start:start + size])
            messages += out.messages
            reply += out.reply
        assert messages == whole.messages and reply == whole.reply and session.closed


def test_a_message_over_max_message_is_skipped_unbuffered_reported_and_acknowledged():
    session = opened()
    big = b"y" * 5000
    outs = [session.feed(part) for part in (frame(2, "syslog", big)[:100], frame(2, "syslog", big)[100:])]
    assert len(session._pending) < 200  # the skipped data was never kept
    messages = [item for out in outs for item in out.messages]
    assert len(messages) == 1 and isinstance(messages[0], FramingError)
    assert "exceeds max_message 1024" in messages[0].reason
    assert b"".join(bytes(out.reply) for out in outs) == b"2 rsp 6 200 OK\n"  # else the client resends it forever
    assert session.feed(frame(3, "syslog", b"next")).messages == [b"next"]


@pytest.mark.parametrize("stream, reason", [
    (frame(1, "syslog", b"too early"), "before the session was opened"),
    (OPEN + OPEN.replace(b"1 open", b"2 open"), "already open"),
    (b"x1 open 0\n", "TXNR"),
    (b"1 op3n 0\n", "is not 1 to 32 letters"),
    (b"1 close 0 \n", "does not end in LF"),
    (OPEN + b"2 syslog 3 abcd\n", "does not end in LF"),
    (OPEN + b"2 syslog 12345678901 ", "DATALEN '12345678901' is not a number of 1 to 9 digits"),
    (OPEN + b"2 syslog 12345678901", "DATALEN has more than 9 digits"),
    (b"1 " + b"a" * 40 + b" 0\n", "malformed frame header"),
    (b"x broken\n", "malformed frame header"),  # a line-based client: refused at its first line
])
def test_a_broken_frame_ends_the_session_with_the_reason(stream, reason):
    out = RelpSession(1024, "s").feed(stream)
    assert out.close and reason in out.error


def test_a_client_that_cannot_send_syslog_is_refused():
    out = RelpSession(1024, "s").feed(frame(1, "open", b"relp_version=0\ncommands=foo"))
    assert out.reply.startswith(b"1 rsp ") and b" 500 " in bytes(out.reply) and out.close


def test_an_unknown_command_gets_an_error_reply_and_the_session_goes_on():
    session = opened()
    out = session.feed(frame(2, "starttls") + frame(3, "syslog", b"after"))
    assert bytes(out.reply).startswith(b"2 rsp ") and b"500 command 'starttls'" in bytes(out.reply)
    assert out.messages == [b"after"] and not out.close


def test_nothing_is_taken_after_the_session_ended():
    session = opened()
    session.feed(frame(2, "close"))
    assert session.feed(frame(3, "syslog", b"late")).messages == []
