"""Fuzzing the syslog wire formats (parsers/syslog.py) and the TCP framing (parsers/framing.py).

Whatever a sender writes, the parsers return a message or a `SyslogError` and never raise; an
error's excerpt is short and printable, so it cannot forge a line of our own log. The framer
gives the same frames for any split of the stream into reads, keeps at most about max_frame
bytes between reads, and still delivers every well-formed frame that junk around it leaves
readable (RFC 6587: a newline ends a junk line, an oversize octet-counted frame is skipped by
its count).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings, strategies as st

from parsers.framing import FrameDecoder, FramingError
from parsers.syslog import EXCERPT_CHARS, SyslogError, SyslogMessage, file_line_tag_and_message, parse_file_line, \
    parse_message

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=UTC).timestamp()
# The framer's documented bound: a frame of max_frame bytes plus its length field and space.
LENGTH_FIELD = 10

# Pieces of real syslog headers, so that generated input gets past the first checks often.
PRI = st.one_of(st.integers(0, 191).map(lambda n: f"<{n}>"), st.sampled_from(["<", "<>", "<999>", "<1234>", "<²>",
                                                                                "<-1>", "<013>", "<1"]))
TIMESTAMP = st.sampled_from([
    "Nov 24 14:00:01", "Nov  3 09:07:55", "Feb 29 00:00:00", "Jan 1 00:00:60", "Dec 31 23:59:61",
    "2026-11-24T14:00:01.318204+00:00", "2026-11-24T14:00:01Z", "2026-11-24t14:00:01", "9999-12-31T23:59:60+14:00",
    "0001-01-01T00:00:00-23:59", "2026-02-30T00:00:00Z", "2026-11-24T14:00:01.1234567890Z", "-", "",
])
HEADER_WORD = st.sampled_from(["web1", "sshd[123]:", "sshd:", "sshd", "[::1]", "2001:db8::1", "-", "a:b", "x[", "]"])
SD = st.sampled_from(["-", "[x]", '[a b="c"]', '[a b="c\\"d\\]\\\\"][e f=""]', '[a b="', "[", '[a b=c]', "[]",
                      '[timeQuality tzKnown="1" isSynced="0"]', "-x", '[a b="\ufeff"]'])
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@st.composite
def syslog_like(draw) -> bytes:
    """A datagram or frame put together from pieces of real headers, with anything in between."""
    parts = draw(st.lists(st.one_of(PRI, TIMESTAMP, HEADER_WORD, SD, TEXT, st.just("1"), st.just(" ")),
                          max_size=12))
    text = " ".join(parts) if draw(st.booleans()) else "".join(parts)
    data = text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([data, data + b"\n", data + b"\x00", data + b"\r\n", b"\xff" + data, data[:-1]]))


ANY_NOW = st.one_of(st.just(NOW), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**63))
ZONE = st.one_of(st.none(), st.just(UTC), st.timezones())


def check_error(error: SyslogError) -> None:
    assert error.reason and isinstance(error.reason, str)
    assert len(error.excerpt) <= EXCERPT_CHARS and error.excerpt.isprintable(), repr(error.excerpt)


def check_message(message: SyslogMessage) -> None:
    assert isinstance(message.message, str) and "\x00" not in message.message
    assert message.timestamp is None or math.isfinite(message.timestamp)
    for value in message.fields().values():
        assert isinstance(value, str)


@given(data=st.one_of(st.binary(max_size=300), syslog_like()), now=ANY_NOW, tz=ZONE)
def test_any_datagram_is_a_message_or_an_error_saying_why(data: bytes, now: float, tz) -> None:
    result = parse_message(data, now, tz)
    if isinstance(result, SyslogError):
        check_error(result)
    else:
        assert isinstance(result, SyslogMessage)
        check_message(result)
    assert parse_message(data.decode("utf-8", "replace"), now, tz) == result


@given(line=st.one_of(TEXT, syslog_like().map(lambda data: data.decode("utf-8", "replace"))), now=ANY_NOW, tz=ZONE)
def test_any_file_line_is_a_message_or_an_error_and_the_quick_reading_agrees(line: str, now: float, tz) -> None:
    result = parse_file_line(line, now, tz)
    quick = file_line_tag_and_message(line)
    if isinstance(result, SyslogError):
        check_error(result)
        assert quick == result
    else:
        check_message(result)
        assert quick == (result.app_name, result.message)


SD_NAME = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='= ]"'), min_size=1,
                  max_size=8)
SD_VALUE = st.text(max_size=10).map(lambda value: value.replace("\x00", ""))  # NUL is read as U+FFFD
HEADER_FIELD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12).filter(
    lambda text: text != "-")


@given(pri=st.integers(0, 191), hostname=HEADER_FIELD, app=HEADER_FIELD, procid=HEADER_FIELD, msgid=HEADER_FIELD,
       elements=st.lists(st.tuples(SD_NAME, st.lists(st.tuples(SD_NAME, SD_VALUE), max_size=3)), max_size=3),
       text=st.text(max_size=60).map(lambda t: t.replace("\x00", "").lstrip(" \ufeff").rstrip("\r\n")),
       bom=st.booleans())
def test_well_formed_rfc5424_messages_are_read_back_exactly(pri, hostname, app, procid, msgid, elements, text,
                                                           bom) -> None:
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")

    sd = "".join("[" + name + "".join(f' {key}="{escaped(value)}"' for key, value in params) + "]"
                 for name, params in elements) or "-"
    message = f"<{pri}>1 2026-11-24T14:00:01.5+01:00 {hostname} {app} {procid} {msgid} {sd} " \
              f"{chr(0xFEFF) if bom else ''}{text}"
    result = parse_message(message.encode(), NOW)
    assert isinstance(result, SyslogMessage), result
    assert (result.facility, result.severity) == (pri >> 3, pri & 7)
    assert (result.hostname, result.app_name, result.procid, result.msgid) == (hostname, app, procid, msgid)
    assert result.timestamp == datetime(2026, 11, 24, 13, 0, 1, 500000, tzinfo=UTC).timestamp()
    assert result.structured_data == tuple((name, tuple(params)) for name, params in elements)
    assert result.message == text


# The framer.

def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def decode(chunks: list[bytes], max_frame: int) -> list[bytes | FramingError]:
    """The frames, checking the documented bounds after every read."""
    decoder = FrameDecoder(max_frame)
    out: list[bytes | FramingError] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
        # The only way to observe what the decoder keeps between reads.
        assert len(decoder._pending) <= max_frame + LENGTH_FIELD
    out += decoder.close()
    for item in out:
        if isinstance(item, bytes):
            assert 0 < len(item) <= max_frame
        else:
            assert len(item.excerpt) <= EXCERPT_CHARS and item.excerpt.isprintable()
    return out


STREAM_PIECE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\n", b"\r\n", b"\x00", b" ", b"0 ", b"1 x", b"5 ", b"999999999 ", b"1234567890 ", b"12x",
                     b"<13>a: b", b"\r"]),
    st.integers(1, 400).map(lambda n: b"%d " % n),
    st.integers(1, 400).map(lambda n: b"x" * n),
)


@given(pieces=st.lists(STREAM_PIECE, max_size=20), cuts=st.lists(st.integers(0, 2000), max_size=12),
       max_frame=st.integers(1, 120))
def test_any_stream_in_any_split_gives_the_same_frames_within_the_memory_bound(pieces, cuts, max_frame) -> None:
    stream = b"".join(pieces)
    whole = decode([stream], max_frame)
    assert decode(chunked(stream, cuts), max_frame) == whole
    assert decode([bytes([byte]) for byte in stream], max_frame) == whole


NEWLINE_BODY = st.binary(min_size=1, max_size=60).map(lambda body: body.translate(None, b"\n\x00\r")).filter(
    lambda body: body and body[:1] not in b"123456789")


@st.composite
def frames_and_junk(draw, max_frame: int) -> tuple[bytes, list[bytes], int]:
    """A stream of well-formed frames with junk between them; the frames the protocol must
    deliver, in order; how many FramingErrors the junk must cause."""
    stream, expected, errors = b"", [], 0
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["octet", "line", "oversize octet", "oversize line", "bad count", "long count"]))
        if kind == "octet":
            body = draw(st.binary(min_size=1, max_size=max_frame))
            stream += b"%d %s" % (len(body), body)
            expected.append(body)
        elif kind == "line":
            body = draw(NEWLINE_BODY.filter(lambda b: len(b) <= max_frame))
            stream += body + draw(st.sampled_from([b"\n", b"\r\n", b"\x00"]))
            expected.append(body)
        elif kind == "oversize octet":
            size = draw(st.integers(max_frame + 1, max_frame + 200))
            stream += b"%d " % size + draw(st.binary(min_size=size, max_size=size))
            errors += 1
        elif kind == "oversize line":
            body = b"<" + b"y" * draw(st.integers(max_frame, max_frame + 200))
            stream += body + b"\n"
            errors += 1
        else:
            # A length field that is none: reported, and the line delivered as it is.
            digits = b"1" * (draw(st.integers(1, 9)) if kind == "bad count" else draw(st.integers(10, 14)))
            rest = draw(NEWLINE_BODY) if kind == "bad count" else b" x"
            if kind == "bad count" and rest[:1] in b" 0123456789":
                rest = b"x" + rest
            body = digits + rest
            if len(body) > max_frame:
                continue
            stream += body + b"\n"
            expected.append(body)
            errors += 1
    return stream, expected, errors


@settings(max_examples=settings.default.max_examples)
@given(data=st.data(), max_frame=st.integers(8, 100), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_frames_between_junk_are_delivered_in_order(data, max_frame, cuts) -> None:
    stream, expected, errors = data.draw(frames_and_junk(max_frame))
    out = decode(chunked(stream, cuts), max_frame)
    assert [item for item in out if isinstance(item, bytes)] == expected
    assert sum(isinstance(item, FramingError) for item in out) == errors
