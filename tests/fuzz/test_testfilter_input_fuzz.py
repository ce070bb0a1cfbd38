"""Fuzzing what `jailwarden test-filter` reads: `journalctl -o json` lines (parsers/journal_json.py),
lines of any format (agent/lines.py), and whole logs (agent/testfilter.py, agent/parallel.py).

A malformed line is an error value, never an exception; a well-formed journal entry gives its
fields and message back exactly; every line of a log gets one verdict, the counts add up to
the lines read, and a log counted in parts (what test-filter does with several CPUs) counts
the same as read whole.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from agent.events import LogEvent
from agent.lines import LineError, event_from_line
from agent.parallel import count_range, split
from agent.testfilter import FilterTester
from parsers.filterfile import load_reference
from parsers.journal_json import JournalJsonError, JournalRecord, parse_journal_json

NOW = 1795529641.0
SSHD = load_reference("sshd")

FIELD_NAME = st.one_of(st.sampled_from(["MESSAGE", "__REALTIME_TIMESTAMP", "SYSLOG_IDENTIFIER", "_EXE", "_UID",
                                        "_SYSTEMD_UNIT", "_COMM", "_PID", "SYSLOG_PID", "_HOSTNAME"]),
                       st.text(max_size=12))
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                        st.text(max_size=30), st.sampled_from(["1795529641231004", "-1", "1" * 25, "\u0661\u0662",
                                                               "/usr/sbin/sshd", "0", "sshd", " 12", "12.5"]))
JSON_VALUE = st.recursive(
    JSON_SCALAR | st.lists(st.integers(-5, 300), max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)
SSHD_MESSAGE = st.sampled_from([
    "Failed password for root from 203.0.113.5 port 52231 ssh2", "Invalid user admin from 2001:db8::7 port 22",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=x",
])


@st.composite
def journal_entry(draw) -> dict:
    entry = draw(st.dictionaries(FIELD_NAME, JSON_VALUE, max_size=8))
    if draw(st.booleans()):
        entry["MESSAGE"] = draw(st.one_of(SSHD_MESSAGE, st.text(max_size=60),
                                          st.binary(max_size=30).map(list), JSON_VALUE))
    if draw(st.booleans()):
        entry.update(_EXE="/usr/sbin/sshd", _UID="0", SYSLOG_IDENTIFIER="sshd")
    return entry


def journal_line(entry: dict, ensure_ascii: bool) -> str:
    return json.dumps(entry, ensure_ascii=ensure_ascii)


JSONISH = st.lists(st.sampled_from(['{', '}', '[', ']', '"', ':', ',', '\\', '\\u', 'MESSAGE', '"MESSAGE":', '1e999',
                                    'NaN', 'Infinity', '-', '0', 'null', 'true', ' ', '\n', '\x00', '\ud800']),
                   max_size=30).map("".join)


@given(text=st.one_of(st.text(max_size=200), JSONISH.map(lambda text: "{" + text),
                      st.builds(journal_line, journal_entry(), st.booleans())))
def test_any_journal_json_line_is_a_record_or_an_error(text: str) -> None:
    result = parse_journal_json(text)
    if isinstance(result, JournalJsonError):
        assert result.reason and len(result.excerpt) <= 80
        return
    assert isinstance(result, JournalRecord) and isinstance(result.message, str)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in result.fields.items())
    assert result.time is None or (math.isfinite(result.time) and result.time >= 0)


@given(entry=journal_entry(), message=st.text(max_size=80), stamp=st.integers(0, 10**19 - 1))
def test_a_journal_entry_gives_back_its_message_fields_and_time(entry: dict, message: str, stamp: int) -> None:
    entry = {**entry, "MESSAGE": message, "__REALTIME_TIMESTAMP": str(stamp)}
    result = parse_journal_json(json.dumps(entry, ensure_ascii=False))
    assert isinstance(result, JournalRecord), result
    assert result.message == message and result.time == stamp / 1_000_000
    strings = {key: value for key, value in entry.items() if isinstance(value, str) and key != "MESSAGE"}
    assert strings.items() <= result.fields.items()


LINE = st.one_of(
    st.text(max_size=120),
    st.builds(journal_line, journal_entry(), st.booleans()),
    st.builds(lambda head, message: head + message,
              st.sampled_from(["Nov 24 14:00:01 web1 sshd[1]: ", "<38>1 2026-11-24T14:00:01Z web1 sshd 1 - - ",
                               "<38>Nov 24 14:00:01 web1 sshd[1]: ", "2026-11-24T14:00:01.5+00:00 web1 sshd: ",
                               "Nov 24 14:00:01 web1 sshd[1]: message repeated 2 times: [ ", "", "#", " ", "<", "{"]),
              st.one_of(SSHD_MESSAGE, st.text(max_size=60))),
)


@given(line=LINE)
def test_any_line_is_an_event_or_an_error_and_the_daemon_path_takes_it(line: str) -> None:
    event = event_from_line(line, NOW)
    if isinstance(event, LineError):
        assert event.reason
        return
    assert isinstance(event, LogEvent) and isinstance(event.message, str) and math.isfinite(event.time)
    failure = SSHD.match(event)
    assert failure is None or failure.filter == "sshd"


@given(lines=st.lists(LINE, max_size=30))
def test_every_line_of_a_log_gets_one_verdict_and_the_counts_add_up(lines: list[str]) -> None:
    verdicts = []
    tester = FilterTester(SSHD, NOW, report=lambda lineno, line, verdict: verdicts.append(verdict.kind))
    # As a file is read: each line keeps its "\n", a line break inside a line ends it.
    records = [record + "\n" for record in "\n".join(lines).split("\n")] if lines else []
    s = tester.run(records)
    assert len(verdicts) == s.lines == len(records)
    assert s.lines == s.skipped + s.other + s.errors + s.matched + s.ignored + s.missed
    assert s.matched == sum(s.addresses.values()) and s.too_long <= s.missed
    assert FilterTester(SSHD, NOW).run(records) == s  # the quiet, fast path counts the same


@settings(max_examples=settings.default.max_examples // 2)
@given(content=st.lists(st.one_of(LINE.map(lambda line: line.encode("utf-8", "surrogatepass")),
                                  st.binary(max_size=40)), max_size=40).map(b"\n".join),
       jobs=st.integers(2, 6))
def test_a_log_counted_in_parts_counts_the_same_as_read_whole(content: bytes, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.log"
        path.write_bytes(content)
        whole = count_range(path, 0, len(content), SSHD, NOW)
        parts = split(path, jobs, min_bytes=1)
        assert parts[0][0] == 0 and parts[-1][1] == len(content)
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        total = count_range(path, *parts[0], SSHD, NOW)
        for start, end in parts[1:]:
            total.add(count_range(path, start, end, SSHD, NOW))
        assert total == whole
