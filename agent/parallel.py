"""test-filter's summary of a large file, counted by several processes at once.

Each process reads one byte range of the file, split at line ends, with its own
`FilterTester`; the summaries add up. Only for summaries: per-line output (-v, --json)
needs the lines in order and stays in one process.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from pathlib import Path
from typing import Callable

from agent.testfilter import FilterTester, Summary
from parsers.filter import Filter

# Below this much of the file per process, starting processes costs more than it saves.
MIN_BYTES_PER_JOB = 8 << 20
_READ_BUFFER = 1 << 20
# Parts per process when progress is shown: each finished part is a progress step.
_PARTS_PER_JOB = 8


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def split(path: Path, jobs: int, min_bytes: int = MIN_BYTES_PER_JOB) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering the file, each starting at a line start, at most
    `jobs` of them and none (but the last) shorter than about `min_bytes`."""
    size = path.stat().st_size
    jobs = max(1, min(jobs, size // min_bytes))
    bounds = [0]
    with path.open("rb") as f:
        for k in range(1, jobs):
            f.seek(size * k // jobs)
            f.readline()  # on to the start of the next line
            if bounds[-1] < f.tell() < size:
                bounds.append(f.tell())
    bounds.append(size)
    return list(zip(bounds, bounds[1:], strict=False))


class _Range(io.RawIOBase):
    """Bytes [start, end) of a file as a stream that ends at `end`."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__()
        self._file = path.open("rb", buffering=0)
        self._file.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            return 0
        count = self._file.readinto(memoryview(buffer)[: self._left])
        self._left -= count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def count_range(path: Path, start: int, end: int, filter: Filter, now: float) -> Summary:
    """The summary of the lines in bytes [start, end) of `path`."""
    raw = io.BufferedReader(_Range(path, start, end), _READ_BUFFER)
    with io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n") as stream:
        return FilterTester(filter, now).run(stream)


_job: tuple[Path, Filter, float] | None = None


def _start_job(path: Path, filter: Filter, now: float) -> None:
    global _job
    _job = (path, filter, now)


def _count_job(byte_range: tuple[int, int]) -> tuple[tuple[int, int], Summary]:
    path, filter, now = _job
    return byte_range, count_range(path, *byte_range, filter, now)


def count_file(path: Path, filter: Filter, now: float, jobs: int, min_bytes: int = MIN_BYTES_PER_JOB,
               progress: Callable[[int, float], None] | None = None) -> Summary:
    """The summary of a whole file, counted by up to `jobs` processes.

    With `progress`, the file is cut into more, smaller parts than processes, and
    progress(lines, fraction) is called as each part is done.
    """
    parts = split(path, jobs * _PARTS_PER_JOB if progress else jobs, min_bytes)
    if len(parts) == 1:
        return count_range(path, *parts[0], filter, now)
    size = parts[-1][1]
    total = Summary()
    done = 0
    # fork: the workers inherit the compiled filter instead of compiling it again.
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(parts)), initializer=_start_job, initargs=(path, filter, now)) as pool:
        for (start, end), part in pool.imap_unordered(_count_job, parts):
            total.add(part)
            done += end - start
            if progress is not None:
                progress(total.lines, done / size)
    return total
