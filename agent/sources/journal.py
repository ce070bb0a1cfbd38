"""The journal source: systemd journal entries as `LogEvent`s, on the asyncio loop, read from
where the last run stopped.

Wake-ups. journald announces appends through the reader's inotify descriptor 250-500 ms late
(it coalesces change notifications in a 250 ms timer), while an entry is readable from the
file well under a millisecond after it is written. So the reader is woken two ways: by its
descriptor (file rotation, deletion, and appends when journald does announce them) and by a
timer every `poll_interval` (default 20 ms) that asks the reader for the next entry. Asking
costs ~0.1 us; the loop's wake-up costs ~100 us of CPU, which is what idle time is spent on:
~0.65% of a core at 20 ms, ~1.2% at 10 ms (see tests/bench/bench_journal.py).

Position. `position` is the cursor and time of the last entry handed to the sink; the sink
returns once the entry's effects are applied, so saving `position` with those effects and
passing it back as `resume` neither loses nor repeats an entry. A cursor that no longer
exists (its file was rotated away and vacuumed) falls back to the entry's time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import JournalConfig
from agent.config_values import format_duration
from agent.events import LogEvent
from agent.sources import Sink, SourceError

log = logging.getLogger("jailwarden.journal")

# Entries read in one go before yielding to the loop, so a backlog (history read back at
# start, a burst) never starves the other sources.
_BATCH = 100
_BATCH_SECONDS = 0.002
# sd_journal keeps every part of the journal files it has read mapped, and those pages count in
# the agent's RSS: ~50 MB over a 100,000-entry flood if never reopened. Every _REOPEN_CHECK
# entries the file-backed part of the RSS is looked at, and once it has grown by _REOPEN_GROWTH
# since the reader was opened, the reader is opened afresh at the current position, which maps
# only what it reads next. Measured in the flood benchmark (tests/bench/bench_flood.py): 6 MiB
# peak RSS 89-90 MiB and all bans 7.8-8.9 s after the last entry; 12 MiB 97-106 MiB and
# 7.7-8.8 s; never reopened, ~140 MiB.
_REOPEN_CHECK = 250
_REOPEN_GROWTH = 6 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True, frozen=True)
class Position:
    """Where reading stopped: the last applied entry's cursor and its time (journald's
    microseconds, kept whole so the fallback after a lost cursor skips exactly up to it)."""

    cursor: str
    usec: int

    @property
    def time(self) -> float:
        return self.usec / 1_000_000

    def text(self) -> str:
        """The position as the store keeps it (JSON)."""
        return json.dumps({"cursor": self.cursor, "usec": self.usec})

    @classmethod
    def from_text(cls, text: str) -> Position:
        """The position `text()` wrote; ValueError if `text` is not one."""
        try:
            data = json.loads(text)
            return cls(str(data["cursor"]), int(data["usec"]))
        except (TypeError, KeyError) as error:
            raise ValueError(f"not a journal position: {error}") from None


def _mapped_bytes() -> int:
    """This process's file-backed and shared resident memory (statm's third field)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[2]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


# Characters of a message given to the filters: what they are proved linear on (see
# tests/unit/test_regex_safety.py); the rest of a longer one is cut off and counted.
MAX_MESSAGE = 65536


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):  # a field given more than once: the last one, as journalctl shows
        return _text(value[-1]) if value else ""
    return str(value)


class JournalSource:
    """Reads the system journal (or a namespace's, or a directory of journal files).

    `matches` are the jails' identity groups (`agent.router.Router.journal_matches`), pushed
    into the reader so journald itself skips what no jail wants. `resume` is the position
    saved by the last run; without one, reading starts `history` seconds before `now` so
    failures from just before the start still count.
    """

    name = "journal"

    def __init__(self, config: JournalConfig, sink: Sink, *, matches: list[dict[str, list[str]]],
                 resume: Position | None = None, history: float = 0.0, now: float = 0.0) -> None:
        self.config = config
        self._sink = sink
        self._matches = matches
        self._resume = resume
        self._history = history
        self._now = now
        self._reader = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._draining = False
        self._next_batch: asyncio.Handle | None = None  # the next batch of a drain under way
        self._read_since_open = 0
        self._mapped_at_open = 0
        self._reopen_tried = 0.0
        self._stopped = False
        # Entries at or before this time are already applied (set when a cursor was lost).
        self._skip_until_usec = -1
        self.position: Position | None = resume
        # Files in a directory (a container's) may have been written by anyone with access to
        # it, journald's fields included; the system journal and namespaces are journald's own.
        self._trusted = config.path is None
        self._counts = {"received": 0, "delivered": 0, "truncated": 0, "skipped_after_lost_cursor": 0, "wakeups": 0,
                        "invalidations": 0, "errors": 0}

    def _open(self):
        from systemd import journal

        config = self.config
        where = (f"namespace {config.namespace!r}" if config.namespace
                 else f"directory {config.path}" if config.path else "the system journal")
        try:
            if config.namespace:
                reader = journal.Reader(namespace=config.namespace)
            elif config.path:
                if not Path(config.path).is_dir():
                    raise SourceError(f"journal: cannot read {where}: no such directory")
                reader = journal.Reader(path=str(config.path))
            else:
                reader = journal.Reader(flags=journal.LOCAL_ONLY | journal.SYSTEM)
        except OSError as error:
            raise SourceError(f"journal: cannot open {where}: {error.strerror or error}") from None
        for group in self._matches:
            for field, values in group.items():
                for value in values:
                    reader.add_match(f"{field}={value}")
            reader.add_disjunction()
        self._mapped_at_open = _mapped_bytes()
        return reader, where

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader, where = self._open()
        try:
            self._seek()
            fd = self._reader.fileno()
            self._loop.add_reader(fd, self._on_change)
        except OSError as error:
            self._reader.close()
            self._reader = None
            raise SourceError(f"journal: cannot read {where}: {error.strerror or error}") from None
        self._schedule_poll()
        log.info("reading %s (%d identity matches, polled every %g ms)", where, len(self._matches),
                 self.config.poll_interval * 1000)

    def _seek(self, quiet: bool = False) -> None:
        reader = self._reader
        resume = self._resume
        if resume is not None:
            try:
                reader.seek_cursor(resume.cursor)
                found = reader._next() and reader.test_cursor(resume.cursor)
            except (OSError, ValueError):
                found = False
            if found:
                log.log(logging.DEBUG if quiet else logging.INFO, "resuming after the saved journal cursor")
                return
            log.warning("the saved journal cursor no longer exists (its file was rotated away or vacuumed); "
                        "resuming after the last entry seen, at %s (entries written in the same microsecond, or "
                        "after the clock was set back, are skipped)", _when(resume.time))
            self._skip_until_usec = resume.usec
            reader.seek_realtime(resume.time)
            return
        if self._history > 0:
            log.info("no saved journal position: reading back %s of history", format_duration(self._history))
            reader.seek_realtime(self._now - self._history)
        else:
            reader.seek_tail()
            reader._previous()

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._next_batch is not None:
            self._next_batch.cancel()
            self._next_batch = None
        if self._reader is not None:
            try:
                self._loop.remove_reader(self._reader.fileno())
            except (OSError, ValueError):
                pass
            self._reader.close()
            self._reader = None

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def _schedule_poll(self) -> None:
        self._timer = self._loop.call_later(self.config.poll_interval, self._on_poll)

    def _on_poll(self) -> None:
        if self._stopped:
            return
        try:
            if self._reader is None:
                self._reopen_after_failure()
            self._drain()
        except Exception:  # a bug must not end polling for good: logged, and the next poll comes
            self._counts["errors"] += 1
            log.exception("journal: reading failed unexpectedly; going on")
        finally:
            self._schedule_poll()

    def _reopen_after_failure(self) -> None:
        """Open the journal again after `_reopen` failed: once a second, logged when it works."""
        now = time.monotonic()
        if now - self._reopen_tried < 1.0:
            return
        self._reopen_tried = now
        try:
            self._reader, _ = self._open()
            self._seek(quiet=True)
            self._loop.add_reader(self._reader.fileno(), self._on_change)
        except (SourceError, OSError):
            if self._reader is not None:
                self._reader.close()
            self._reader = None
            return
        log.warning("journal: open again; reading on after the last applied entry")

    def _on_change(self) -> None:
        self._counts["wakeups"] += 1
        try:
            if self._reader.process() == 2:  # INVALIDATE: files were added or removed
                self._counts["invalidations"] += 1
        except OSError as error:
            self._counts["errors"] += 1
            log.warning("journal: processing change notifications failed: %s", error)
        self._drain()

    def _drain(self) -> None:
        """Read a batch; if more waits, come back after whatever else the loop has to do. One
        chain of batches at a time: a poll or a notification during a long drain joins it rather
        than starting another (chains that multiply would starve the control socket)."""
        if self._draining or self._reader is None or self._next_batch is not None:
            return
        self._read_on()

    def _read_on(self) -> None:
        self._next_batch = None
        if self._reader is None:
            return
        self._draining = True
        before = self._counts["received"]
        try:
            more = self._read_batch()
        finally:
            self._draining = False
            self._read_since_open += self._counts["received"] - before
        if self._read_since_open >= _REOPEN_CHECK and self.position is not None:
            self._read_since_open = 0
            if _mapped_bytes() - self._mapped_at_open > _REOPEN_GROWTH:
                self._reopen()
        if more and self._reader is not None:
            self._next_batch = self._loop.call_soon(self._read_on)

    def _reopen(self) -> None:
        """Close the reader and open a new one right after the last applied entry."""
        self._loop.remove_reader(self._reader.fileno())
        self._reader.close()
        self._reader = None
        self._read_since_open = 0
        self._resume = self.position
        try:
            self._reader, where = self._open()
            self._seek(quiet=True)
            self._loop.add_reader(self._reader.fileno(), self._on_change)
        except (SourceError, OSError) as error:
            # The next poll tries again (see _on_poll); nothing read is lost, the position stays.
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._counts["errors"] += 1
            log.error("journal: opening the journal again failed: %s; trying again", error)

    def _read_batch(self) -> bool:
        """Read and deliver up to _BATCH entries, for at most _BATCH_SECONDS; True if more may be
        waiting. Short batches keep the loop turning for the control socket during a flood."""
        reader = self._reader
        counts = self._counts
        deadline = time.monotonic() + _BATCH_SECONDS
        for number in range(_BATCH):
            if number & 15 == 15 and time.monotonic() > deadline:
                return True
            try:
                if not reader._next():
                    return False
                usec = reader._get_realtime()
                if usec <= self._skip_until_usec:
                    counts["received"] += 1
                    counts["skipped_after_lost_cursor"] += 1
                    continue
                entry = reader._get_all()
                cursor = reader._get_cursor()
            except OSError as error:
                # A file vanishing under the reader; the next wake-up reads on from the others.
                counts["errors"] += 1
                log.warning("journal: reading the next entry failed: %s", error)
                return False
            counts["received"] += 1
            self._skip_until_usec = -1  # past the lost cursor's time: nothing more to skip
            fields = {key: _text(value) for key, value in entry.items() if not key.startswith("__")}
            message = fields.pop("MESSAGE", "")
            if len(message) > MAX_MESSAGE:  # any local user can write one of megabytes
                message = message[:MAX_MESSAGE]
                counts["truncated"] += 1
            try:
                self._sink(LogEvent(usec / 1_000_000, "journal", message, fields, self._trusted))
            except Exception:  # a bug downstream must not stop the journal or replay the entry forever
                counts["errors"] += 1
                log.exception("journal: handling the entry at %s failed; going on with the next", cursor)
            # Only now, with the entry's effects applied, does the position move past it.
            self.position = Position(cursor, usec)
            counts["delivered"] += 1
        return True


def _when(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")

