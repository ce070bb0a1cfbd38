"""Fail2Ban's own filter corpus (Debian's fail2ban package: filter.d and the annotated sample
logs) through jailwarden's compatibility layer: no filter may agree with Fail2Ban on fewer
lines than recorded in fail2ban_corpus_expected.json, every time read from a matching line
must be the annotated one, and every journal sample must get the same verdict as an entry.

The recorded version of the package is fetched once with `apt-get download` and unpacked into
tests/.cache/fail2ban/ (nothing is installed); without apt, network or that version, or with
another version in the cache, the test is skipped with the reason. The shared code is in
tests/fail2ban_corpus.py. To record new counts after an improvement:
tests/bench/bench_fail2ban_corpus.py --write-expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import fail2ban_corpus
import pytest
from fail2ban_corpus import (
    CACHE,
    TARGETED,
    CorpusUnavailable,
    FilterResult,
    corpus_version,
    obtain_corpus,
    recorded,
    run_corpus,
)

RECORDED = recorded()


def _skip(reason: str) -> None:
    print(f"skipping: {reason}")
    pytest.skip(reason)


def available_corpus(cache: Path = CACHE) -> Path:
    """The corpus of the recorded version; skips the test, saying why, when there is none."""
    try:
        root = obtain_corpus(cache, version=RECORDED["fail2ban"])
    except CorpusUnavailable as error:
        _skip(f"Fail2Ban's corpus is unavailable: {error}")
    found = corpus_version(root)
    if found != RECORDED["fail2ban"]:
        _skip(f"the cached corpus is Fail2Ban {found}, the counts are recorded for {RECORDED['fail2ban']} "
              f"(remove {root.parent} to fetch it, or record counts for {found} with --write-expected)")
    return root


@pytest.fixture(scope="module")
def results() -> dict[str, FilterResult]:
    return {result.name: result for result in run_corpus(available_corpus())}


def test_the_corpus_has_every_recorded_filter(results):
    # Same version, so a filter missing means the corpus was read wrong, not that it changed.
    assert sorted(set(RECORDED["filters"]) - set(results)) == []


@pytest.mark.parametrize("name", sorted(RECORDED["filters"]))
def test_filter_agrees_with_fail2ban_on_at_least_the_recorded_lines(results, name):
    agree, by_design, _total = RECORDED["filters"][name]
    result = results.get(name)
    assert result is not None, f"the corpus of Fail2Ban {RECORDED['fail2ban']} has no filter {name}"
    listing = "\n".join(f"  {d['file']}:{d['line']} {d['options'] or ''}: expected {d['expected']}, "
                        f"jailwarden {d['jailwarden']}\n    {d['text']}" for d in result.differences)
    assert result.error is None, result.error
    assert result.agree >= agree, f"{name}: {result.agree} lines agree, {agree} recorded\n{listing}"
    assert result.agreeing >= agree + by_design, f"{name}: {result.agreeing} lines agree or differ by design, " \
                                                 f"{agree + by_design} recorded\n{listing}"


def test_the_targeted_families_agree_on_every_line(results):
    short = {name: f"{r.agreeing}/{r.total}" for name, r in results.items()
             if TARGETED.match(name) and r.agreeing != r.total}
    assert not short, short


def test_every_time_read_from_a_matching_line_is_the_annotated_one(results):
    compared, _equal = RECORDED["times"]
    wrong = {name: f"{r.time_agrees}/{r.dated}" for name, r in results.items() if r.time_agrees != r.dated}
    assert not wrong, wrong
    assert sum(r.dated for r in results.values()) >= compared


def test_journal_samples_get_the_same_verdict_as_journal_entries(results):
    differ = [f"{name} {d['file']}:{d['line']}: {d['jailwarden']}" for name, r in results.items()
              for d in r.differences if d["outcome"] == "journal entry"]
    assert not differ, "\n".join(differ)
    assert sum(r.journal for r in results.values()) > 0


FAKE_TOOLS = {
    "missing version": ("echo \"E: Version '$2' for 'fail2ban' was not found\" >&2; exit 100", "exit 0"),
    "broken package": ("echo garbage > fail2ban_1.0.2-2_all.deb", "echo 'not a debian archive' >&2; exit 2"),
    "hanging download": ("exec sleep 60", "exit 0"),
}


@pytest.mark.parametrize("case", sorted(FAKE_TOOLS))
def test_a_failed_fetch_skips_with_the_reason(tmp_path, monkeypatch, capsys, case):
    apt, dpkg = FAKE_TOOLS[case]
    for name, body in (("apt-get", apt), ("dpkg-deb", dpkg)):
        tool = tmp_path / "bin" / name
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(fail2ban_corpus, "DOWNLOAD_SECONDS", 0.5)
    with pytest.raises(pytest.skip.Exception, match="Fail2Ban's corpus is unavailable: "):
        available_corpus(tmp_path / "cache")
    said = capsys.readouterr().out
    assert {"missing version": "fail2ban=1.0.2-2 failed: E: Version", "broken package": "not a debian archive",
            "hanging download": "took more than 0.5 s"}[case] in said


def test_an_unwritable_cache_skips_with_the_reason(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    with pytest.raises(pytest.skip.Exception, match="cannot fetch or unpack the package"):
        available_corpus(tmp_path / "cache")


def test_a_cached_corpus_of_another_version_skips_with_the_reason(tmp_path):
    root = tmp_path / "cache" / "root"
    for part in (fail2ban_corpus.FILTERS, fail2ban_corpus.LOGS):
        (root / part).mkdir(parents=True)
    (root / "VERSION").write_text("1.1.0-1_all\n")
    with pytest.raises(pytest.skip.Exception, match=f"is Fail2Ban 1.1.0-1, the counts are recorded for "
                                                    f"{RECORDED['fail2ban']}"):
        available_corpus(tmp_path / "cache")
