"""A large file's summary counted in parts by several processes equals one pass over it."""

from __future__ import annotations

import random
import time
from pathlib import Path

from agent.parallel import split, count_file
from agent.testfilter import FilterTester
from parsers.filterfile import find_filter, load_filter

SAMPLES = Path(__file__).parents[1] / "filters" / "sshd.log"
NOW = time.mktime((2026, 11, 25, 12, 0, 0, 0, 0, -1))


def mixed_log(tmp_path: Path, lines: int = 6000) -> Path:
    rng = random.Random(3)
    data = [line for line in SAMPLES.read_text().splitlines() if line]  # comments, JSON, 5424 too
    noise = ["Nov 24 14:00:01 web1 CRON[11]: pam_unix(cron:session): session opened for user root(uid=0)",
             "Nov 24 14:00:02 web1 kernel: [12.5] eth0: link up", "", "sshd: garbage without a header"]
    path = tmp_path / "auth.log"
    path.write_text("\n".join(rng.choice(data + noise) for _ in range(lines)) + "\n")
    return path


def test_ranges_cover_the_file_and_start_at_line_starts(tmp_path) -> None:
    path = mixed_log(tmp_path)
    data = path.read_bytes()
    ranges = split(path, 4, min_bytes=1000)
    assert len(ranges) == 4
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start and data[start - 1:start] == b"\n"


def test_small_files_are_not_split(tmp_path) -> None:
    path = mixed_log(tmp_path, lines=10)
    assert split(path, 8) == [(0, path.stat().st_size)]


def test_summary_in_parts_equals_one_pass(tmp_path) -> None:
    path = mixed_log(tmp_path)
    flt = load_filter(find_filter("sshd"), mode="aggressive")
    with path.open(encoding="utf-8", errors="replace", newline="\n") as stream:
        whole = FilterTester(flt, NOW).run(stream)
    parts = count_file(path, flt, NOW, jobs=3, min_bytes=1000)
    assert parts == whole
    assert whole.matched and whole.missed and whole.other and whole.skipped and whole.errors


def test_progress_is_reported_per_part_and_ends_at_the_whole_file(tmp_path) -> None:
    path = mixed_log(tmp_path)
    flt = load_filter(find_filter("sshd"))
    seen: list[tuple[int, float]] = []
    summary = count_file(path, flt, NOW, jobs=2, min_bytes=1000, progress=lambda n, f: seen.append((n, f)))
    assert len(seen) > 2
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    assert seen[-1] == (summary.lines, 1.0)
