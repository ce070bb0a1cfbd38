"""The one-regex file-line matcher gives exactly the verdicts of parse-then-examine."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from parsers.fileline import OTHER, FileLineMatcher
from parsers.filter import Filter, Verdict
from parsers.filterfile import filter_from_dict, find_filter, load_filter, modes_of
from parsers.syslog import SyslogError, file_line_tag_and_message

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import gen_authlog  # noqa: E402  (the benchmark's generator: realistic auth.log traffic)


def reference(flt: Filter, line: str):
    parsed = file_line_tag_and_message(line)
    if isinstance(parsed, SyslogError):
        return Verdict("error", detail=parsed.reason)
    tag, message = parsed
    if tag not in flt.syslog:
        return OTHER
    return flt.examine(message)


def sample_lines() -> list[str]:
    lines = []
    for line in (ROOT / "tests" / "filters" / "sshd.log").read_text().splitlines():
        if line and not line.startswith(("#", "{", "<")):
            lines.append(line + "\n")
    return lines


def variants(lines: list[str], rng: random.Random) -> list[str]:
    """The sample lines bent the ways real files and attackers bend them."""
    out = []
    for line in lines:
        head, sep, message = line.partition(": ")
        out += [
            line.rstrip("\n") + "\r\n",
            line.rstrip("\n"),
            line.replace("sshd[", "sshd2[", 1),
            line.replace("sshd[", "xsshd[", 1),
            line.replace("sshd[", "sshd:[", 1),
            line.replace("]: ", "] ", 1),
            line.replace("]: ", "]:", 1),
            line.replace(" web1 ", " ", 1),
            line.replace("Failed", "Fai\x00led", 1),
            f"{head}{sep}message repeated 3 times: [ {message.rstrip()}]\n" if sep else line,
            f"{head}{sep}^{message}" if sep else line,
        ]
        cut = rng.randrange(len(line))
        out.append(line[:cut] + "\n")
    return out


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(11)
    samples = sample_lines()
    generated = list(gen_authlog.generate(30_000, 5))
    return samples + variants(samples, rng) + generated


@pytest.mark.parametrize("mode", modes_of(find_filter("sshd")))
def test_one_regex_verdicts_equal_parse_then_examine_for_sshd(corpus, mode) -> None:
    flt = load_filter(find_filter("sshd"), mode=mode)
    matcher = FileLineMatcher(flt)
    kinds = set()
    for line in corpus:
        expected = reference(flt, line)
        assert matcher.verdict(line) == expected, repr(line)
        kinds.add(expected.kind)
    assert kinds == {"fail", "miss", "other", "error"}


def test_filter_with_ignoreregex_and_leading_caret_agrees_too() -> None:
    flt = filter_from_dict({"syslog": ["app", "app-x"], "failregex": ["^bad (?P<user>\\S+) from <HOST>$"],
                            "ignoreregex": ["bad backup "]}, file="t", name="t")
    matcher = FileLineMatcher(flt)
    lines = [
        "Nov 24 14:00:01 h app[1]: bad root from 203.0.113.5\n",
        "Nov 24 14:00:01 h app-x: bad root from 203.0.113.5\n",
        "Nov 24 14:00:01 h app[1]: bad backup from 203.0.113.5\n",
        "Nov 24 14:00:01 h app[1]: bad root from 999.0.113.5\n",
        "Nov 24 14:00:01 h app-y[1]: bad root from 203.0.113.5\n",
        "Nov 24 14:00:01 h app[1]: good root from 203.0.113.5\n",
    ]
    verdicts = [matcher.verdict(line) for line in lines]
    assert verdicts == [reference(flt, line) for line in lines]
    assert [v.kind for v in verdicts] == ["fail", "fail", "ignored", "miss", "other", "miss"]


def test_journal_only_filter_never_matches_a_file_line() -> None:
    flt = filter_from_dict({"journal": {"_EXE": ["/usr/sbin/app"]}, "failregex": ["bad <HOST>$"]},
                           file="t", name="t")
    assert FileLineMatcher(flt).verdict("Nov 24 14:00:01 h app[1]: bad 203.0.113.5\n") is OTHER
