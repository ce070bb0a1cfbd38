"""Fail2Ban's own filter corpus (Debian's fail2ban package: filter.d and the annotated sample
logs) through jailwarden's compatibility layer: no filter may agree with Fail2Ban on fewer
lines than recorded in fail2ban_corpus_expected.json.

The package is fetched once with `apt-get download` and unpacked into tests/.cache/fail2ban/
(nothing is installed); without apt or network the test is skipped with the reason. To
record new counts after an improvement: tests/bench/bench_fail2ban_corpus.py --write-expected.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import bench_fail2ban_corpus as corpus  # noqa: E402 - beside the benchmark that shares it

EXPECTED = Path(__file__).with_name("fail2ban_corpus_expected.json")


@pytest.fixture(scope="module")
def results() -> dict[str, corpus.FilterResult]:
    try:
        root = corpus.obtain_corpus()
    except corpus.CorpusUnavailable as error:
        print(f"skipping: {error}")
        pytest.skip(f"Fail2Ban's corpus is unavailable: {error}")
    return {result.name: result for result in corpus.run_corpus(root)}


def expected_counts() -> dict[str, list[int]]:
    return json.loads(EXPECTED.read_text())["filters"]


@pytest.mark.parametrize("name", sorted(expected_counts()))
def test_filter_agrees_with_fail2ban_on_at_least_the_recorded_lines(results, name):
    agree, by_design, total = expected_counts()[name]
    result = results.get(name)
    if result is None:
        pytest.skip(f"the corpus has no filter {name} any more")
    listing = "\n".join(f"  {d['file']}:{d['line']} {d['options'] or ''}: expected {d['expected']}, "
                        f"jailwarden {d['jailwarden']}\n    {d['text']}" for d in result.differences)
    assert result.error is None, result.error
    assert result.agree >= agree, f"{name}: {result.agree} lines agree, {agree} recorded\n{listing}"
    assert result.agreeing >= agree + by_design, f"{name}: {result.agreeing} lines agree or differ by design, " \
                                                 f"{agree + by_design} recorded\n{listing}"


def test_the_targeted_families_agree_on_every_line(results):
    short = {name: f"{r.agreeing}/{r.total}" for name, r in results.items()
             if corpus.TARGETED.match(name) and r.agreeing != r.total}
    assert not short, short
