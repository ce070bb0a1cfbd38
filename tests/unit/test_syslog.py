"""Syslog parsing and TCP framing: both RFCs, rsyslog's real output, file lines, and hostile input."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from parsers.framing import FrameDecoder, FramingError
from parsers.syslog import (
    SyslogError,
    SyslogMessage,
    file_line_tag_and_message,
    parse_file_line,
    parse_message,
)

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=UTC).timestamp()

# Captured from rsyslog 8.2302 forwarding sshd lines (UDP as RFC 3164, TCP as RFC 5424).
RSYSLOG_UDP_FAILED = (b"<13>2026-11-24T15:09:08+00:00 vm sshd[21126]: "
                      b"Failed password for root from 203.0.113.77 port 4242 ssh2")
RSYSLOG_UDP_INVALID = b"<13>2026-11-24T15:09:08.939827+00:00 vm sshd Invalid user bob from 2001:db8::77 port 4243"
RSYSLOG_TCP_FAILED = (b"109 <13>1 2026-11-24T15:09:08+00:00 vm sshd 21126 - -  "
                      b"Failed password for root from 203.0.113.77 port 4242 ssh2\n")
RSYSLOG_TCP_INVALID = (b'135 <13>1 2026-11-24T15:09:08.939827+00:00 vm sshd - - [timeQuality tzKnown="1" '
                       b'isSynced="0"] Invalid user bob from 2001:db8::77 port 4243\n')
STAMP = datetime(2026, 11, 24, 15, 9, 8, tzinfo=UTC).timestamp()


def epoch(*parts: int, tz: timezone | None = UTC) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()


def parsed(data: bytes | str, now: float = NOW, tz=UTC) -> SyslogMessage:
    result = parse_message(data, now, tz)
    assert isinstance(result, SyslogMessage), result
    return result


def file_line(line: str, now: float = NOW, tz=UTC) -> SyslogMessage:
    result = parse_file_line(line, now, tz)
    assert isinstance(result, SyslogMessage), result
    return result


def decode(chunks: list[bytes], max_frame: int = 65536) -> list[bytes | FramingError]:
    decoder = FrameDecoder(max_frame)
    out: list[bytes | FramingError] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.close()


# RFC 3164 as rsyslog and local senders write it


def test_rsyslog_rfc3164_with_rfc3339_timestamp():
    message = parsed(RSYSLOG_UDP_FAILED)
    assert message == SyslogMessage(
        "rfc3164", "Failed password for root from 203.0.113.77 port 4242 ssh2", facility=1, severity=5,
        timestamp=STAMP, hostname="vm", app_name="sshd", procid="21126")


def test_rsyslog_rfc3164_tag_without_pid_or_colon():
    message = parsed(RSYSLOG_UDP_INVALID)
    assert (message.hostname, message.app_name, message.procid) == ("vm", "sshd", None)
    assert message.message == "Invalid user bob from 2001:db8::77 port 4243"
    assert message.timestamp == pytest.approx(STAMP + 0.939827)


def test_bsd_header_with_traditional_timestamp():
    message = parsed(b"<34>Nov 24 14:00:01 web1 sshd[123]: Failed password for root from 192.0.2.1 port 22 ssh2")
    assert (message.facility, message.severity) == (4, 2)
    assert message.timestamp == epoch(2026, 11, 24, 14, 0, 1)
    assert (message.hostname, message.app_name, message.procid) == ("web1", "sshd", "123")
    assert message.message == "Failed password for root from 192.0.2.1 port 22 ssh2"


@pytest.mark.parametrize("day, expected", [("Nov  4", 4), ("Nov 04", 4), ("Nov 4", 4), ("Nov 14", 14)])
def test_traditional_day_may_be_space_padded_zero_padded_or_bare(day, expected):
    assert parsed(f"<13>{day} 14:00:01 web1 sshd: x").timestamp == epoch(2026, 11, expected, 14, 0, 1)


def test_logger_style_message_has_no_hostname():
    message = parsed(b"<38>Nov 24 14:00:01 sshd[123]: msg")
    assert (message.hostname, message.app_name, message.procid, message.message) == (None, "sshd", "123", "msg")
    assert parsed(b"<38>Nov 24 14:00:01 su: pam_unix(su:auth): failure").app_name == "su"


@pytest.mark.parametrize("tag", ["sshd-session", "postfix/smtpd", "CRON", "systemd-logind", "named.run", "a_b"])
def test_tags_real_senders_use(tag):
    message = parsed(f"<13>Nov 24 14:00:01 web1 {tag}[9]: hello".encode())
    assert (message.app_name, message.procid, message.message) == (tag, "9", "hello")


def test_tag_with_colon_and_no_pid():
    message = parsed(b"<13>Nov 24 14:00:01 web1 kernel: [ 12.345] UFW BLOCK SRC=192.0.2.9")
    assert (message.app_name, message.procid, message.message) == ("kernel", None, "[ 12.345] UFW BLOCK SRC=192.0.2.9")


def test_ipv6_literal_is_read_as_hostname():
    message = parsed(b"<13>Nov 24 14:00:01 2001:db8::1 sshd[5]: x")
    assert (message.hostname, message.app_name) == ("2001:db8::1", "sshd")


def test_missing_timestamp_still_reads_tag_and_pid():
    message = parsed(b"<13>sshd[1]: msg")
    assert (message.timestamp, message.hostname, message.app_name, message.procid) == (None, None, "sshd", "1")
    assert message.message == "msg"


def test_missing_timestamp_and_no_tag_keeps_whole_text_as_message():
    message = parsed(b"<13>Invalid user bob from 192.0.2.7")
    assert (message.app_name, message.message) == (None, "Invalid user bob from 192.0.2.7")


def test_header_without_anything_after_hostname():
    message = parsed(b"<13>Nov 24 14:00:01 web1")
    assert (message.hostname, message.app_name, message.message) == ("web1", None, "")


def test_missing_pri_is_user_notice_and_whole_text_is_message():
    message = parsed(b"Nov 24 14:00:01 web1 sshd[1]: hello")
    assert (message.format, message.facility, message.severity) == ("rfc3164", 1, 5)
    assert message.message == "Nov 24 14:00:01 web1 sshd[1]: hello"
    assert (message.timestamp, message.app_name) == (None, None)


@pytest.mark.parametrize("pri, facility, severity", [(0, 0, 0), (13, 1, 5), (38, 4, 6), (86, 10, 6), (191, 23, 7)])
def test_pri_splits_into_facility_and_severity(pri, facility, severity):
    message = parsed(f"<{pri}>sshd: x")
    assert (message.facility, message.severity) == (facility, severity)


@pytest.mark.parametrize("data, reason", [
    (b"<999>x", "PRI value 999 out of range 0-191"),
    (b"<192>x", "PRI value 192 out of range 0-191"),
    (b"<1a>x", "PRI '1a' is not a number"),
    (b"<>x", "PRI '' is not a number"),
    (b"<\xc2\xb2>x", "PRI '\u00b2' is not a number"),
    (b"<13", "PRI is not closed by '>' after at most 3 digits"),
    (b"<abcdef", "PRI is not closed by '>' after at most 3 digits"),
    (b"<0013>x", "PRI has more than 3 digits"),
])
def test_bad_pri_is_an_error_saying_why(data, reason):
    assert parse_message(data, NOW, UTC) == SyslogError(reason, data.decode("utf-8", "replace"))


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n", b"   ", b"\x00\x00"])
def test_empty_message_is_an_error(data):
    assert isinstance(parse_message(data, NOW, UTC), SyslogError)


# RFC 5424


def test_rfc5424_full_header():
    message = parsed(b'<165>1 2026-11-24T14:00:01.003Z mymachine.example.com evntslog 77 ID47 '
                     b'[exampleSDID@32473 iut="3" eventSource="Application"] An application event')
    assert message == SyslogMessage(
        "rfc5424", "An application event", facility=20, severity=5, timestamp=epoch(2026, 11, 24, 14, 0, 1) + 0.003,
        hostname="mymachine.example.com", app_name="evntslog", procid="77", msgid="ID47",
        structured_data=(("exampleSDID@32473", (("iut", "3"), ("eventSource", "Application"))),))


def test_rfc5424_nilvalues_are_none():
    message = parsed(b"<13>1 - - - - - - hello")
    assert message == SyslogMessage("rfc5424", "hello", 1, 5)


@pytest.mark.parametrize("stamp, expected", [
    ("2026-11-24T14:00:01Z", epoch(2026, 11, 24, 14, 0, 1)),
    ("2026-11-24T14:00:01.5+00:00", epoch(2026, 11, 24, 14, 0, 1) + 0.5),
    ("2026-11-24T16:00:01.123456+02:00", epoch(2026, 11, 24, 14, 0, 1) + 0.123456),
    ("2026-11-24T08:30:01-05:30", epoch(2026, 11, 24, 14, 0, 1)),
    ("2026-11-24t14:00:01z", epoch(2026, 11, 24, 14, 0, 1)),
    ("2016-12-31T23:59:60Z", epoch(2017, 1, 1, 0, 0, 0)),
])
def test_rfc5424_timestamps_with_fractions_and_offsets(stamp, expected):
    assert parsed(f"<13>1 {stamp} h a - - - x").timestamp == pytest.approx(expected, abs=1e-6)


def test_rfc5424_timestamp_without_offset_is_read_in_tz():
    plus5 = timezone(timedelta(hours=5))
    assert parsed("<13>1 2026-11-24T19:00:01 h a - - - x", tz=plus5).timestamp == epoch(2026, 11, 24, 14, 0, 1)


@pytest.mark.parametrize("stamp", ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-24T24:00:00Z",
                                   "2026-11-24T14:00:61Z", "2026-11-24T14:00:00+24:00",
                                   "yesterday", "2026-11-24"])
def test_rfc5424_unparseable_timestamp_is_none_but_message_is_kept(stamp):
    message = parsed(f"<13>1 {stamp} h a - - - x")
    assert (message.timestamp, message.hostname, message.message) == (None, "h", "x")


def test_structured_data_with_several_elements_and_escapes():
    message = parsed(rb'<13>1 - h a - - [a x="q\"uote" y="back\\slash"][b z="br\]acket" e=""][c] msg')
    assert message.structured_data == (
        ("a", (("x", 'q"uote'), ("y", "back\\slash"))), ("b", (("z", "br]acket"), ("e", ""))), ("c", ()))
    assert message.message == "msg"


def test_structured_data_keeps_backslash_before_other_characters():
    message = parsed(rb'<13>1 - h a - - [a x="C:\temp\n" y="\\\""]')
    assert message.structured_data == (("a", (("x", "C:\\temp\\n"), ("y", '\\"'))),)


def test_structured_data_value_may_hold_spaces_and_unicode():
    message = parsed('<13>1 - h a - - [origin software="rsyslogd ü" swVersion="8.2302.0"] x'.encode())
    assert message.structured_data == (("origin", (("software", "rsyslogd ü"), ("swVersion", "8.2302.0"))),)


def test_bom_before_msg_is_stripped():
    assert parsed(b"<13>1 - h a - - - \xef\xbb\xbfUTF-8 text \xc3\xa9").message == "UTF-8 text \u00e9"


@pytest.mark.parametrize("data", [b"<13>1 - h a - - -", b"<13>1 - h a - - - ", b'<13>1 - h a - - [x y="1"]'])
def test_absent_msg_is_empty_message(data):
    assert parsed(data).message == ""


def test_rsyslog_double_space_before_msg_is_not_part_of_message():
    assert parsed(b"<13>1 - vm sshd 21126 - -  Failed password").message == "Failed password"


@pytest.mark.parametrize("data, reason", [
    (b"<13>1 2026-11-24T14:00:01Z h a", "RFC 5424 header has 3 of its 6 fields after VERSION"),
    (b"<13>1 - - - - -", "RFC 5424 header has 5 of its 6 fields after VERSION"),
    (b"<13>1 -  a - - - x", "RFC 5424 HOSTNAME is empty"),
    (b"<13>1 - h a - - x", "STRUCTURED-DATA is neither '-' nor '[...]'"),
    (b"<13>1 - h a - - -x", "STRUCTURED-DATA is not followed by a space"),
    (b'<13>1 - h a - - [a x="1"]msg', "STRUCTURED-DATA is not followed by a space"),
    (b'<13>1 - h a - - [a x="1" msg', "malformed STRUCTURED-DATA element"),
    (b'<13>1 - h a - - [a x=1] msg', "malformed STRUCTURED-DATA element"),
    (b'<13>1 - h a - - [a x="1"', "malformed STRUCTURED-DATA element"),
    (b'<13>1 - h a - - [] msg', "malformed STRUCTURED-DATA element"),
])
def test_malformed_rfc5424_is_an_error_saying_why(data, reason):
    result = parse_message(data, NOW, UTC)
    assert isinstance(result, SyslogError) and result.reason.startswith(reason), result


def test_version_other_than_1_is_read_as_rfc3164_text():
    assert parsed(b"<13>2 something").format == "rfc3164"


# Decoding and hostile bytes


def test_invalid_utf8_is_replaced_not_raised():
    message = parsed(b"<13>Nov 24 14:00:01 web1 sshd[1]: Invalid user \xff\xfe from 192.0.2.5")
    assert message.message == "Invalid user \ufffd\ufffd from 192.0.2.5"


def test_interior_nul_becomes_replacement_character_and_trailing_nul_is_dropped():
    message = parsed(b"<13>sshd[1]: user a\x00b from 192.0.2.5\x00")
    assert message.message == "user a\ufffdb from 192.0.2.5"


def test_trailing_newline_is_not_part_of_the_message():
    assert parsed(b"<13>sshd[1]: hello\r\n").message == "hello"
    assert parsed(b"<13>1 - h a - - - hello\n").message == "hello"


def test_str_input_is_accepted():
    assert parsed("<13>sshd[1]: h\u00e9llo").message == "h\u00e9llo"


def test_error_excerpt_is_escaped_and_bounded():
    result = parse_message(b"<999>" + b"\n\x1b[31m" * 100, NOW, UTC)
    assert isinstance(result, SyslogError)
    assert len(result.excerpt) <= 80 and "\n" not in result.excerpt and "\x1b" not in result.excerpt


def test_parsed_message_is_immutable():
    message = parsed(RSYSLOG_UDP_FAILED)
    assert type(message) is SyslogMessage
    with pytest.raises(AttributeError):
        message.message = "forged"  # type: ignore[misc]
    assert hash(message) == hash(message._replace())


# Year and zone for timestamps that carry neither


def test_traditional_timestamp_takes_the_year_of_now():
    assert parsed(b"<13>Mar  1 00:00:00 h a: x").timestamp == epoch(2026, 3, 1)


def test_december_line_read_on_new_years_day_is_last_year():
    jan_1 = epoch(2027, 1, 1, 0, 0, 10)
    assert parsed(b"<13>Dec 31 23:59:59 h a: x", now=jan_1).timestamp == epoch(2026, 12, 31, 23, 59, 59)
    assert file_line("Dec 31 23:59:59 h a: x", now=jan_1).timestamp == epoch(2026, 12, 31, 23, 59, 59)


def test_timestamp_less_than_a_day_ahead_stays_in_this_year():
    dec_31 = epoch(2026, 12, 31, 0, 0, 0)
    assert parsed(b"<13>Dec 31 23:59:59 h a: x", now=dec_31).timestamp == epoch(2026, 12, 31, 23, 59, 59)
    assert parsed(b"<13>Jan  1 00:00:01 h a: x", now=dec_31).timestamp == epoch(2026, 1, 1, 0, 0, 1)


def test_february_29_read_in_a_common_year_is_the_leap_year_before():
    assert parsed(b"<13>Feb 29 12:00:00 h a: x", now=epoch(2029, 3, 1)).timestamp == epoch(2028, 2, 29, 12)


def test_impossible_traditional_date_gives_no_timestamp():
    message = parsed(b"<13>Feb 30 12:00:00 h a: x")
    assert (message.timestamp, message.hostname, message.message) == (None, "h", "x")
    assert parsed(b"<13>Nov 24 25:00:00 h a: x").timestamp is None


def test_traditional_timestamp_is_read_in_tz():
    plus5 = timezone(timedelta(hours=5))
    assert parsed(b"<13>Nov 24 19:00:01 h a: x", tz=plus5).timestamp == epoch(2026, 11, 24, 14, 0, 1)


def test_traditional_timestamp_follows_daylight_saving_of_tz():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no Europe/Berlin in the zone database here")
    assert parsed(b"<13>Jul  1 12:00:00 h a: x", tz=berlin).timestamp == epoch(2026, 7, 1, 10)
    assert parsed(b"<13>Nov 24 12:00:00 h a: x", tz=berlin).timestamp == epoch(2026, 11, 24, 11)


def test_no_tz_means_the_local_zone():
    assert parsed(b"<13>Nov 24 12:00:00 h a: x", tz=None).timestamp == datetime(2026, 11, 24, 12).timestamp()
    assert file_line("Nov 24 12:00:00 h a: x", tz=None).timestamp == datetime(2026, 11, 24, 12).timestamp()


def test_unusable_now_gives_no_timestamp_instead_of_raising():
    for now in (float("nan"), 1e20, -1e20):
        assert parse_file_line("Nov 24 12:00:00 h a: x", now, UTC).timestamp is None


# rsyslog file lines


def test_file_line_with_traditional_timestamp():
    message = file_line("Nov 24 14:00:01 web1 sshd[123]: Failed password for root from 192.0.2.1 port 22 ssh2\n")
    assert message == SyslogMessage(
        "file", "Failed password for root from 192.0.2.1 port 22 ssh2", timestamp=epoch(2026, 11, 24, 14, 0, 1),
        hostname="web1", app_name="sshd", procid="123")


def test_file_line_with_space_padded_day_and_crlf():
    message = file_line("Nov  4 09:08:07 web1 sshd-session[9]: Connection closed\r\n")
    assert (message.timestamp, message.app_name, message.message) == (
        epoch(2026, 11, 4, 9, 8, 7), "sshd-session", "Connection closed")


def test_file_line_with_rsyslog_high_precision_timestamp():
    message = file_line("2026-11-24T14:00:01.123456+01:00 web1 sshd[123]: Invalid user bob from 192.0.2.2\n")
    assert message.timestamp == pytest.approx(epoch(2026, 11, 24, 13, 0, 1) + 0.123456, abs=1e-6)
    assert (message.hostname, message.app_name, message.procid) == ("web1", "sshd", "123")
    assert message.message == "Invalid user bob from 192.0.2.2"


@pytest.mark.parametrize("rest, tag, pid, text", [
    ("kernel: [ 1.5] UFW BLOCK", "kernel", None, "[ 1.5] UFW BLOCK"),
    ("postfix/smtpd[77]: connect from x", "postfix/smtpd", "77", "connect from x"),
    ("sshd Invalid user bob", "sshd", None, "Invalid user bob"),
    ("sshd[5]:", "sshd", "5", ""),
    ("CRON[5]: (root) CMD (sshd[1]: Failed password)", "CRON", "5", "(root) CMD (sshd[1]: Failed password)"),
])
def test_file_line_tags(rest, tag, pid, text):
    message = file_line(f"Nov 24 14:00:01 web1 {rest}")
    assert (message.app_name, message.procid, message.message) == (tag, pid, text)


@pytest.mark.parametrize("line", ["", "\n", "hello world", "Nov 24 14:00:01", "Foo 24 14:00:01 h a: x",
                                  "2026-11-24 14:00:01 h a: x", "<13>Nov 24 14:00:01 h a: x"])
def test_non_syslog_file_line_is_an_error(line):
    assert isinstance(parse_file_line(line, NOW, UTC), SyslogError)


def test_file_line_has_no_facility_or_severity():
    message = file_line("Nov 24 14:00:01 web1 sshd[1]: x")
    assert (message.format, message.facility, message.severity) == ("file", None, None)


# fields()


def test_fields_of_an_rfc3164_message():
    assert parsed(RSYSLOG_UDP_FAILED).fields() == {
        "SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "21126", "SYSLOG_FACILITY": "1", "PRIORITY": "5",
        "_HOSTNAME": "vm"}


def test_fields_of_an_rfc5424_message_include_msgid():
    assert parsed(b"<86>1 - h su 9 AUTH - x").fields() == {
        "SYSLOG_IDENTIFIER": "su", "SYSLOG_PID": "9", "SYSLOG_FACILITY": "10", "PRIORITY": "6", "_HOSTNAME": "h",
        "SYSLOG_MSGID": "AUTH"}


def test_fields_leave_out_what_is_absent():
    assert parsed(b"<0>1 - - - - - - x").fields() == {"SYSLOG_FACILITY": "0", "PRIORITY": "0"}
    assert file_line("Nov 24 14:00:01 web1 kernel: x").fields() == {"SYSLOG_IDENTIFIER": "kernel", "_HOSTNAME": "web1"}


# TCP framing (RFC 6587)


def test_rsyslog_octet_counted_frames_parse():
    frames = decode([RSYSLOG_TCP_FAILED + RSYSLOG_TCP_INVALID])
    assert frames == [RSYSLOG_TCP_FAILED[4:], RSYSLOG_TCP_INVALID[4:]]
    first, second = (parsed(frame) for frame in frames)
    assert (first.format, first.app_name, first.procid, first.timestamp) == ("rfc5424", "sshd", "21126", STAMP)
    assert first.message == "Failed password for root from 203.0.113.77 port 4242 ssh2"
    assert second.structured_data == (("timeQuality", (("tzKnown", "1"), ("isSynced", "0"))),)
    assert second.message == "Invalid user bob from 2001:db8::77 port 4243"


def test_newline_frames_end_at_lf_crlf_or_nul():
    assert decode([b"<13>a: 1\n<13>a: 2\r\n<13>a: 3\x00<13>a: 4\n"]) == [
        b"<13>a: 1", b"<13>a: 2", b"<13>a: 3", b"<13>a: 4"]


def test_blank_lines_are_dropped():
    assert decode([b"\n\r\n\x00<13>a: 1\n\n\n"]) == [b"<13>a: 1"]


def test_octet_counted_frame_split_across_reads():
    decoder = FrameDecoder()
    assert decoder.feed(b"1") == []
    assert decoder.feed(b"2 <13>a: hel") == []
    assert decoder.feed(b"lo9 <13>a: x") == [b"<13>a: hello"]
    assert decoder.feed(b"") == []
    assert decoder.feed(b"y") == [b"<13>a: xy"]
    assert decoder.close() == []


def test_framing_is_decided_per_frame():
    assert decode([b"5 hello<13>a: line\n3 abc"]) == [b"hello", b"<13>a: line", b"abc"]


MIXED_STREAM = (RSYSLOG_TCP_FAILED + b"<13>a: newline framed\r\n" + b"11 octet\ncount" + b"\n"
                + b"250 " + b"s" * 250 + b"<13>after skip\n" + b"7x bad\n" + b"x" * 240 + b"\n"
                + b"1234567890 too many digits\n" + b"<13>a: nul\x00" + b"3 end")


@pytest.fixture(scope="module")
def mixed_expected() -> list[bytes | FramingError]:
    return decode([MIXED_STREAM], max_frame=200)


def test_mixed_stream_frames_and_errors(mixed_expected):
    frames = [item for item in mixed_expected if isinstance(item, bytes)]
    errors = [item.reason for item in mixed_expected if isinstance(item, FramingError)]
    assert frames == [RSYSLOG_TCP_FAILED[4:], b"<13>a: newline framed", b"octet\ncount", b"<13>after skip",
                      b"7x bad", b"1234567890 too many digits", b"<13>a: nul", b"end"]
    assert errors == ["octet-counted frame of 250 bytes exceeds max_frame 200",
                      "octet count is not followed by a space; reading a newline-delimited frame",
                      "newline-delimited frame exceeds max_frame 200 bytes",
                      "octet count has more than 9 digits; reading a newline-delimited frame"]


def test_every_split_point_gives_the_same_frames(mixed_expected):
    for cut in range(len(MIXED_STREAM) + 1):
        assert decode([MIXED_STREAM[:cut], MIXED_STREAM[cut:]], max_frame=200) == mixed_expected, cut


def test_every_pair_of_split_points_gives_the_same_frames():
    stream = RSYSLOG_TCP_INVALID + b"<13>x\r\n" + b"4 abcd" + b"9999 big\n<13>y\n" + b"3 xyz"
    expected = decode([stream], max_frame=50)
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1, 7):
            chunks = [stream[:first], stream[first:second], stream[second:]]
            assert decode(chunks, max_frame=50) == expected, (first, second)


def test_byte_by_byte_feed_gives_the_same_frames(mixed_expected):
    assert decode([bytes([byte]) for byte in MIXED_STREAM], max_frame=200) == mixed_expected


def test_random_chunks_give_the_same_frames(mixed_expected):
    rng = random.Random(6587)
    for _ in range(300):
        chunks, position = [], 0
        while position < len(MIXED_STREAM):
            size = rng.randint(0, 40)
            chunks.append(MIXED_STREAM[position:position + size])
            position += size
        assert decode(chunks, max_frame=200) == mixed_expected


def test_oversize_octet_frame_is_skipped_exactly_and_the_next_frame_is_read():
    big = b"x" * 300
    frames = decode([b"300 " + big + b"5 after"], max_frame=100)
    assert frames == [FramingError("octet-counted frame of 300 bytes exceeds max_frame 100", "300"), b"after"]


def test_oversize_newline_frame_is_discarded_up_to_the_next_newline():
    frames = decode([b"<13>" + b"y" * 300 + b"\n<13>next\n"], max_frame=100)
    assert len(frames) == 2 and isinstance(frames[0], FramingError) and frames[1] == b"<13>next"
    assert frames[0].reason == "newline-delimited frame exceeds max_frame 100 bytes"


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_newline_frame_of_exactly_max_frame_is_kept(terminator):
    body = b"<" + b"z" * 99
    for chunks in ([body + terminator], [body, terminator], [bytes([b]) for b in body + terminator]):
        assert decode(chunks, max_frame=100) == [body]
    assert isinstance(decode([body + b"z" + terminator], max_frame=100)[0], FramingError)


def test_octet_frame_of_exactly_max_frame_is_kept():
    assert decode([b"100 " + b"o" * 100], max_frame=100) == [b"o" * 100]


def test_bad_length_field_is_reported_and_the_line_is_still_delivered():
    assert decode([b"2026-11-24 web1 started\n<13>a: next\n"]) == [
        FramingError("octet count is not followed by a space; reading a newline-delimited frame", "2026-"),
        b"2026-11-24 web1 started", b"<13>a: next"]


def test_length_field_with_more_than_nine_digits_is_reported():
    assert decode([b"1234567890 x\n"]) == [
        FramingError("octet count has more than 9 digits; reading a newline-delimited frame", "1234567890"),
        b"1234567890 x"]


def test_close_returns_a_pending_newline_frame():
    decoder = FrameDecoder()
    assert decoder.feed(b"<13>a: 1\n<13>a: no newline\r") == [b"<13>a: 1"]
    assert decoder.close() == [b"<13>a: no newline"]


def test_close_reports_a_truncated_octet_counted_frame():
    decoder = FrameDecoder()
    assert decoder.feed(b"50 <13>a: cut short") == []
    assert decoder.close() == [FramingError("stream ended inside an octet-counted frame", "50 <13>a: cut short")]


def test_close_while_skipping_an_oversize_frame_adds_nothing():
    decoder = FrameDecoder(max_frame=10)
    assert len(decoder.feed(b"500 abc")) == 1
    assert decoder.close() == []
    decoder.feed(b"<13>" + b"q" * 50)
    assert decoder.close() == []


def test_decoder_starts_afresh_after_close():
    decoder = FrameDecoder()
    decoder.feed(b"5 ab")
    decoder.close()
    assert decoder.feed(b"<13>a: new\n") == [b"<13>a: new"]


def test_memory_stays_bounded_by_max_frame():
    decoder = FrameDecoder(max_frame=1000)
    for chunk in (b"<13>" + b"a" * 4000, b"b" * 100_000, b"9" * 5, b" c" * 10_000, b"\n", b"900000 " + b"d" * 50_000):
        for start in range(0, len(chunk), 4096):
            decoder.feed(chunk[start:start + 4096])
            assert len(decoder._pending) <= 1010  # the only way to observe what it holds


def test_long_line_fed_byte_by_byte_is_not_rescanned():
    decoder = FrameDecoder()
    line = b"<13>" + b"w" * 60_000
    for byte in line:
        decoder.feed(bytes([byte]))
    assert decoder.feed(b"\n") == [line]


def test_max_frame_must_be_positive():
    with pytest.raises(ValueError):
        FrameDecoder(0)


# Nothing raises, whatever arrives


def _mutations(rng: random.Random, samples: list[bytes]) -> list[bytes]:
    cases = []
    for _ in range(3000):
        sample = rng.choice(samples)
        kind = rng.randrange(4)
        if kind == 0:
            cases.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))))
        elif kind == 1:
            cases.append(sample[:rng.randint(0, len(sample))])
        elif kind == 2:
            data = bytearray(sample)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.choice(b'<>[]"\\ =-:0123456789\x00\n\xff')
            cases.append(bytes(data))
        else:
            cases.append(bytes(rng.choice(b'<>1 -[]"=\\:0Z.T\n') for _ in range(rng.randint(0, 30))))
    return cases


SAMPLES = [RSYSLOG_UDP_FAILED, RSYSLOG_UDP_INVALID, RSYSLOG_TCP_FAILED[4:], RSYSLOG_TCP_INVALID[4:],
           b'<165>1 2026-11-24T14:00:01.003+05:30 host app 1 ID [a b="c\\"d" e="f"][g] \xef\xbb\xbfmsg',
           b"<38>Nov  4 14:00:01 sshd[123]: msg", b"Nov 24 14:00:01 web1 sshd[1]: x",
           b"2026-11-24T14:00:01.123456+00:00 web1 sshd[1]: x"]


def test_parse_message_and_parse_file_line_never_raise():
    rng = random.Random(5424)
    for case in _mutations(rng, SAMPLES):
        for now in (NOW, 0.0):
            assert isinstance(parse_message(case, now, UTC), (SyslogMessage, SyslogError))
            assert isinstance(parse_message(case, now, None), (SyslogMessage, SyslogError))
        text = case.decode("utf-8", "surrogateescape")
        assert isinstance(parse_message(text, NOW), (SyslogMessage, SyslogError))
        assert isinstance(parse_file_line(text, NOW), (SyslogMessage, SyslogError))


def test_frame_decoder_never_raises_and_returns_only_frames_and_errors():
    rng = random.Random(3164)
    for case in _mutations(rng, [MIXED_STREAM, RSYSLOG_TCP_FAILED + RSYSLOG_TCP_INVALID]):
        decoder = FrameDecoder(max_frame=rng.choice([1, 16, 200]))
        out = []
        for start in range(0, len(case), 7):
            out += decoder.feed(case[start:start + 7])
        out += decoder.close()
        assert all(isinstance(item, (bytes, FramingError)) for item in out)
        assert all(item for item in out if isinstance(item, bytes))


def test_tag_and_message_agree_with_the_full_file_line_parse():
    rng = random.Random(7)
    lines = [
        "Nov 24 14:00:01 web1 sshd[1]: Failed password for root from 203.0.113.5 port 1 ssh2\n",
        "Nov  4 14:00:01 web1 sshd-session[22]: x\r\n",
        "2026-11-24T14:00:01.123456+00:00 web1 postfix/smtpd[3]: warning: y",
        "Nov 24 14:00:01 web1 kernel: [1.2] z",
        "Nov 24 14:00:01 web1 tag no colon",
        "Nov 24 14:00:01 web1",
        "Feb 30 14:00:01 web1 sshd[1]: impossible date",
        "garbage", "", "\x00\x00", "Nov 24 14:00:01 web1 a\x00b[1]: c",
    ]
    alphabet = "Nov 24:01 web1sshd[]:\x00 \n-T+."
    lines += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(2000)]
    for line in lines:
        full = parse_file_line(line, NOW, UTC)
        quick = file_line_tag_and_message(line)
        if isinstance(full, SyslogError):
            assert quick == full, line
        else:
            assert quick == (full.app_name, full.message), line
