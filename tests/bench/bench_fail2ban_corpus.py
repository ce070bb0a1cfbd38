"""Fail2Ban's own filter test corpus run through jailwarden's Fail2Ban compatibility layer:
per filter, the annotated lines on which jailwarden agrees with Fail2Ban, the times it reads,
and the journal samples run as entries (tests/fail2ban_corpus.py says how).

    .venv/bin/python tests/bench/bench_fail2ban_corpus.py [-v] [--write-expected] [FILTER...]

Writes tests/bench/data/last_fail2ban_corpus.json; --write-expected records the counts as the
floor tests/integration/test_fail2ban_corpus.py holds every filter to.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared corpus code

from fail2ban_corpus import (  # noqa: E402
    EXPECTED,
    ROOT,
    TARGETED,
    CorpusUnavailable,
    corpus_version,
    obtain_corpus,
    run_corpus,
)

REPORT = ROOT / "tests" / "bench" / "data" / "last_fail2ban_corpus.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("filters", nargs="*", help="only these filters")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every line that does not agree")
    parser.add_argument("--write-expected", action="store_true",
                        help=f"record the counts as the regression test's floor, {EXPECTED.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.write_expected and args.filters:
        parser.error("--write-expected records every filter's counts: name no FILTER")
    try:
        root = obtain_corpus()
    except CorpusUnavailable as error:
        print(f"corpus unavailable: {error}", file=sys.stderr)
        return 2
    results = run_corpus(root, args.filters or None)
    total = sum(r.total for r in results)
    agree = sum(r.agree for r in results)
    by_design = sum(r.by_design for r in results)
    print(f"Fail2Ban {corpus_version(root)} filter corpus: {len(results)} filters, {total} annotated line checks")
    print(f"{'filter':<24} {'agree':>7} {'design':>7} {'total':>7}  {'%':>6}  {'time':>9}")
    for r in results:
        mark = " *" if TARGETED.match(r.name) else ""
        percent = 100.0 * r.agreeing / r.total if r.total else 100.0
        times = f"{r.time_agrees}/{r.dated}"
        print(f"{r.name:<24} {r.agree:>7} {r.by_design:>7} {r.total:>7}  {percent:6.1f}  {times:>9}{mark}")
        if r.error:
            print(f"    error: {r.error}")
        if args.verbose:
            for d in r.differences:
                print(f"    {d['outcome']}: {d['file']}:{d['line']} {d['options'] or ''} expected "
                      f"{ {k: v for k, v in d['expected'].items() if k in ('match', 'host')} } got {d['jailwarden']}")
                print(f"        {d['text'][:160]}")
    targeted = [r for r in results if TARGETED.match(r.name)]
    targeted_ok = all(r.agreeing == r.total for r in targeted)
    print(f"{'total':<24} {agree:>7} {by_design:>7} {total:>7}  {100.0 * (agree + by_design) / max(total, 1):6.1f}")
    print(f"strict agreement (by-design differences counted as disagreeing): {100.0 * agree / max(total, 1):.1f}%")
    dated, timed = sum(r.dated for r in results), sum(r.time_agrees for r in results)
    print(f"times read from matching lines equal to the annotated ones: {timed}/{dated}")
    entries, same = sum(r.journal for r in results), sum(r.journal_same for r in results)
    print(f"journal samples whose verdict as an entry equals the one as a line: {same}/{entries}")
    print(f"targeted families (*): {'all lines agree' if targeted_ok else 'NOT all lines agree'}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "fail2ban": corpus_version(root), "checks": total, "agree": agree, "by_design": by_design,
        "percent": round(100.0 * (agree + by_design) / max(total, 1), 2),
        "percent_strict": round(100.0 * agree / max(total, 1), 2), "targeted_all_agree": targeted_ok,
        "times": {"compared": dated, "equal": timed}, "journal_entries": {"run": entries, "same": same},
        "filters": {r.name: {"total": r.total, "agree": r.agree, "by_design": r.by_design, "error": r.error,
                             "times_compared": r.dated, "times_equal": r.time_agrees,
                             "journal_entries": r.journal, "journal_same": r.journal_same,
                             "differences": r.differences} for r in results},
    }, indent=1) + "\n")
    print(f"report: {REPORT.relative_to(ROOT)}")
    if args.write_expected:
        rows = ",\n".join(f"  {json.dumps(r.name)}: [{r.agree}, {r.by_design}, {r.total}]" for r in results)
        EXPECTED.write_text(f'{{"fail2ban": {json.dumps(corpus_version(root))}, "columns": ["agree", "by_design", '
                            f'"total"],\n "times": [{dated}, {timed}],\n "filters": {{\n{rows}\n }}\n}}\n')
        print(f"expected counts: {EXPECTED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
