"""Dates in plain log lines (parsers.dates): where a line's date is, so that it can be cut
out before a Fail2Ban filter's regexes see the line, and the time it names."""

from __future__ import annotations

import calendar
import time
from datetime import datetime, timedelta, timezone

import pytest

from parsers.dates import DateDetector, DateError
from parsers.syslog import parse_file_line

# A fixed "now" (2026-11-25 12:00:00 local time) completes dates written without a year.
NOW = time.mktime((2026, 11, 25, 12, 0, 0, 0, 0, -1))


def local(*fields: int) -> float:
    return time.mktime((*fields, 0, 0, -1))


def utc(*fields: int) -> float:
    return float(calendar.timegm((*fields, 0, 0, 0)))


def found(line: str, datepattern: str | None = None) -> tuple[str, float | None] | None:
    match = DateDetector(datepattern).find(line, NOW)
    return None if match is None else (line[match.start:match.end], match.time)


@pytest.mark.parametrize("line, text, when", [
    # syslog, day space-padded and zero-padded
    ("Nov  3 10:20:30 host sshd[1]: x", "Nov  3 10:20:30", local(2026, 11, 3, 10, 20, 30)),
    ("Nov 03 10:20:30 host sshd[1]: x", "Nov 03 10:20:30", local(2026, 11, 3, 10, 20, 30)),
    # ISO 8601 / RFC 3339 with a fraction and a zone, or without a zone (local time)
    ("2026-11-03T10:20:30.123456+02:00 host x", "2026-11-03T10:20:30.123456+02:00", utc(2026, 11, 3, 8, 20, 30)),
    ("2026-11-03T10:20:30Z host x", "2026-11-03T10:20:30Z", utc(2026, 11, 3, 10, 20, 30)),
    ("2026-11-03 10:20:30 app: x", "2026-11-03 10:20:30", local(2026, 11, 3, 10, 20, 30)),
    # Apache access log (the date inside the brackets), Apache error log with microseconds
    ('192.0.2.1 - - [03/Nov/2026:10:20:30 +0100] "GET / HTTP/1.1" 404', "03/Nov/2026:10:20:30 +0100",
     utc(2026, 11, 3, 9, 20, 30)),
    ("[Tue Nov 03 10:20:30.123456 2026] [core:error] x", "Tue Nov 03 10:20:30.123456 2026",
     local(2026, 11, 3, 10, 20, 30)),
    # MySQL's YYMMDD, epoch seconds, TAI64N
    ("261103 10:20:30 [Warning] x", "261103 10:20:30", local(2026, 11, 3, 10, 20, 30)),
    ("1795529641.123 client x", "1795529641.123", 1795529641.123),
    ("@4000000069279f6a2b2de7e4 dovecot: x", "@4000000069279f6a2b2de7e4", float(0x69279F6A)),
])  # fmt: skip
def test_common_log_date_formats_are_found_and_read(line, text, when):
    assert found(line) == (text, when)


def test_a_date_without_a_year_later_than_now_is_last_years():
    assert found("Dec 31 23:59:59 host app: x")[1] == local(2025, 12, 31, 23, 59, 59)


def test_line_begin_datepattern_takes_only_a_date_at_the_start():
    assert found("host app: seen at Nov  3 10:20:30", "{^LN-BEG}") is None
    assert found("Nov  3 10:20:30 host app: x", "{^LN-BEG}")[0] == "Nov  3 10:20:30"
    # Up to two non-word characters may come first: "[date]" still starts the line.
    assert found("[2026-11-03 10:20:30] x", "{^LN-BEG}")[0] == "2026-11-03 10:20:30"


def test_a_date_inside_a_longer_word_is_not_a_date():
    assert found("id=x2026-11-03 10:20:30y") is None


def test_strptime_directives_in_a_datepattern():
    line = "L 03/11/2026 - 10:20:30: player x"
    assert found(line, r"^L %d/%m/%Y - %H:%M:%S") == ("L 03/11/2026 - 10:20:30", local(2026, 11, 3, 10, 20, 30))
    # Month and day names are matched in any case.
    assert found("[03/NOV/2026 10:20:30] x", r"^\[%d/%b/%Y %H:%M:%S\]")[1] == local(2026, 11, 3, 10, 20, 30)


def test_a_group_in_the_datepattern_is_what_is_cut_out():
    line = 'client 192.0.2.1 [03/Nov/2026:10:20:30 +0000] "GET"'
    assert found(line, r"^[^\[]*\[({DATE})") == ("03/Nov/2026:10:20:30 +0000", utc(2026, 11, 3, 10, 20, 30))


def test_date_placeholder_stands_for_each_common_format_at_that_place():
    assert found("<W>2026-11-03 10:20:30.123 x", "^<W>{DATE}")[0] == "<W>2026-11-03 10:20:30.123"
    assert found("x <W>2026-11-03 10:20:30.123", "^<W>{DATE}") is None


def test_epoch_forms():
    assert found("[1795529641] nsd[1]: x", "{^LN-BEG}EPOCH") == ("1795529641", 1795529641.0)
    assert found("type=USER_AUTH msg=audit(1795529641.123:712): x", "EPOCH") == ("1795529641.123", 1795529641.123)
    assert found("ts=1795529641 x", "ts={EPOCH}") == ("ts=1795529641", 1795529641.0)
    assert found("1795529641123 x", "{^LN-BEG}LEPOCH") == ("1795529641123", 1795529641.123)


def test_unbound_pattern_needs_no_word_boundaries():
    assert found("id2026-11-03 10:20:30x", "{UNB}%Y-%m-%d %H:%M:%S")[0] == "2026-11-03 10:20:30"


def test_none_finds_no_date():
    assert found("2026-11-03 10:20:30 x", "{NONE}") is None


def test_several_datepattern_lines_are_tried_in_order():
    patterns = "^%Y:%m:%d-%H:%M:%S\n{^LN-BEG}"
    assert found("2026:11:03-10:20:30 x", patterns)[0] == "2026:11:03-10:20:30"
    assert found("Nov  3 10:20:30 x", patterns)[0] == "Nov  3 10:20:30"


def test_a_date_that_is_no_valid_date_is_still_cut_out():
    assert found("2026-02-30 10:20:30 x") == ("2026-02-30 10:20:30", None)


def test_unknown_directive_is_an_error():
    with pytest.raises(DateError, match="unknown date directive %Q"):
        DateDetector("%Q %H:%M")


def test_a_pattern_that_allows_no_date_finds_an_empty_one_without_a_time():
    # guacamole's style: a line of a multi-line message carries no date of its own.
    assert found("WARNING: Authentication attempt failed", "^WARNING:()**") == ("", None)


def test_the_date_nearest_the_start_wins_over_a_later_date_like_token():
    # Every template is compared alike: an attacker's TAI64N-looking user name further on is
    # message text, not the line's date.
    line = "x [2026-12-02 06:00:00] login failed for user @4000000011111111aaaaaaaa"
    assert found(line) == ("2026-12-02 06:00:00", local(2026, 12, 2, 6, 0, 0))
    assert found("[Wed Dec 02 06:00:00 2026] x 1795529641 audit(1795529641.1:2)")[0] == "Wed Dec 02 06:00:00 2026"


@pytest.mark.parametrize("line, text", [
    ("PDT Apr 16 21:05:29 monit[1]: x", "PDT Apr 16 21:05:29"),  # a zone in front (monit)
    ("Thu Jul 11 01:21:41 2026 x", "Thu Jul 11 01:21:41 2026"),  # a weekday is no zone
    ("Nov 03, 2026 9:20:30 PM org.x: y", "Nov 03, 2026 9:20:30 PM"),  # Java
    ("11/03/2026:10:20:30 x", "11/03/2026:10:20:30"),  # cPanel
    ("Nov-03-26 10:20:30 x", "Nov-03-26 10:20:30"),  # ASSP
    ("<11/03/26@10:20:30> x", "<11/03/26@10:20:30>"),
    ("20261103T102030 x", "20261103T102030"),  # compact ISO 8601
    ("10:20:30 x", "10:20:30"),  # a time of day alone
])  # fmt: skip
def test_more_common_formats(line, text):
    assert found(line)[0] == text


def test_a_numeric_date_that_reads_both_ways_is_day_first():
    assert found("03-11-2026 10:20:30 x")[1] == local(2026, 11, 3, 10, 20, 30)
    assert found("11-23-2026 10:20:30 x")[1] == local(2026, 11, 23, 10, 20, 30)  # no 23rd month


@pytest.mark.parametrize("zone", ["IST", "BST", "MET"])
def test_an_ambiguous_zone_abbreviation_gives_no_time(zone):
    # IST is India's, Ireland's or Israel's: guessing one would shift the time by hours.
    assert found(f"{zone} Nov  3 10:20:30 x") == (f"{zone} Nov  3 10:20:30", None)
    assert found("CET Nov  3 10:20:30 x")[1] == utc(2026, 11, 3, 9, 20, 30)


def test_a_detector_reads_zoneless_times_in_its_zone():
    tokyo = timezone(timedelta(hours=9))
    match = DateDetector(tz=tokyo).find("2026-11-03 10:20:30 x", NOW)
    assert match.time == utc(2026, 11, 3, 1, 20, 30)
    assert DateDetector(tz=tokyo).find("2026-11-03 10:20:30+00:00 x", NOW).time == utc(2026, 11, 3, 10, 20, 30)


@pytest.mark.parametrize("line", [
    "Dec 31 23:59:59 web1 sshd[1]: x",  # last year's, read just after midnight
    "Jan  1 12:00:00 web1 sshd[1]: x",  # a few hours ahead (clock skew): this year's
    "Jan  3 12:00:00 web1 sshd[1]: x",  # days ahead: last year's
    "Feb 29 12:00:00 web1 sshd[1]: x",  # no such day this year
])  # fmt: skip
@pytest.mark.parametrize("zone", [timezone.utc, timezone(timedelta(hours=-5))])
def test_dates_and_syslog_lines_infer_the_year_alike(line, zone):
    now = datetime(2027, 1, 1, 0, 10, tzinfo=zone).timestamp()
    assert DateDetector(tz=zone).find(line, now).time == parse_file_line(line, now, zone).timestamp
