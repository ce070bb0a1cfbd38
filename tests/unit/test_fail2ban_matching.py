"""Matching with Fail2Ban filters: tags, prefregex, searching after the date is cut out,
multi-line failures, the journal line, identity, and the same verdicts through the daemon's
path (LogEvent, Filter.match) and through test-filter."""

from __future__ import annotations

import ipaddress
import json
import tracemalloc
from pathlib import Path

import pytest
from f2b_trees import definition, sshlike

from agent.bans import BanBook, BanPolicy
from agent.events import LogEvent
from agent.jail import Jail
from agent.lines import LineError, event_from_line
from agent.pipeline import JailSetup, Pipeline
from agent.router import Router
from agent.testfilter import FilterTester
from parsers.fail2ban import journal_line, load_fail2ban_filter
from parsers.fail2ban_filter import MAX_LINE
from parsers.fail2ban_state import MAX_STATE_BYTES
from parsers.errors import FilterError

NOW = 1795529641.0
CORPUS_FILTERS = Path(__file__).parents[1] / ".cache" / "fail2ban" / "root" / "etc" / "fail2ban"

TAGS = r"""
failregex = ^host <HOST>$
            ^addr <ADDR>$
            ^four <IP4>$
            ^six <IP6>$
            ^name <DNS>$
            ^net <SUBNET>$
            ^id <F-ID/>$
            ^token <F-ID>\S+</F-ID>$
            ^port <ADDR> port <F-PORT/>$
            ^custom <F-SESSION>\S+</F-SESSION> user <F-ALT_USER>\S+</F-ALT_USER> from <HOST>$
"""


def said(verdict) -> str:
    if verdict.kind == "fail":
        return str(verdict.address)
    if verdict.captures and "host" in verdict.captures:
        return f"unusable {verdict.captures['host']}"
    return verdict.kind


@pytest.mark.parametrize("message, expected", [
    ("host 192.0.2.1", "192.0.2.1"),
    ("host 2001:db8::1", "2001:db8::1"),
    ("host [2001:db8::2]", "2001:db8::2"),
    ("host ::ffff:192.0.2.3", "192.0.2.3"),
    ("host attacker.example", "unusable attacker.example"),
    ("host 999.1.1.1", "unusable 999.1.1.1"),
    ("addr 192.0.2.4", "192.0.2.4"),
    ("addr attacker.example", "miss"),
    ("four 192.0.2.5", "192.0.2.5"),
    ("four 2001:db8::5", "miss"),
    ("six 2001:db8::6", "2001:db8::6"),
    ("six 192.0.2.6", "miss"),
    ("name attacker.example", "unusable attacker.example"),
    ("net 192.0.2.7", "192.0.2.7"),
    ("net 192.0.2.7/32", "192.0.2.7"),
    ("net 192.0.2.0/24", "unusable 192.0.2.0"),
    ("id 192.0.2.8", "192.0.2.8"),
    ("id session-42", "unusable session-42"),
    ("token 192.0.2.9", "192.0.2.9"),
])  # fmt: skip
def test_every_address_tag(tmp_path, message, expected):
    assert said(definition(tmp_path, TAGS).examine(message)) == expected


def test_named_tags_are_captured_and_alt_user_stands_in_for_user(tmp_path):
    flt = definition(tmp_path, TAGS)
    assert flt.examine("custom s-1 user root from 192.0.2.9").captures == {
        "session": "s-1", "alt_user": "root", "user": "root"}
    assert flt.examine("port 192.0.2.10 port 2222").captures == {"fport": "2222"}


def test_a_network_is_reported_with_the_reason(tmp_path):
    verdict = definition(tmp_path, TAGS).examine("net 192.0.2.0/24")
    assert verdict.kind == "miss" and "is a network: jailwarden bans single addresses" in verdict.detail


def test_usedns_no_makes_host_match_addresses_only(tmp_path):
    flt = definition(tmp_path, "usedns = no\nfailregex = ^host <HOST>$\n")
    assert said(flt.examine("host attacker.example")) == "miss"
    assert said(flt.examine("host 192.0.2.11")) == "192.0.2.11"
    noted = definition(tmp_path, "usedns = yes\nfailregex = ^host <HOST>$\n")
    assert any("never resolves host names" in note for note in noted.notes)


def test_regexes_are_searched_not_matched(tmp_path):
    flt = definition(tmp_path, "failregex = denied for <HOST>\n")
    assert said(flt.examine("web: request denied for 192.0.2.12 (rule 7)")) == "192.0.2.12"


def test_the_date_is_cut_out_before_the_regexes_search(tmp_path):
    flt = definition(tmp_path, r"failregex = ^\[\] \[error\] \[client <HOST>\] denied$" + "\n")
    line = "[Tue Nov 03 10:20:30.123456 2026] [error] [client 192.0.2.13] denied"
    assert said(flt.examine_line(line, NOW)) == "192.0.2.13"
    # Not at the start of the line, a date is text like any other (datepattern {^LN-BEG}).
    syslog = definition(tmp_path, "failregex = ^%(__prefix_line)sbad login from <HOST> at .+$\n")
    assert said(syslog.examine_line("Nov  3 10:20:30 web1 app[1]: bad login from 192.0.2.14 at "
                                    "Nov  3 10:20:29", NOW)) == "192.0.2.14"


def test_prefregex_content_is_what_the_failregexes_see(tmp_path):
    flt = sshlike(tmp_path)
    assert said(flt.examine_line("Nov  3 10:20:30 web1 sshd[42]: Invalid user bob from 192.0.2.15", NOW)) \
        == "192.0.2.15"
    assert said(flt.examine_line("Nov  3 10:20:30 web1 sshd[42]: error: Invalid user bob from 192.0.2.15", NOW)) \
        == "192.0.2.15"
    # The failregex is anchored to the content: text before it is the prefix's, or nothing matches.
    assert said(flt.examine_line("Nov  3 10:20:30 web1 sshd[42]: note: Invalid user bob from 192.0.2.15", NOW)) \
        == "miss"


MLFID = r"""
prefregex = ^<F-MLFID>conn\d+</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$
failregex = ^auth failed$
            ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$
            ^<F-MLFFORGET>closed</F-MLFFORGET>$
"""


def test_a_multi_line_id_carries_the_address_to_a_later_failure(tmp_path):
    flt = definition(tmp_path, MLFID)
    assert said(flt.examine("conn1: connect from 192.0.2.16")) == "miss"  # no failure, but remembered
    assert said(flt.examine("conn1: auth failed")) == "192.0.2.16"


def test_a_failure_pending_its_address_counts_when_the_address_comes(tmp_path):
    flt = definition(tmp_path, MLFID)
    assert said(flt.examine("conn2: auth failed")) == "miss"  # no address yet
    assert said(flt.examine("conn2: connect from 192.0.2.17")) == "192.0.2.17"


def test_mlfforget_forgets_the_id(tmp_path):
    flt = definition(tmp_path, MLFID)
    flt.examine("conn3: connect from 192.0.2.18")
    flt.examine("conn3: closed")
    assert said(flt.examine("conn3: auth failed")) == "miss"


def test_success_and_repeated_user_rules_of_multi_line_ids(tmp_path):
    flt = sshlike(tmp_path)

    def line(message: str, pid: int) -> str:
        return said(flt.examine_line(f"Nov  3 10:20:30 web1 sshd[{pid}]: {message}", NOW))

    pam = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser={} rhost=192.0.2.19"
    # A PAM failure followed by a success of the same connection is no failure.
    assert line(pam.format("alice"), 1) == "miss"
    assert line("Accepted password for alice from 192.0.2.19 port 22 ssh2", 1) == "miss"
    # A second user name on one connection is: someone is guessing accounts.
    assert line(pam.format("root"), 2) == "miss"
    assert line(pam.format("admin"), 2) == "192.0.2.19"


SESSIONS = r"""
maxlines = 3
failregex = ^%(__prefix_line)ssession (?P<sid>\d+) opened for <HOST>$<SKIPLINES>^%(__prefix_line)ssession (?P=sid) failed$
"""  # noqa: E501


def event(message: str, tag: str = "app", **fields: str) -> LogEvent:
    return LogEvent(NOW, "syslog", message, {"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": tag, "SYSLOG_PID": "9",
                                             **fields}, True)


def test_multi_line_failures_across_maxlines(tmp_path):
    flt = definition(tmp_path, SESSIONS)
    assert flt.stateful
    assert said(flt.examine_event(event("session 7 opened for 192.0.2.20"))) == "miss"
    assert said(flt.examine_event(event("unrelated noise"))) == "miss"
    assert said(flt.examine_event(event("session 7 failed"))) == "192.0.2.20"
    # The lines a failure used are gone from the buffer.
    assert said(flt.examine_event(event("session 7 failed"))) == "miss"


def test_one_programs_lines_cannot_complete_anothers_failure(tmp_path):
    flt = definition(tmp_path, SESSIONS)
    flt.examine_event(event("session 8 opened for 192.0.2.21", tag="attacker"))
    assert said(flt.examine_event(event("session 8 failed", tag="app"))) == "miss"
    flt.examine_event(event("session 9 opened for 192.0.2.22", tag="app"))
    flt.examine_event(event("session 9 failed", tag="attacker"))
    assert said(flt.examine_event(event("session 9 failed", tag="app"))) == "192.0.2.22"


def test_ignoreregex_after_the_failregex_and_early(tmp_path):
    late = definition(tmp_path, "failregex = ^denied <F-USER>\\S+</F-USER> from <HOST>$\n"
                                "ignoreregex = ^denied backup\n")
    assert late.examine("denied backup from 192.0.2.23").kind == "ignored"
    assert late.examine("denied root from 192.0.2.23").kind == "fail"
    # With fewer ignoreregexes than failregexes minus two, Fail2Ban checks the whole line first.
    early = definition(tmp_path / "early", "failregex = ^a <HOST>$\n            ^b <HOST>$\n            ^c <HOST>$\n"
                                           "            ^d <HOST>$\nignoreregex = 192\\.0\\.2\\.24\n")
    assert early.examine("c 192.0.2.24").kind == "ignored"
    assert early.examine("c 192.0.2.25").kind == "fail"


def test_journal_line_is_built_as_fail2bans_journal_reader_builds_it():
    fields = {"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "42", "_COMM": "x", "_PID": "43"}
    assert journal_line(fields, "hello") == "web1 sshd[42]: hello"
    assert journal_line({"_HOSTNAME": "web1", "_COMM": "nginx", "_PID": "7"}, "hi") == "web1 nginx[7]: hi"
    assert journal_line({"SYSLOG_IDENTIFIER": "app"}, "two\nlines") == "app: two\\nlines"
    assert journal_line({"_HOSTNAME": "h", "SYSLOG_IDENTIFIER": "kernel", "_SOURCE_MONOTONIC_TIMESTAMP": "1500000"},
                        "x") == "h kernel: [    1.500000] x"
    assert journal_line({}, "bare") == "bare"


def test_filter_match_uses_identity_and_the_journal_line(tmp_path):
    flt = sshlike(tmp_path)
    message = "Failed password for root from 192.0.2.26 port 22 ssh2"
    unit = LogEvent(NOW, "journal", message, {"_SYSTEMD_UNIT": "ssh.service", "_HOSTNAME": "web1",
                                              "SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "5"}, True)
    failure = flt.match(unit)
    assert str(failure.address) == "192.0.2.26" and failure.captures == {"user": "root"}
    assert failure.trusted is False  # _SYSTEMD_UNIT alone does not prove the writer
    assert flt.match(event(message, tag="sshd")).trusted is True  # a syslog sender on the allow list
    assert flt.match(event(message, tag="cron")) is None
    router = Router([flt])
    assert router.candidates(unit) == [flt] and router.candidates(event(message, tag="sshd")) == [flt]


def test_a_fail2ban_filter_bans_through_the_pipeline(tmp_path):
    flt = sshlike(tmp_path)
    pipe = Pipeline([JailSetup("ssh", flt, Jail("ssh", maxretry=2, findtime=600), BanPolicy(3600))], BanBook())
    message = "Failed password for root from 192.0.2.27 port 22 ssh2"
    assert [o.kind for o in pipe.handle(event(message, tag="sshd"), NOW)] == ["counted"]
    outcome = pipe.handle(event(message, tag="sshd"), NOW + 1)[0]
    assert outcome.kind == "banned" and str(outcome.ban.address) == "192.0.2.27"


SAMPLE = [
    "Nov  3 10:20:30 web1 sshd[101]: Failed password for invalid user admin from 192.0.2.30 port 4242 ssh2",
    "Nov  3 10:20:31 web1 sshd[101]: Invalid user guest from 192.0.2.31 port 4243",
    "Nov  3 10:20:32 web1 sshd[102]: Accepted publickey for alice from 198.51.100.1 port 22 ssh2",
    "Nov  3 10:20:33 web1 sshd[103]: Connection closed by 192.0.2.32 port 5000 [preauth]",
    "Nov  3 10:20:34 web1 cron[5]: (root) CMD (true)",
    "Nov  3 10:20:35 web1 sshd[104]: Failed password for root from 192.0.2.33 port 22 ssh2",
    "<38>1 2026-11-03T10:20:36.000+00:00 web1 sshd 105 - - Invalid user oracle from 192.0.2.34 port 1",
    "<38>Nov  3 10:20:37 web1 sshd[106]: Failed password for bob from 192.0.2.35 port 22 ssh2",
    json.dumps({"__REALTIME_TIMESTAMP": "1795529641231004", "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd",
                "SYSLOG_PID": "107", "_SYSTEMD_UNIT": "ssh.service", "_UID": "0",
                "MESSAGE": "Failed password for invalid user test from 192.0.2.36 port 22 ssh2"}),
]


@pytest.mark.parametrize("mode", ["normal", "aggressive"])
def test_test_filter_and_the_daemon_path_give_the_same_verdicts(tmp_path, mode):
    tester = FilterTester(sshlike(tmp_path, mode=mode), now=NOW)
    daemon = sshlike(tmp_path / "daemon", mode=mode)
    for line in SAMPLE:
        verdict = tester.judge(line)
        event = event_from_line(line, NOW)
        assert not isinstance(event, LineError), line
        failure = daemon.match(event)
        assert (str(failure.address) if failure else None) == (str(verdict.address) if verdict.kind == "fail"
                                                               else None), line
    # Another program's syslog line: "other", as for a TOML filter (the daemon never routes it here).
    assert tester.judge(SAMPLE[4]).kind == "other"
    assert tester.judge("Nov  3 10:20:34 web1 sshd[5]: Server listening on 0.0.0.0 port 22.").kind == "miss"


INJECTIONS = [
    ("Failed password for invalid user admin from 198.51.100.7 from 203.0.113.5 port 4242 ssh2", "203.0.113.5"),
    ("Failed password for admin from 198.51.100.7 port 22 ssh2 from 203.0.113.5 port 4242 ssh2", "203.0.113.5"),
    ("Invalid user admin from 198.51.100.7 from 203.0.113.5 port 4242", "203.0.113.5"),
    ("Invalid user admin from 198.51.100.7 port 22 from 203.0.113.5 port 4242", "203.0.113.5"),
]


def _only_the_real_address(flt, message: str, real: str) -> None:
    for verdict in (flt.examine_line(f"Nov  3 10:20:30 web1 sshd[42]: {message}", NOW),
                    flt.examine_event(event(message, tag="sshd"))):
        if verdict.kind == "fail":
            assert verdict.address == ipaddress.ip_address(real), message
        else:
            assert verdict.captures is None or "198.51.100.7" not in verdict.captures.get("host", ""), message


@pytest.mark.parametrize("message, real", INJECTIONS)
def test_an_address_in_the_user_name_is_never_the_one_reported(tmp_path, message, real):
    _only_the_real_address(sshlike(tmp_path), message, real)


@pytest.mark.parametrize("message, real", INJECTIONS)
def test_debians_own_sshd_filter_reports_only_the_address_sshd_wrote(message, real):
    # The recorded version from the corpus cache, never whatever this machine has in /etc/fail2ban.
    if not (CORPUS_FILTERS / "filter.d" / "sshd.conf").is_file():
        pytest.skip("Fail2Ban's corpus is not cached (tests/bench/bench_fail2ban_corpus.py fetches it)")
    for mode in ("normal", "aggressive"):
        _only_the_real_address(load_fail2ban_filter("fail2ban:sshd", CORPUS_FILTERS, mode=mode), message, real)


LOGTYPES = r"""
_daemon = app
__prefix_line = <lt_<logtype>/__prefix_line>
failregex = ^%(__prefix_line)sdenied <HOST>$
logtype = file
[lt_file]
__prefix_line = \s*\S+ %(_daemon)s\[\d+\]:\s+
[lt_journal]
# Journal messages may carry the program's own timestamp.
__prefix_line = %(lt_file/__prefix_line)s(?:\[[^\]]+\]\s+)?
"""


def test_journal_entries_are_matched_with_logtype_journal_as_fail2ban_reads_the_journal(tmp_path):
    flt = definition(tmp_path, LOGTYPES)
    message = "[2026-11-03 10:20:30] denied 192.0.2.50"
    journal = LogEvent(NOW, "journal", message, {"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "app", "_PID": "3"}, True)
    assert said(flt.examine_event(journal)) == "192.0.2.50"
    assert said(flt.examine_event(event(message))) == "miss"  # syslog: logtype file, as Fail2Ban reads a file
    assert said(flt.examine_event(event("denied 192.0.2.51"))) == "192.0.2.51"
    # A logtype given as a parameter applies to every source.
    explicit = definition(tmp_path / "explicit", LOGTYPES, parameters={"logtype": "file"})
    assert said(explicit.examine_event(journal)) == "miss"


# sshd's way (as Debian's filter does it): the program prefix with its pid is the multi-line id,
# a "Connection from" line gives the address and a later line of the same pid is the failure.
SSHD_MLFID = r"""
_daemon = sshd
prefregex = ^<F-MLFID>%(__prefix_line)s</F-MLFID><F-CONTENT>.+</F-CONTENT>$
failregex = ^<F-NOFAIL>Connection from</F-NOFAIL> <HOST> port \d+
            ^Disconnecting: Too many authentication failures$
journalmatch = _SYSTEMD_UNIT=sshd.service _UID=0 + _COMM=sshd
"""


def _sshd_entry(message: str, trusted: bool, at: float) -> LogEvent:
    if trusted:
        fields = {"_SYSTEMD_UNIT": "sshd.service", "_UID": "0", "_COMM": "sshd", "_PID": "4242"}
    else:  # any local user: `exec -a sshd logger --id=4242 ...` gives these
        fields = {"_SYSTEMD_UNIT": "session-3.scope", "_UID": "1000", "_COMM": "sshd", "SYSLOG_PID": "4242",
                  "_PID": "999"}
    return LogEvent(at, "journal", message, {"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd", **fields}, True)


def test_a_forged_entry_cannot_change_the_address_of_a_trusted_multi_line_failure(tmp_path):
    flt = definition(tmp_path, SSHD_MLFID)
    connect = "Connection from {} port 5555 on 10.0.0.1 port 22"
    assert flt.match(_sshd_entry(connect.format("203.0.113.7"), True, NOW)) is None
    # The same host, identifier and pid, written by a user: it must not touch sshd's own state.
    assert flt.match(_sshd_entry(connect.format("198.51.100.9"), False, NOW + 1)) is None
    failure = flt.match(_sshd_entry("Disconnecting: Too many authentication failures", True, NOW + 2))
    assert str(failure.address) == "203.0.113.7" and failure.trusted
    # Nor can the forged writer's own lines complete with what sshd's lines left.
    flt.match(_sshd_entry(connect.format("203.0.113.8"), True, NOW + 3))
    forged = flt.match(_sshd_entry("Disconnecting: Too many authentication failures", False, NOW + 4))
    assert forged is None or (str(forged.address) != "203.0.113.8" and not forged.trusted)


def test_lines_longer_than_max_line_are_not_searched_and_are_counted(tmp_path):
    flt = definition(tmp_path, "failregex = ^%(__prefix_line)sdenied <F-REST>.*</F-REST> from <HOST>$\n")
    padding = "x" * 10_000
    short = flt.examine_event(event(f"denied {padding[:100]} from 192.0.2.60"))
    assert said(short) == "192.0.2.60" and flt.lines_too_long == 0
    # No regex searches 10 KB of a line (some of Fail2Ban's take minutes on 64 KB).
    too_long = flt.examine_event(event(f"denied {padding} from 192.0.2.61"))
    assert too_long.kind == "miss" and f"longer than {MAX_LINE:,} characters" in too_long.detail
    assert said(flt.examine_line(f"Nov  3 10:20:30 web1 app[9]: denied {padding} from 192.0.2.62", NOW)) == "miss"
    assert said(flt.examine(f"denied {padding} from 192.0.2.63")) == "miss"
    assert flt.lines_too_long == 3


def test_an_address_written_at_the_limit_is_never_taken_for_the_real_one(tmp_path):
    # Cutting a long line short would give the regexes an end of line where the attacker chose:
    # "... from FORGED port 22" exactly at the limit, the address the service wrote after it.
    flt = sshlike(tmp_path)
    forged = " from 198.51.100.7 port 22"
    head = "Invalid user "
    fill = MAX_LINE - len(journal_line(event(head, tag="sshd").fields, head)) - len(forged)
    message = head + "A" * fill + forged + " from 203.0.113.5 port 4242"
    verdict = flt.examine_event(event(message, tag="sshd"))
    assert verdict.kind != "fail" or str(verdict.address) == "203.0.113.5"
    assert flt.examine_line(f"Nov  3 10:20:30 web1 sshd[9]: {message}", NOW).address != ipaddress.ip_address(
        "198.51.100.7")


def test_test_filter_reports_how_many_lines_were_too_long(tmp_path):
    flt = definition(tmp_path, "failregex = ^%(__prefix_line)sdenied \\S+ from <HOST>$\n")
    lines = ["Nov  3 10:20:30 web1 app[9]: denied x from 192.0.2.66",
             f"Nov  3 10:20:31 web1 app[9]: denied {'x' * 9000} from 192.0.2.67"]
    summary = FilterTester(flt, now=NOW).run(lines)
    assert summary.matched == 1 and summary.missed == 1 and summary.too_long == 1


# A multi-line filter whose every line leaves a pending failure with a user name in it.
PENDING_USERS = r"""
maxlines = 4
prefregex = ^<F-MLFID>%(__prefix_line)s</F-MLFID><F-CONTENT>.+</F-CONTENT>$
failregex = ^<F-NOFAIL>Invalid user</F-NOFAIL> <F-USER>.+</F-USER> from <HOST>$
            ^auth failed$
"""


def test_multi_line_state_stays_within_its_budget_whatever_the_programs_ids_and_captures(tmp_path):
    flt = definition(tmp_path, PENDING_USERS)
    name = "u" * 3000

    def line(host: int, pid: int, message: str) -> LogEvent:
        return LogEvent(NOW, "syslog", message, {"_HOSTNAME": f"h{host}", "SYSLOG_IDENTIFIER": "app",
                                                 "SYSLOG_PID": str(pid)}, True)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # 6,000 connections of 200 programs, each naming a 3 KB user: 18 MB if all were kept.
        for host in range(200):
            for pid in range(30):
                flt.examine_event(line(host, pid, f"Invalid user {name}{pid} from 192.0.2.{pid}"))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * MAX_STATE_BYTES, f"{held:,} bytes held"
    # What is kept still works: the latest connection's failure gets its address.
    assert said(flt.examine_event(line(199, 29, "auth failed"))) == "192.0.2.29"


def test_maxlines_has_an_upper_bound(tmp_path):
    with pytest.raises(FilterError, match=r"maxlines: must be at most 100, got 5000"):
        definition(tmp_path, "maxlines = 5000\nfailregex = ^x <HOST>$\n")
    assert definition(tmp_path, "maxlines = 100\nfailregex = ^x <HOST>$\n").stateful


@pytest.mark.parametrize("line, address", [
    # murmur's log: a "<W>" before the date, no syslog PRI
    ("<W>2015-11-29 16:38:01.818 1 => <4:test(-1)> Rejected connection from 192.0.2.70:29530: Invalid server "
     "password", "192.0.2.70"),
    # Oracle IMS writes XML elements, one a line
    ('<co ts="2014-06-02T16:06:33.99" sc="tcp_local" tr="TCP|192.245.12.223|25|192.0.2.71|4299" ap="SMTP" '
     'mi="Bad password" us="nic@example.com"/>', "192.0.2.71"),
    ("{broken json} Rejected connection from 192.0.2.72:1: Invalid server password", "192.0.2.72"),
])  # fmt: skip
def test_a_plain_line_that_only_starts_like_an_entry_is_read_as_a_line(tmp_path, line, address):
    flt = definition(tmp_path, r"""
        failregex = Rejected connection from <HOST>:\d+: Invalid server password$
                    tr="TCP\|[^|]+\|\d+\|<HOST>\|\d+" ap="[^"]*" mi="Bad password"
        """)
    tester = FilterTester(flt, now=NOW)
    assert said(tester.judge(line)) == address
    summary = FilterTester(flt, now=NOW).run([line])
    assert summary.errors == 0 and summary.matched == 1
