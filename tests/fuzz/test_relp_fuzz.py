"""Fuzzing the RELP server session (parsers/relp.py).

Whatever a client sends, in whatever split into reads, feed() returns what it found and never
raises (a broken frame ends the session with the reason), gives the same messages and replies
for every split, and keeps at most one frame's header and max(max_message, 64 KiB) of data
between reads. A well-formed session delivers every message and acknowledges each by its
transaction number; junk ends the session but never takes back what came before it.
"""

from __future__ import annotations

from hypothesis import example, given, strategies as st

from parsers.framing import FramingError
from parsers.relp import RelpSession

OPEN_DATA = b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n"
# TXNR (9 digits), COMMAND (32 letters), DATALEN (9 digits), their spaces and the LF.
HEADER = 9 + 1 + 32 + 1 + 9 + 1 + 1


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    return b"%d %s %d %s\n" % (txnr, command, len(data), data) if data else b"%d %s 0\n" % (txnr, command)


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def run(chunks: list[bytes], max_message: int) -> tuple[list[bytes | FramingError], bytes, bool, bool]:
    """Messages, replies, whether the session ended and whether for a fault of the client's,
    checking the memory bound. (The fault's description may differ with the reads: it shows
    what had arrived when the session ended.)"""
    session = RelpSession(max_message, "jailwarden,fuzz")
    messages, reply, close, error = [], bytearray(), False, None
    for chunk in chunks:
        out = session.feed(chunk)
        messages += out.messages
        reply += out.reply
        close, error = close or out.close, error or out.error
        # The only way to observe what the session keeps between reads.
        assert len(session._pending) <= HEADER + max(max_message, 64 * 1024)
    return messages, bytes(reply), close, error is not None


COMMAND = st.sampled_from([b"open", b"syslog", b"close", b"rsp", b"serverclose", b"x", b"SYSLOG", b"a" * 33, b"",
                           b"sys log", b"\xff"])
NUMBER = st.one_of(st.integers(0, 999_999_999).map(lambda n: b"%d" % n),
                   st.sampled_from([b"", b"-1", b"0", b"1234567890", b"12a", b" ", b"\xd9\xa1"]))


@st.composite
def relp_like(draw) -> bytes:
    """Frames, some well-formed, some with wrong counts, commands or trailers, and raw bytes."""
    pieces = []
    for _ in range(draw(st.integers(0, 8))):
        data = draw(st.one_of(st.binary(max_size=40), st.just(OPEN_DATA)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            pieces.append(frame(draw(st.integers(1, 999_999_999)), draw(COMMAND), data))
        elif kind == 1:
            trailer = draw(st.sampled_from([b"\n", b"", b"x", b"\r\n"]))
            pieces.append(b"%s %s %s %s%s" % (draw(NUMBER), draw(COMMAND), draw(NUMBER), data, trailer))
        else:
            pieces.append(draw(st.binary(max_size=60)))
    return b"".join(pieces)


@given(stream=st.one_of(relp_like(), st.binary(max_size=400)), cuts=st.lists(st.integers(0, 500), max_size=10),
       max_message=st.integers(1, 100))
# Found by this test: the report of an oversize message showed only what had arrived with its header.
@example(stream=frame(1, b"syslog", OPEN_DATA), cuts=[12], max_message=1)
def test_any_stream_in_any_split_gives_the_same_session_within_the_memory_bound(stream, cuts, max_message) -> None:
    whole = run([stream], max_message)
    assert run(chunked(stream, cuts), max_message) == whole
    assert run([bytes([byte]) for byte in stream], max_message) == whole


_OPENED = b"200 OK\nrelp_version=0\nrelp_software=jailwarden,fuzz\ncommands=syslog"
OPEN_REPLY = b"1 rsp %d %s\n" % (len(_OPENED), _OPENED)


def ack(txnr: int) -> bytes:
    return b"%d rsp 6 200 OK\n" % txnr


@given(messages=st.lists(st.binary(min_size=1, max_size=120), max_size=10), max_message=st.integers(1, 100),
       close=st.booleans(), junk=st.one_of(st.none(), st.binary(min_size=1, max_size=40)),
       cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_a_session_delivers_and_acknowledges_every_message_before_any_junk(messages, max_message, close, junk,
                                                                          cuts) -> None:
    stream = frame(1, b"open", OPEN_DATA)
    for txnr, message in enumerate(messages, 2):
        stream += frame(txnr, b"syslog", message)
    end = len(messages) + 2
    if close:
        stream += frame(end, b"close")
    elif junk is not None:
        stream += junk
    delivered, reply, closed, fault = run(chunked(stream, cuts), max_message)
    expected = [message if len(message) <= max_message else FramingError for message in messages]
    got = [item if isinstance(item, bytes) else FramingError for item in delivered]
    assert got[:len(expected)] == expected
    acks = b"".join(ack(txnr) for txnr in range(2, len(messages) + 2))
    assert reply.startswith(OPEN_REPLY + acks)
    if close:
        assert closed and not fault and reply.endswith(b"%d rsp 0\n" % end)
    elif junk is None:
        assert not closed and len(got) == len(expected)
