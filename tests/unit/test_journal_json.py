"""`journalctl -o json` lines: fields, message, time, and every malformed line as an error value."""

from __future__ import annotations

import json

import pytest

from parsers.journal_json import JournalJsonError, JournalRecord, parse_journal_json

# Shaped like journalctl -o json output from Debian 12 (OpenSSH 9.2).
ENTRY = {
    "__CURSOR": "s=fb5f61b4046ff5fb40183aa4a2f98b00;i=2f1b1;b=9b5ba6722fbbaaccfd1f1e4107fb52cd",
    "__REALTIME_TIMESTAMP": "1795529641231004",
    "__MONOTONIC_TIMESTAMP": "375241231004",
    "_TRANSPORT": "syslog",
    "PRIORITY": "6",
    "SYSLOG_FACILITY": "4",
    "SYSLOG_IDENTIFIER": "sshd",
    "SYSLOG_PID": "23001",
    "MESSAGE": "Failed password for root from 203.0.113.61 port 40110 ssh2",
    "_PID": "23001",
    "_UID": "0",
    "_COMM": "sshd",
    "_EXE": "/usr/sbin/sshd",
    "_SYSTEMD_UNIT": "ssh.service",
    "_HOSTNAME": "web1",
}


def line(**changes: object) -> str:
    entry = {**ENTRY, **changes}
    return json.dumps({k: v for k, v in entry.items() if v is not None})


def record(text: str) -> JournalRecord:
    result = parse_journal_json(text)
    assert isinstance(result, JournalRecord), result
    return result


def error(text: str) -> JournalJsonError:
    result = parse_journal_json(text)
    assert isinstance(result, JournalJsonError), result
    return result


def test_entry_gives_message_fields_and_time():
    entry = record(line())
    assert entry.message == "Failed password for root from 203.0.113.61 port 40110 ssh2"
    assert entry.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert entry.fields["_EXE"] == "/usr/sbin/sshd"
    assert entry.fields["_SYSTEMD_UNIT"] == "ssh.service"
    assert entry.fields["SYSLOG_PID"] == "23001"
    assert "MESSAGE" not in entry.fields


def test_realtime_timestamp_in_microseconds_becomes_seconds():
    assert record(line()).time == pytest.approx(1795529641.231004, abs=1e-6)
    assert record(line(__REALTIME_TIMESTAMP="1000000")).time == 1.0


def test_entry_without_timestamp_has_no_time():
    assert record(line(__REALTIME_TIMESTAMP=None)).time is None


def test_message_as_byte_array_is_decoded_as_utf8():
    text = "Invalid user пётр from 203.0.113.10 port 40013"
    entry = record(line(MESSAGE=list(text.encode("utf-8"))))
    assert entry.message == text


def test_message_as_invalid_utf8_bytes_keeps_the_address():
    # pam_unix logging an ISO-8859-1 name raw: journalctl gives the bytes, not a string.
    raw = b"pam_unix(sshd:auth): authentication failure; rhost=203.0.113.66  user=jos\xe9"
    entry = record(line(MESSAGE=list(raw)))
    assert entry.message == "pam_unix(sshd:auth): authentication failure; rhost=203.0.113.66  user=jos\ufffd"


def test_field_given_several_times_keeps_the_first():
    entry = record(line(_SYSTEMD_UNIT=["ssh.service", "evil.service"],
                        MESSAGE=["first message", "second message"]))
    assert entry.fields["_SYSTEMD_UNIT"] == "ssh.service"
    assert entry.message == "first message"


def test_field_given_several_times_with_byte_values_keeps_the_first():
    entry = record(line(MESSAGE=[list(b"caf\xc3\xa9"), list(b"other")]))
    assert entry.message == "café"


def test_missing_message_is_an_error():
    assert "MESSAGE" in error(line(MESSAGE=None)).reason


@pytest.mark.parametrize("message", [True, {"text": "x"}, [], None],
                         ids=["bool", "object", "empty-array", "null"])
def test_message_that_is_not_text_is_an_error(message):
    text = json.dumps({**ENTRY, "MESSAGE": message})
    assert "MESSAGE" in error(text).reason


@pytest.mark.parametrize("text", [
    "{",
    '{"MESSAGE": "Failed password for root',
    "{MESSAGE: 'x'}",
    '{"MESSAGE": "x"} trailing',
    "",
    "not json at all",
])
def test_text_that_is_not_json_is_an_error(text):
    failure = error(text)
    assert "JSON" in failure.reason
    assert failure.excerpt == text[:80]


@pytest.mark.parametrize("text", ['["MESSAGE", "x"]', '"MESSAGE"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_an_error(text):
    assert "object" in error(text).reason


@pytest.mark.parametrize("text", [
    "[" * 100_000,
    "{" * 100_000,
    '{"MESSAGE": ' + "[" * 100_000,
    '{"MESSAGE": "x", "A": ' + "[" * 100_000 + "]" * 100_000 + "}",
])
def test_deep_nesting_is_an_error_not_an_exception(text):
    assert "JSON" in error(text).reason


def test_excerpt_is_bounded():
    assert len(error("[" * 100_000).excerpt) <= 80


@pytest.mark.parametrize("stamp", ["\u00b2", "9" * 5000, "9" * 400],
                         ids=["superscript-two", "5000-digits", "400-digits"])
def test_unusable_realtime_timestamp_does_not_raise(stamp):
    result = parse_journal_json(line(__REALTIME_TIMESTAMP=stamp))
    assert isinstance(result, (JournalRecord, JournalJsonError))
    if isinstance(result, JournalRecord):
        assert result.time is None
