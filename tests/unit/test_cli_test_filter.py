"""`jailwarden test-filter`: what a user reads from it (JSON stream, summary, verdict lines, errors)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from agent.cli import main

SAMPLE_LOG = Path(__file__).parent.parent / "filters" / "sshd.log"
JAILWARDEN = Path(sys.executable).parent / "jailwarden"

# Real lines from tests/filters/sshd.log.
FAILED_ROOT = ("Nov 24 14:00:01 web1 sshd[20101]: Failed password for root "
               "from 203.0.113.5 port 52231 ssh2")
RFC5424_INVALID = ("<38>1 2026-11-24T14:13:01.101010+00:00 web1 sshd 22001 - - "
                   "Failed password for invalid user admin from 203.0.113.57 port 51000 ssh2")
ACCEPTED = ("Nov 24 14:09:01 web1 sshd[20190]: Accepted password for alice "
            "from 198.51.100.23 port 50416 ssh2")
CRON_FAILURE = "Nov 24 14:11:01 web1 CRON[1]: Failed password for root from 203.0.113.9 port 1 ssh2"
PREAUTH_CLOSE = "Nov 24 14:07:01 web1 sshd[20150]: Connection closed by 203.0.113.29 port 43210 [preauth]"


def journal_line(message: str, **fields: str) -> str:
    """One `journalctl -o json` line as journald writes it for a syslog-transport message."""
    entry = {"__REALTIME_TIMESTAMP": "1795529641231004", "_TRANSPORT": "syslog", "PRIORITY": "6",
             "SYSLOG_FACILITY": "4", "SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "23001",
             "MESSAGE": message, "_PID": "23001", "_UID": "0", "_HOSTNAME": "web1", **fields}
    return json.dumps(entry)


JOURNAL_FAILED = journal_line("Failed password for root from 203.0.113.61 port 40110 ssh2",
                              _COMM="sshd", _EXE="/usr/sbin/sshd", _SYSTEMD_UNIT="ssh.service")


def write_log(tmp_path: Path, lines: list[str], name: str = "test.log") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["test-filter", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> list[dict]:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def sample_data_lines() -> list[str]:
    text = SAMPLE_LOG.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


SUMMARY_LINES = re.compile(
    r"^lines +([\d,]+) read: ([\d,]+) matched, ([\d,]+) ignored, ([\d,]+) missed, "
    r"([\d,]+) from other programs, ([\d,]+) blank or comment, ([\d,]+) unparsable$", re.M)


def parse_summary(out: str) -> dict:
    """The numbers of the plain summary: counts, distinct addresses and the per-address list."""
    m = SUMMARY_LINES.search(out)
    assert m, out
    numbers = [int(n.replace(",", "")) for n in m.groups()]
    keys = ["lines", "matched", "ignored", "missed", "other", "skipped", "errors"]
    summary = dict(zip(keys, numbers, strict=True))
    after = out[out.index("\naddresses ") + 1:].splitlines()[1:]
    distinct = re.search(r"^addresses +([\d,]+) distinct;", out, re.M)
    summary["distinct"] = int(distinct.group(1).replace(",", ""))
    listed = {}
    for line in after:
        if line.startswith("time "):
            break
        if line.lstrip().startswith("..."):
            continue
        address, count, _counted = line.split()
        listed[address] = int(count.replace(",", ""))
    summary["addresses"] = listed
    return summary


# ---- --json ----

def test_json_lineno_counts_blank_and_comment_lines_across_mixed_formats(tmp_path, capsys):
    log = write_log(tmp_path, [
        "# a log put together by hand",         # 1
        "",                                      # 2
        FAILED_ROOT,                             # 3
        "# between data lines",                  # 4
        RFC5424_INVALID,                         # 5
        "",                                      # 6
        "   ",                                   # 7
        JOURNAL_FAILED,                          # 8
        CRON_FAILURE,                            # 9
        ACCEPTED,                                # 10
        '{"MESSAGE": "Failed password for root',  # 11: cut off
        "<999>1 - web1 sshd - - - x",             # 12: PRI out of range
    ])
    records = run_json(capsys, "sshd", str(log))
    got = [(r["lineno"], r["match"], r["host"], r["verdict"]) for r in records]
    assert got == [
        (3, True, "203.0.113.5", "fail"),
        (5, True, "203.0.113.57", "fail"),
        (8, True, "203.0.113.61", "fail"),
        (9, False, None, "other"),
        (10, False, None, "miss"),
        (11, False, None, "error"),
        (12, False, None, "error"),
    ]
    assert all(r["filter"] == "sshd" for r in records)


def test_json_match_carries_captured_user(tmp_path, capsys):
    log = write_log(tmp_path, [FAILED_ROOT, RFC5424_INVALID, JOURNAL_FAILED, ACCEPTED])
    records = run_json(capsys, "sshd", str(log))
    assert [r.get("captures") for r in records] == [
        {"user": "root"}, {"user": "admin"}, {"user": "root"}, None]


def test_json_unparsable_line_says_why(tmp_path, capsys):
    log = write_log(tmp_path, ["{not json", "<999>1 - web1 sshd - - - x"])
    records = run_json(capsys, "sshd", str(log))
    assert [r["verdict"] for r in records] == ["error", "error"]
    assert "JSON" in records[0]["reason"]
    assert "PRI" in records[1]["reason"]


def test_json_names_the_filter_file_stem(tmp_path, capsys):
    filter_file = tmp_path / "myapp.toml"
    filter_file.write_text("syslog = ['myapp']\nfailregex = ['bad login from <HOST>$']\n")
    log = write_log(tmp_path, ["Nov 24 14:00:01 web1 myapp[7]: bad login from 192.0.2.44"])
    records = run_json(capsys, str(filter_file), str(log))
    assert records == [{"lineno": 1, "match": True, "host": "192.0.2.44", "filter": "myapp",
                        "verdict": "fail"}]


def test_json_reports_ipv4_mapped_address_as_ipv4(tmp_path, capsys):
    log = write_log(tmp_path, ["Nov 24 14:04:04 web1 sshd[20142]: Failed password for root "
                               "from ::ffff:203.0.113.24 port 52011 ssh2"])
    (record,) = run_json(capsys, "sshd", str(log))
    assert record["host"] == "203.0.113.24"


def test_json_lineno_counts_newlines_only(tmp_path, capsys):
    # A bare CR is part of its line: it neither shifts lineno nor makes the text after it
    # a line of its own.
    log = tmp_path / "cr.log"
    log.write_bytes(
        b"Nov 24 14:00:01 web1 sshd[1]: Failed password for invalid user x\r"
        b"Nov 24 14:00:01 web1 sshd[2]: Failed password for root from 192.0.2.1 port 22 ssh2"
        b" from 203.0.113.5 port 4000 ssh2\n"
        + FAILED_ROOT.encode() + b"\n")
    records = run_json(capsys, "sshd", str(log))
    assert [r["lineno"] for r in records] == [1, 2]


# ---- FILE as - (standard input) ----

def test_stdin_gives_the_same_verdicts_as_the_file(tmp_path, capsys, monkeypatch):
    log = write_log(tmp_path, ["# header", FAILED_ROOT, "", CRON_FAILURE, JOURNAL_FAILED])
    from_file = run_json(capsys, "sshd", str(log))
    with open(log, encoding="utf-8") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        from_stdin = run_json(capsys, "sshd", "-")
    assert from_stdin == from_file
    assert [r["lineno"] for r in from_stdin] == [2, 4, 5]


# ---- plain output ----

DEMO_FILTER = """\
syslog = ["demo"]
failregex = ['login failed for (?P<user>\\S+) from <HOST>$']
ignoreregex = ['.* from 198\\.51\\.100\\.']  # anchored at the start, like failregex

[journal]
_SYSTEMD_UNIT = ["demo.service"]
"""

DEMO_LOG = [
    "# demo",                                                                    # skip
    "",                                                                          # skip
    "Nov 24 14:00:01 web1 demo[1]: login failed for root from 203.0.113.5",      # fail
    "Nov 24 14:00:02 web1 demo[1]: login failed for bob from 203.0.113.5",       # fail
    "Nov 24 14:00:03 web1 demo[1]: login failed for eve from 198.51.100.7",      # ignored
    "Nov 24 14:00:04 web1 demo[1]: login ok for root from 203.0.113.5",          # miss
    "Nov 24 14:00:05 web1 CRON[2]: login failed for root from 203.0.113.9",      # other
    "Nov 24 14:00:06 web1 cron[3]: demo: login failed for root from 203.0.113.9",  # other
    "demo said something that is not a syslog line",                             # error
    "<38>1 2026-11-24T14:13:01+00:00 web1 demo 22 - - login failed for root from 2001:db8::1",  # fail
    json.dumps({"MESSAGE": "login failed for a from 203.0.113.6", "_SYSTEMD_UNIT": "demo.service"}),  # fail
]


def demo(tmp_path: Path) -> tuple[Path, Path]:
    filter_file = tmp_path / "demo.toml"
    filter_file.write_text(DEMO_FILTER)
    return filter_file, write_log(tmp_path, DEMO_LOG)


def test_summary_counts_each_kind_of_line(tmp_path, capsys):
    filter_file, log = demo(tmp_path)
    code, out, _ = run(capsys, str(filter_file), str(log))
    assert code == 0
    summary = parse_summary(out)
    assert {k: v for k, v in summary.items() if k not in ("distinct", "addresses")} == {
        "lines": 11, "matched": 4, "ignored": 1, "missed": 1, "other": 2, "skipped": 2, "errors": 1}
    assert summary["distinct"] == 3
    assert summary["addresses"] == {"203.0.113.5": 2, "2001:db8::1": 1, "203.0.113.6": 1}


def test_summary_names_filter_mode_and_file_and_reports_speed(tmp_path, capsys):
    filter_file, log = demo(tmp_path)
    _, out, _ = run(capsys, str(filter_file), str(log))
    first = out.splitlines()[0]
    assert first.startswith("filter ") and "demo" in first and "(mode normal)" in first
    assert str(filter_file) in first
    assert re.search(r"^time +\d+\.\d{3} s, [\d,]+ lines/s$", out, re.M), out


def test_summary_thousands_are_grouped(tmp_path, capsys):
    log = write_log(tmp_path, [FAILED_ROOT] * 1234)
    _, out, _ = run(capsys, "sshd", str(log))
    assert "1,234 read: 1,234 matched" in out
    assert re.search(r"^ +203\.0\.113\.5 +1,234 +1,234$", out, re.M)


def test_summary_lists_top_addresses_and_verbose_lists_all(tmp_path, capsys):
    lines = [f"Nov 24 14:00:01 web1 sshd[1]: Invalid user u from 203.0.113.{i} port 4000"
             for i in range(1, 26)]
    log = write_log(tmp_path, lines + lines[:1])
    _, out, _ = run(capsys, "sshd", str(log))
    assert "25 distinct" in out
    assert re.search(r"^ +203\.0\.113\.1 +2 +2$", out, re.M)  # most frequent first
    assert "... 5 more (-v lists all)" in out
    assert "203.0.113.25 " not in out
    _, verbose, _ = run(capsys, "sshd", str(log), "-v")
    assert len(parse_summary(verbose)["addresses"]) == 25
    assert "more (-v lists all)" not in verbose


def test_verbose_prints_one_verdict_line_per_data_line(tmp_path, capsys):
    filter_file, log = demo(tmp_path)
    _, out, _ = run(capsys, str(filter_file), str(log), "-v")
    verdict_lines = [line for line in out.splitlines()
                     if re.match(r"^ *\d+ (FAIL|IGNORED|MISS|OTHER|ERROR) ", line)]
    got = [(int(line.split()[0]), line.split()[1]) for line in verdict_lines]
    assert got == [(3, "FAIL"), (4, "FAIL"), (5, "IGNORED"), (6, "MISS"), (7, "OTHER"),
                   (8, "OTHER"), (9, "ERROR"), (10, "FAIL"), (11, "FAIL")]
    assert "203.0.113.5 user=root" in verdict_lines[0]
    assert verdict_lines[0].endswith("| " + DEMO_LOG[2])
    assert parse_summary(out)["matched"] == 4


def test_summary_is_not_printed_with_json(tmp_path, capsys):
    filter_file, log = demo(tmp_path)
    _, out, _ = run(capsys, str(filter_file), str(log), "--json")
    assert all(line.startswith("{") for line in out.splitlines())


def test_summary_agrees_with_json_stream(tmp_path, capsys):
    data = sample_data_lines()
    noise = [
        "Nov 24 14:11:05 web1 systemd[1]: Started session 4 of user alice.",
        "Nov 24 14:11:06 web1 CRON[4242]: (root) CMD (test -x /usr/sbin/anacron)",
        "Nov 24 14:11:07 web1 kernel: [UFW BLOCK] IN=eth0 SRC=203.0.113.9 DST=198.51.100.10",
        "Nov 24 14:11:08 web1 postfix/smtpd[99]: connect from unknown[203.0.113.9] (sshd?)",
        "<86>1 2026-11-24T14:13:07+00:00 web1 sudo - - - pam_unix(sudo:session): session opened",
        json.dumps({"MESSAGE": "Failed password for root from 203.0.113.1 port 1 ssh2",
                    "SYSLOG_IDENTIFIER": "sshd", "_COMM": "python3", "_EXE": "/usr/bin/python3"}),
        "sshd: a line that is no syslog line",
        "",
        "# a comment",
    ]
    lines = []
    for round_ in range(15):
        for i, line in enumerate(data):
            lines.append(line)
            if i % 3 == round_ % 3:
                lines.append(noise[(i + round_) % len(noise)])
    assert 3000 < len(lines) < 5000
    log = write_log(tmp_path, lines)
    for mode in ("normal", "aggressive"):
        records = run_json(capsys, "sshd", str(log), "--mode", mode)
        code, out, _ = run(capsys, "sshd", str(log), "--mode", mode, "-v")
        assert code == 0
        summary = parse_summary(out)
        verdicts = Counter(r["verdict"] for r in records)
        assert summary["lines"] == len(lines)
        assert summary["matched"] == verdicts["fail"] == sum(r["match"] for r in records)
        assert summary["ignored"] == verdicts["ignored"]
        assert summary["missed"] == verdicts["miss"]
        assert summary["other"] == verdicts["other"]
        assert summary["errors"] == verdicts["error"]
        assert summary["skipped"] == len(lines) - len(records)
        hosts = Counter(r["host"] for r in records if r["match"])
        assert summary["addresses"] == dict(hosts)
        assert summary["distinct"] == len(hosts)
        assert verdicts["other"] > 0 and verdicts["error"] > 0 and verdicts["miss"] > 0


# ---- modes ----

def test_aggressive_mode_matches_preauth_disconnect_that_normal_mode_misses(tmp_path, capsys):
    log = write_log(tmp_path, [PREAUTH_CLOSE])
    (normal,) = run_json(capsys, "sshd", str(log))
    (aggressive,) = run_json(capsys, "sshd", str(log), "--mode", "aggressive")
    assert (normal["match"], normal["verdict"]) == (False, "miss")
    assert (aggressive["match"], aggressive["host"]) == (True, "203.0.113.29")
    _, out, _ = run(capsys, "sshd", str(log), "--mode", "aggressive")
    assert "(mode aggressive)" in out


def test_unknown_mode_exits_2_listing_the_modes(tmp_path, capsys):
    log = write_log(tmp_path, [FAILED_ROOT])
    code, out, err = run(capsys, "sshd", str(log), "--mode", "paranoid")
    assert code == 2
    assert out == ""
    assert "paranoid" in err and "normal" in err and "aggressive" in err


# ---- errors ----

def test_unknown_filter_name_exits_2_naming_shipped_filters(tmp_path, capsys):
    log = write_log(tmp_path, [FAILED_ROOT])
    code, out, err = run(capsys, "sshdd", str(log))
    assert code == 2
    assert out == ""
    assert "sshdd" in err
    assert re.search(r"shipped: [^)]*\bsshd\b", err), err


def test_missing_log_file_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no" / "auth.log"
    code, out, err = run(capsys, "sshd", str(missing))
    assert code == 2
    assert out == ""
    assert str(missing) in err
    assert "No such file" in err


def test_filter_regex_that_does_not_compile_exits_2_naming_file_and_index(tmp_path, capsys):
    filter_file = tmp_path / "broken.toml"
    filter_file.write_text("syslog = ['app']\n"
                           "failregex = ['ok from <HOST>$', 'bad (unclosed from <HOST>$']\n")
    log = write_log(tmp_path, [FAILED_ROOT])
    code, out, err = run(capsys, str(filter_file), str(log))
    assert code == 2
    assert out == ""
    assert str(filter_file) in err
    assert "failregex[1]" in err
    assert "Traceback" not in err


def test_missing_filter_file_exits_2_naming_it(tmp_path, capsys):
    log = write_log(tmp_path, [FAILED_ROOT])
    code, _, err = run(capsys, str(tmp_path / "nope.toml"), str(log))
    assert code == 2
    assert "nope.toml" in err


# ---- identity ----

def test_sshd_failure_under_another_tag_does_not_match(tmp_path, capsys):
    log = write_log(tmp_path, [
        CRON_FAILURE,
        # Contains "sshd", so it is parsed rather than skipped by the tag probe.
        "Nov 24 14:11:01 web1 CRON[1]: sshd: Failed password for root from 203.0.113.9 port 1 ssh2",
        "Nov 24 14:11:01 web1 notsshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2",
    ])
    records = run_json(capsys, "sshd", str(log))
    assert [(r["match"], r["verdict"]) for r in records] == [(False, "other")] * 3


def test_journal_entry_with_forged_identifier_does_not_match(tmp_path, capsys):
    forged = journal_line("Failed password for root from 203.0.113.65 port 4000 ssh2",
                          _COMM="python3", _UID="1000")
    log = write_log(tmp_path, [forged])
    (record,) = run_json(capsys, "sshd", str(log))
    assert (record["match"], record["host"], record["verdict"]) == (False, None, "other")


def test_journal_entry_from_sshd_executable_matches(tmp_path, capsys):
    real = journal_line("Failed password for root from 203.0.113.65 port 4000 ssh2",
                        _COMM="python3", _EXE="/usr/sbin/sshd")
    log = write_log(tmp_path, [real])
    (record,) = run_json(capsys, "sshd", str(log))
    assert (record["match"], record["host"]) == (True, "203.0.113.65")


def test_journal_line_with_bad_timestamp_does_not_crash(tmp_path, capsys):
    line = journal_line("Failed password for root from 203.0.113.65 port 4000 ssh2",
                        _EXE="/usr/sbin/sshd", __REALTIME_TIMESTAMP="\u00b2")
    log = write_log(tmp_path, [line, FAILED_ROOT])
    records = run_json(capsys, "sshd", str(log))
    assert [r["lineno"] for r in records] == [1, 2]


# ---- piping ----

@pytest.mark.parametrize("output", ["--json", "-v"])
def test_output_into_closed_pipe_exits_0_without_traceback(tmp_path, output):
    line = FAILED_ROOT + "\n"
    log = tmp_path / "big.log"
    log.write_text(line * 200_000, encoding="utf-8")
    proc = subprocess.Popen([str(JAILWARDEN), "test-filter", "sshd", str(log), output],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # what `| head -1` does
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.strip()
    assert "Traceback" not in err, err
    assert "BrokenPipe" not in err, err
    assert code == 0


def test_summary_counts_repeated_messages_and_uncounted_lines_per_address(tmp_path, capsys):
    log = write_log(tmp_path, [
        "Nov 24 14:00:01 web1 sshd[1]: message repeated 3 times: "
        "[ Failed password for root from 203.0.113.9 port 1 ssh2]",
        "Nov 24 14:00:02 web1 sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=ssh ruser= rhost=203.0.113.9  user=root",
        "Nov 24 14:00:03 web1 sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2",
    ])
    _, out, _ = run(capsys, "sshd", str(log))
    assert "3 read: 3 matched" in out
    assert "1 of the matched lines do not count" in out
    assert re.search(r"^ +203\.0\.113\.9 +3 +4$", out, re.M), out


def test_json_marks_repeated_and_uncounted_matches(tmp_path, capsys):
    log = write_log(tmp_path, [
        "Nov 24 14:00:01 web1 sshd[1]: message repeated 3 times: "
        "[ Failed password for root from 203.0.113.9 port 1 ssh2]",
        "Nov 24 14:00:02 web1 sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=ssh ruser= rhost=203.0.113.9  user=root",
    ])
    repeated, evidence = run_json(capsys, "sshd", str(log))
    assert repeated["repeat"] == 3 and "counted" not in repeated
    assert evidence["counted"] is False and "repeat" not in evidence
    _, verbose, _ = run(capsys, "sshd", str(log), "-v")
    assert "(x3)" in verbose and "(not counted)" in verbose
