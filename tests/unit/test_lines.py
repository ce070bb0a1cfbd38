"""One text line of any supported format into a LogEvent, or a LineError saying why not."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime

import pytest

from agent.events import LogEvent
from agent.lines import LineError, event_from_line

# Local time, as traditional syslog stamps are read (they carry no zone).
NOW = time.mktime((2026, 11, 25, 12, 0, 0, 0, 0, -1))

FILE_LINE = ("Nov 24 14:00:01 web1 sshd[20101]: Failed password for root "
             "from 203.0.113.5 port 52231 ssh2")
FILE_LINE_RFC3339 = ("2026-11-24T15:12:04.120001+01:00 web3 sshd-session[31001]: Failed publickey "
                     "for invalid user git from 203.0.113.53 port 48812 ssh2")
RFC5424_LINE = ("<38>1 2026-11-24T14:13:01.101010+00:00 web1 sshd 22001 - - "
                "Failed password for invalid user admin from 203.0.113.57 port 51000 ssh2")
RFC3164_LINE = "<38>Nov 24 14:00:01 web1 sshd[20101]: Invalid user admin from 203.0.113.6 port 41870"
JOURNAL_ENTRY = {
    "__REALTIME_TIMESTAMP": "1795529641231004",
    "_TRANSPORT": "syslog",
    "PRIORITY": "6",
    "SYSLOG_FACILITY": "4",
    "SYSLOG_IDENTIFIER": "sshd",
    "SYSLOG_PID": "23001",
    "MESSAGE": "Failed password for root from 203.0.113.61 port 40110 ssh2",
    "_COMM": "sshd",
    "_EXE": "/usr/sbin/sshd",
    "_SYSTEMD_UNIT": "ssh.service",
    "_HOSTNAME": "web1",
}


def event(line: str, now: float = NOW) -> LogEvent:
    result = event_from_line(line, now)
    assert isinstance(result, LogEvent), result
    return result


def local(*parts: int) -> float:
    return time.mktime((*parts, 0, 0, -1))


# ---- each format ----

def test_journal_line_is_a_trusted_journal_event():
    e = event(json.dumps(JOURNAL_ENTRY))
    assert (e.source, e.trusted) == ("journal", True)
    assert e.time == pytest.approx(1795529641.231004, abs=1e-6)
    assert e.message == "Failed password for root from 203.0.113.61 port 40110 ssh2"
    assert e.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert e.fields["_EXE"] == "/usr/sbin/sshd"
    assert e.fields["_SYSTEMD_UNIT"] == "ssh.service"


def test_journal_line_without_timestamp_is_dated_now():
    entry = {k: v for k, v in JOURNAL_ENTRY.items() if k != "__REALTIME_TIMESTAMP"}
    assert event(json.dumps(entry)).time == NOW


def test_rfc5424_line_is_an_untrusted_syslog_event():
    e = event(RFC5424_LINE)
    assert (e.source, e.trusted) == ("syslog", False)
    assert e.time == datetime(2026, 11, 24, 14, 13, 1, 101010, tzinfo=UTC).timestamp()
    assert e.message == "Failed password for invalid user admin from 203.0.113.57 port 51000 ssh2"
    assert dict(e.fields) == {"SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "22001",
                              "SYSLOG_FACILITY": "4", "PRIORITY": "6", "_HOSTNAME": "web1"}


def test_rfc5424_line_without_timestamp_is_dated_now():
    e = event("<38>1 - web1 sshd 22001 - - Invalid user pi from 203.0.113.59 port 51003")
    assert e.time == NOW
    assert e.message == "Invalid user pi from 203.0.113.59 port 51003"


def test_rfc3164_line_with_pri_is_a_syslog_event_dated_from_the_line():
    e = event(RFC3164_LINE)
    assert (e.source, e.trusted) == ("syslog", False)
    assert e.time == local(2026, 11, 24, 14, 0, 1)
    assert e.message == "Invalid user admin from 203.0.113.6 port 41870"
    assert e.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert e.fields["SYSLOG_PID"] == "20101"
    assert e.fields["_HOSTNAME"] == "web1"
    assert (e.fields["SYSLOG_FACILITY"], e.fields["PRIORITY"]) == ("4", "6")


def test_rfc3164_line_without_timestamp_is_dated_now():
    e = event("<38>sshd[7]: Invalid user admin from 203.0.113.6 port 41870")
    assert e.time == NOW
    assert e.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert e.message == "Invalid user admin from 203.0.113.6 port 41870"


def test_classic_file_line_is_an_untrusted_file_event():
    e = event(FILE_LINE)
    assert (e.source, e.trusted) == ("file", False)
    assert e.time == local(2026, 11, 24, 14, 0, 1)
    assert e.message == "Failed password for root from 203.0.113.5 port 52231 ssh2"
    assert dict(e.fields) == {"SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "20101", "_HOSTNAME": "web1"}


def test_classic_file_line_from_last_year_is_dated_last_year():
    e = event("Dec 31 23:59:59 web1 sshd[1]: Invalid user a from 203.0.113.6",
              now=local(2027, 1, 1, 0, 5, 0))
    assert e.time == local(2026, 12, 31, 23, 59, 59)


def test_file_line_with_rfc3339_stamp_keeps_its_offset():
    e = event(FILE_LINE_RFC3339)
    assert e.source == "file"
    assert e.time == datetime(2026, 11, 24, 14, 12, 4, 120001, tzinfo=UTC).timestamp()
    assert e.fields["SYSLOG_IDENTIFIER"] == "sshd-session"


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_line_ending_is_not_part_of_the_message(ending):
    for line in (FILE_LINE, RFC5424_LINE, json.dumps(JOURNAL_ENTRY)):
        assert event(line + ending).message.endswith("ssh2")


def test_journal_fields_are_trusted_only_in_journal_lines():
    # The same identity written into a syslog line is only the sender's claim.
    assert event(json.dumps(JOURNAL_ENTRY)).trusted is True
    assert event(RFC5424_LINE).trusted is False
    assert event(FILE_LINE).trusted is False


# ---- malformed lines ----

@pytest.mark.parametrize("line,reason", [
    ("{not json", "journal JSON: not valid JSON"),
    ('{"SYSLOG_IDENTIFIER": "sshd"}', "journal JSON: no MESSAGE field"),
    ("{" + "[" * 100_000, "journal JSON:"),
    ("<999>1 - web1 sshd - - - x", "syslog: PRI value 999"),
    ("<38", "syslog: PRI is not closed"),
    ("<x>hello", "syslog: PRI 'x' is not a number"),
    ("<38>1 2026-11-24T14:13:01Z web1 sshd", "syslog: RFC 5424 header"),
    ("<38>1 - web1 sshd - - x msg", "syslog: STRUCTURED-DATA"),
    ("sshd: no timestamp here", "file: not a syslog file line"),
    ("", "file: not a syslog file line"),
    ("Nov 24 14:00:01", "file: not a syslog file line"),
])
def test_malformed_line_gives_line_error_with_reason(line, reason):
    result = event_from_line(line, NOW)
    assert isinstance(result, LineError), result
    assert result.reason.startswith(reason), result.reason


def test_random_lines_never_raise():
    rng = random.Random(20261124)
    alphabet = '<>{}[]:" 0123456789abcdefghijklmnopqrstuvwxyz\n\x00-.T+\\'
    starts = ["", "<", "{", "<13>1 ", "<38>", "Nov 24 ", '{"MESSAGE":', "2026-11-24T", "<191>1 - "]
    for _ in range(4000):
        line = rng.choice(starts) + "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        result = event_from_line(line, NOW)
        if isinstance(result, LineError):
            assert result.reason, line
            continue
        assert isinstance(result, LogEvent), (line, result)
        assert result.source in ("journal", "syslog", "file"), line
        assert result.trusted is (result.source == "journal"), line
        assert isinstance(result.time, float), line
        assert isinstance(result.message, str), line


def test_journal_line_with_unusable_timestamp_never_raises():
    line = json.dumps({**JOURNAL_ENTRY, "__REALTIME_TIMESTAMP": "\u00b2"})
    result = event_from_line(line, NOW)
    assert isinstance(result, (LogEvent, LineError))
