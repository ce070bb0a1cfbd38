"""Keeping the store in step with the running agent: bans, lifted bans, the journal position
and the failure windows gathered on the event loop and written in one transaction at a time,
in a thread of the store's own, so the loop never waits on the disk.

A ban is written within `URGENT_DELAY` of its decision, together with the journal position and
the failure windows that changed, as they were once every entry up to that position had been
applied; other changes every `INTERVAL` (nothing is written while nothing changes). A commit
that fails (disk full, database locked) keeps its changes, merged with newer ones, and is tried
again with backoff; the firewall is never held up by the store, and the error is logged once
per cause and shown by `status`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.addresses import Address
from agent.bans import Ban
from agent.store import Changes, Loaded, Store, StoreError

log = logging.getLogger("jailwarden.store")

URGENT_DELAY = 0.05  # seconds a ban waits for others of the same burst before it is written
INTERVAL = 1.0  # seconds between writes of windows and position while entries arrive
_LAST_RETRY = 60.0
PRUNE_INTERVAL = 3600.0  # seconds between prunings of the ban history

# (jails wanted whole) -> (positions, windows, jails listed whole): the sources' positions and the
# failure windows changed since the last call (address -> times, or None for a window gone; every
# live window of a jail listed whole), taken together on the loop so they agree.
Snapshot = Callable[[set[str]], tuple[dict[str, str], dict[str, dict[Address, list[float] | None]], set[str]]]
# While the store fails, window changes are held back address by address up to this many per
# jail; beyond it they are dropped and the jail's windows written whole once it recovers, so what
# is held back stays within the jails' own bound on tracked addresses.
PENDING_WINDOWS = 10_000


class Recorder:
    def __init__(self, path: Path, snapshot: Snapshot, history_window: float,
                 longest_findtime: Callable[[], float]) -> None:
        self.path = path
        self.history_window = history_window
        self._longest_findtime = longest_findtime
        self.error: str | None = None  # the last commit's error while it persists, for status
        self._snapshot = snapshot
        self._store: Store | None = None
        self._pending = Changes()
        self._written_positions: dict[str, str] = {}  # as of the last commit
        self._urgent = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jailwarden-store")

    # -- on the loop: what changed

    def ban(self, ban: Ban) -> None:
        key = (ban.jail, ban.address)
        self._pending.lifted.pop(key, None)
        self._pending.bans[key] = ban
        self._urgent.set()

    def lifted(self, ban: Ban, released: float) -> None:
        key = (ban.jail, ban.address)
        self._pending.bans.pop(key, None)
        self._pending.lifted[key] = (ban.offence, released)
        self._urgent.set()

    def backend(self, jail: str, name: str, options: str) -> None:
        """The firewall backend `jail` runs on and its options (JSON), remembered for a start after
        the jail is gone or moved to another backend."""
        self._pending.backends[jail] = (name, options)

    def drop_jail(self, jail: str) -> None:
        self._pending.dropped_jails.add(jail)
        self._urgent.set()

    # -- start and stop

    async def open(self, now: float, legacy_checkpoint: Path | None = None) -> Loaded | None:
        """Open the store and read what an earlier run left; None (logged) if it cannot be read,
        in which case the agent runs on and writes once the store can be opened. A checkpoint
        file of a version before the store is imported once, then renamed `*.imported`."""
        try:
            self._store = await self._in_thread(Store, self.path)
            if legacy_checkpoint is not None and legacy_checkpoint.exists():
                if await self._in_thread(self._store.import_checkpoint, legacy_checkpoint):
                    log.warning("imported the journal position and failure windows of %s into %s",
                                legacy_checkpoint, self.path)
                legacy_checkpoint.rename(legacy_checkpoint.with_name(legacy_checkpoint.name + ".imported"))
            return await self._in_thread(self._store.load, now)
        except StoreError as error:
            self._failed(error)
            return None
        except OSError as error:  # renaming the old checkpoint: it is imported; say so and go on
            log.error("cannot rename %s after importing it: %s", legacy_checkpoint, error)
            return await self._in_thread(self._store.load, now)

    async def close(self) -> None:
        """The final write; then the store is closed."""
        if not await self._write():
            log.error("stopping with changes the store could not take: %s", self.error)
        if self._store is not None:
            await self._in_thread(self._store.close)
        self._executor.shutdown(wait=True)

    # -- the writer task

    async def run(self) -> None:
        retry, pruned = 0.0, 0.0
        while True:
            if time.monotonic() - pruned > PRUNE_INTERVAL and self._store is not None and not retry:
                pruned = time.monotonic()
                await self._prune()
            if retry:
                await asyncio.sleep(retry)
            else:
                try:
                    await asyncio.wait_for(self._urgent.wait(), INTERVAL)
                    await asyncio.sleep(URGENT_DELAY)  # let the rest of a burst join this write
                except TimeoutError:
                    pass
            self._urgent.clear()
            retry = 0.0 if await self._write() else min(max(retry * 2, 1.0), _LAST_RETRY)

    async def _write(self) -> bool:
        """Commit what is pending with the position and the changed windows as of now; nothing
        when nothing changed (an idle agent does not write)."""
        changes, self._pending = self._pending, Changes()
        positions, windows, whole = self._snapshot(changes.all_windows)
        changes.merge(Changes(positions={source: text for source, text in positions.items()
                                         if self._written_positions.get(source) != text},
                              windows={jail: changed for jail, changed in windows.items() if changed},
                              all_windows=whole))
        if not changes:
            return True
        commit = asyncio.ensure_future(self._in_thread(self._commit, changes))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # Stopping: the commit goes on in its thread; what it could not take stays pending
            # for the final write in close().
            await asyncio.wait([commit])
            self._settle(changes, commit)
            raise
        except Exception:  # noqa: BLE001 - settled below, from the future itself
            pass
        return self._settle(changes, commit)

    def _commit(self, changes: Changes) -> None:
        if self._store is None:
            self._store = Store(self.path)
        self._store.commit(changes)

    def _settle(self, changes: Changes, commit: asyncio.Future) -> bool:
        """After a commit: True if it went in; else its changes go back before the newer ones."""
        error = commit.exception()
        if error is not None:
            if not isinstance(error, StoreError):  # a bug: kept, logged, retried, never lost
                log.error("writing to the store failed unexpectedly", exc_info=error)
                error = StoreError(f"{self.path}: cannot write: {type(error).__name__}: {error}")
            changes.merge(self._pending)  # newer changes win over the failed ones
            for jail in [jail for jail, windows in changes.windows.items() if len(windows) > PENDING_WINDOWS]:
                del changes.windows[jail]
                changes.all_windows.add(jail)
            self._pending = changes
            self._failed(error)
            return False
        self._written_positions.update(changes.positions)
        if self.error is not None:
            log.warning("the store at %s works again; everything held back is written", self.path)
            self.error = None
        return True

    async def _prune(self) -> None:
        """Forget past bans older than the history window, so the store does not grow without end."""
        try:
            now = time.time()
            removed = await self._in_thread(self._store.prune, now - self.history_window,
                                            now - self._longest_findtime())
        except StoreError as error:
            self._failed(error)
            return
        if removed:
            log.info("store: %d past bans older than the history window forgotten", removed)

    def _failed(self, error: StoreError) -> None:
        if str(error) != self.error:  # once per cause
            log.error("%s; bans still go to the firewall, and are written when the store recovers", error)
        self.error = str(error)

    async def _in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
