"""The agent's persistent state in one sqlite file: active bans, ban history, source positions,
failure windows and each jail's firewall backend, each batch of changes written in one
transaction so a restart (even after ``kill -9``) loses no ban and counts no failure twice."""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from operator import itemgetter
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

from agent import state
from agent.addresses import Address
from agent.bans import Ban

log = logging.getLogger("jailwarden.store")

STORE_FILE = "jailwarden.db"  # in state_dir

VERSION = 2  # PRAGMA user_version of the schema below; bump it with a migration in _create_or_check

# Strings rather than packed addresses so the file stays readable with the sqlite3 shell.
# WITHOUT ROWID: every table is looked up by its primary key and its rows are small, so the key
# is the table and no second b-tree is kept. history has no index on `released`: prune() scans it,
# which for a million rows takes 0.2 s, where an index would add two thirds to the file's size.
_SCHEMA = (
    """CREATE TABLE bans (
        jail TEXT NOT NULL,
        address TEXT NOT NULL,
        start REAL NOT NULL,
        ends REAL,                      -- NULL: permanent
        offence INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (jail, address)
    ) WITHOUT ROWID""",
    """CREATE TABLE history (
        jail TEXT NOT NULL,
        address TEXT NOT NULL,
        offence INTEGER NOT NULL,
        released REAL NOT NULL,
        PRIMARY KEY (jail, address)
    ) WITHOUT ROWID""",
    "CREATE TABLE positions (source TEXT PRIMARY KEY, position TEXT NOT NULL) WITHOUT ROWID",
    # A row per tracked address, so a write carries only the windows that changed since the
    # last one (a flood changes a few hundred per write, not all 50,000). `latest` is the newest
    # failure time, for pruning windows that ended without a ban.
    """CREATE TABLE windows (
        jail TEXT NOT NULL,
        address TEXT NOT NULL,
        failures TEXT NOT NULL,         -- the failure times, comma-separated
        latest REAL NOT NULL,
        PRIMARY KEY (jail, address)
    ) WITHOUT ROWID""",
    f"PRAGMA user_version = {VERSION}",
)
# Version 2: what each jail's firewall backend was built with (name, options as JSON), so a jail
# removed or moved to another backend while the agent was stopped has its old entries removed.
_BACKENDS = "CREATE TABLE backends (jail TEXT PRIMARY KEY, backend TEXT NOT NULL, options TEXT NOT NULL) WITHOUT ROWID"
_SCHEMA = (*_SCHEMA[:-1], _BACKENDS, _SCHEMA[-1])
_MIGRATIONS = {1: (_BACKENDS,)}  # from version N to N + 1

# After a flood the WAL may have grown to hundreds of MB; past this size it is truncated back at
# the next checkpoint instead of being kept for reuse.
_WAL_SIZE_LIMIT = 16 * 1024 * 1024

# What the operator can do about each sqlite primary error code.
_HINTS = {
    sqlite3.SQLITE_BUSY: "another process holds the database (is a second jailwarden running?)",
    sqlite3.SQLITE_LOCKED: "another process holds the database (is a second jailwarden running?)",
    sqlite3.SQLITE_FULL: "the disk is full: free space on its filesystem",
    sqlite3.SQLITE_READONLY: "the file or its directory is read-only: check permissions and mount options",
    sqlite3.SQLITE_CANTOPEN: "check that the directory exists and is writable",
    sqlite3.SQLITE_PERM: "check the file's owner and permissions",
    sqlite3.SQLITE_IOERR: "the disk reported an I/O error: check the kernel log",
    sqlite3.SQLITE_CORRUPT: "the file is damaged: move it aside to start with an empty store",
    sqlite3.SQLITE_NOTADB: "this is not a sqlite database: move it aside to start with an empty store",
}


class StoreError(Exception):
    """The store could not be opened, read or written: the path and the reason (disk full, database
    locked, corrupt, permission denied...), actionable."""


@dataclass(slots=True)
class Changes:
    """What to write in one transaction. The daemon accumulates these on its event loop and hands
    them over; after a failed commit it merges newer changes into the failed ones and tries again.

    A commit applies `dropped_jails` first, then `lifted`, `bans`, `windows` and `positions`, so
    bans and windows of a jail dropped and configured again in the same batch survive the drop.
    A jail in `all_windows` has every one of its windows in `windows`: those replace all stored.
    """

    bans: dict[tuple[str, Address], Ban] = field(default_factory=dict)
    lifted: dict[tuple[str, Address], tuple[int, float]] = field(default_factory=dict)
    positions: dict[str, str] = field(default_factory=dict)
    # jail -> address -> its failure times (replacing what was stored), or None: no window any more
    windows: dict[str, dict[Address, list[float] | None]] = field(default_factory=dict)
    dropped_jails: set[str] = field(default_factory=set)
    all_windows: set[str] = field(default_factory=set)
    backends: dict[str, tuple[str, str]] = field(default_factory=dict)  # jail -> (backend, options JSON)

    def merge(self, newer: Changes) -> None:
        """Fold `newer` in: a later ban replaces a lifted entry for the same key and vice versa; later
        positions and windows (address by address) win; a later drop discards the earlier bans and windows of that jail
        (its earlier lifted entries stay: history outlives the jail)."""
        if newer.dropped_jails:
            dropped = newer.dropped_jails
            self.bans = {key: ban for key, ban in self.bans.items() if key[0] not in dropped}
            for jail in dropped:
                self.windows.pop(jail, None)
            self.dropped_jails |= dropped
            self.all_windows -= dropped
            for jail in dropped:
                self.backends.pop(jail, None)
        for key, ban in newer.bans.items():
            self.lifted.pop(key, None)
            self.bans[key] = ban
        for key, lift in newer.lifted.items():
            self.bans.pop(key, None)
            self.lifted[key] = lift
        self.positions.update(newer.positions)
        self.backends.update(newer.backends)
        for jail in newer.all_windows:
            self.windows.pop(jail, None)
        self.all_windows |= newer.all_windows
        for jail, windows in newer.windows.items():
            self.windows.setdefault(jail, {}).update(windows)

    def __bool__(self) -> bool:
        return bool(self.bans or self.lifted or self.positions or self.windows or self.dropped_jails
                    or self.all_windows or self.backends)


@dataclass(slots=True)
class Loaded:
    """Everything the store holds, as of `now` at load."""

    bans: list[Ban]  # active at `now` (end > now, or permanent)
    ended: list[Ban]  # ended while the agent was down: to unban, then commit as lifted
    history: list[tuple[str, Address, int, float]]  # (jail, address, offence, released), oldest release first
    positions: dict[str, str]
    windows: dict[str, dict[Address, list[float]]]
    backends: dict[str, tuple[str, str]] = field(default_factory=dict)  # jail -> (backend, options JSON)


class Store:
    """The sqlite file at `path`, opened for one writer thread at a time (never concurrently).

    Durability: WAL journal with synchronous=NORMAL. A commit that has returned survives the
    process crashing or being killed (``kill -9``); a power loss or kernel crash may lose the last
    commits (never half of one), which the journal position stored with them makes good by
    reading those entries again.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 2.0) -> None:
        """Create or open the store; `busy_timeout` is how long to wait for another writer."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_private(self.path)
        except OSError as error:
            raise StoreError(f"{self.path}: cannot create: {error.strerror}") from None
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as error:
            raise self._error("cannot open", error) from None
        try:
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("%s: journal mode is %s, not WAL (filesystem without shared memory?): "
                            "commits are slower but still atomic", self.path, mode)
            self._db.execute("PRAGMA synchronous = NORMAL")
            # 8 MB of page cache instead of 2: a flood's inserts land all over a large history,
            # and the agent's whole memory budget is ~100 MB.
            self._db.execute("PRAGMA cache_size = -8192")
            self._db.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            self._create_or_check()
        except BaseException as error:
            self._db.close()
            if isinstance(error, sqlite3.Error):
                raise self._error("cannot open", error) from None
            raise

    def load(self, now: float) -> Loaded:
        """Everything stored; bans whose end is at or before `now` come back in `ended`."""
        jails: dict[str, str] = {}  # one str object per jail name instead of one per row
        # A million rows make a million tuples, which would set off the cyclic garbage collector
        # over and over (nearly half the time) although none of them can be part of a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            bans, ended = [], []
            for jail, address, start, ends, offence, reason in self._db.execute(
                    "SELECT jail, address, start, ends, offence, reason FROM bans"):
                ban = Ban(jails.setdefault(jail, jail), _address(address), start,
                          math.inf if ends is None else ends, offence, reason)
                (bans if ban.end > now else ended).append(ban)
            history = [(jails.setdefault(jail, jail), _address(address), offence, released)
                       for jail, address, offence, released in self._db.execute(
                           "SELECT jail, address, offence, released FROM history")]
            # Oldest release first: the order BanBook keeps its history in and forgets it from.
            history.sort(key=itemgetter(3))
            positions = dict(self._db.execute("SELECT source, position FROM positions"))
            windows: dict[str, dict[Address, list[float]]] = {}
            for jail, address, failures in self._db.execute("SELECT jail, address, failures FROM windows"):
                windows.setdefault(jail, {})[_address(address)] = [float(t) for t in failures.split(",")]
            backends = {jail: (backend, options) for jail, backend, options
                        in self._db.execute("SELECT jail, backend, options FROM backends")}
        except sqlite3.Error as error:
            raise self._error("cannot read", error) from None
        except (ValueError, OSError, AttributeError) as error:
            # A row this module did not write: an address or a window blob that does not parse.
            raise StoreError(f"{self.path}: damaged row ({error}): move the file aside to start "
                             "with an empty store") from None
        finally:
            if collecting:
                gc.enable()
        return Loaded(bans, ended, history, positions, windows, backends)

    def commit(self, changes: Changes) -> None:
        """Write `changes` in one transaction: all of it or, on StoreError, none of it."""
        if not changes:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._error("cannot write", error) from None
        try:
            self._write(changes)
            self._db.execute("COMMIT")
        except BaseException as error:
            self._rollback()
            if isinstance(error, sqlite3.Error):
                raise self._error("cannot write", error) from None
            raise

    def prune(self, released_before: float, windows_before: float | None = None) -> int:
        """Forget history released before `released_before`, and failure windows whose newest
        failure is older than `windows_before` (they ended without a ban); returns how many history
        entries. The freed pages are reused by later writes; vacuum() gives them back to the
        filesystem."""
        try:
            pruned = self._db.execute("DELETE FROM history WHERE released < ?", (released_before,)).rowcount
            if windows_before is not None:
                self._db.execute("DELETE FROM windows WHERE latest < ?", (windows_before,))
            # A large prune leaves a WAL as big as what it deleted: empty it now rather than keep it.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return pruned
        except sqlite3.Error as error:
            raise self._error("cannot prune history", error) from None

    def vacuum(self) -> None:
        """Give the pages freed by prune() back to the filesystem (rewrites the whole file: run it
        rarely, e.g. after a prune that removed a flood's worth of history)."""
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            raise self._error("cannot vacuum", error) from None

    def size(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for name in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += name.stat().st_size
            except FileNotFoundError:
                pass
            except OSError as error:
                raise StoreError(f"{name}: cannot stat: {error.strerror}") from None
        return total

    def close(self) -> None:
        """Close the file (the last connection folds the WAL back into it); closing twice is harmless."""
        try:
            self._db.close()
        except sqlite3.Error as error:
            raise self._error("cannot close", error) from None

    def import_checkpoint(self, path: Path) -> bool:
        """Move the JSON checkpoint of agent/state.py into an empty store (journal position under
        source "journal", and the windows); returns whether it imported. The file is left in place."""
        try:
            has_positions = self._db.execute("SELECT 1 FROM positions LIMIT 1").fetchone() is not None
        except sqlite3.Error as error:
            raise self._error("cannot read", error) from None
        if has_positions:
            return False
        try:
            checkpoint = state.load(path)
        except state.StateError as error:
            raise StoreError(f"cannot import the old checkpoint: {error}") from None
        if checkpoint is None:
            return False
        changes = Changes(windows={jail: {_address(address): times for address, times in addresses.items()}
                                   for jail, addresses in checkpoint.windows.items()})
        if checkpoint.journal is not None:
            journal = checkpoint.journal
            changes.positions["journal"] = journal.text()
        self.commit(changes)
        return True

    def _write(self, changes: Changes) -> None:
        db = self._db
        for jail in changes.dropped_jails:
            db.execute("DELETE FROM bans WHERE jail = ?", (jail,))
            db.execute("DELETE FROM windows WHERE jail = ?", (jail,))
            db.execute("DELETE FROM backends WHERE jail = ?", (jail,))
        if changes.lifted:
            released = [(jail, _text(address), offence, time)
                        for (jail, address), (offence, time) in changes.lifted.items()]
            db.executemany("DELETE FROM bans WHERE jail = ? AND address = ?", [row[:2] for row in released])
            db.executemany(
                "INSERT INTO history VALUES (?, ?, ?, ?) ON CONFLICT (jail, address) "
                "DO UPDATE SET offence = excluded.offence, released = excluded.released", released)
        if changes.bans:
            db.executemany(
                "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?)",
                [(ban.jail, _text(ban.address), ban.start, None if ban.end == math.inf else ban.end,
                  ban.offence, ban.reason) for ban in changes.bans.values()])
        for jail in changes.all_windows:
            db.execute("DELETE FROM windows WHERE jail = ?", (jail,))
        for jail, windows in changes.windows.items():
            gone = [(jail, _text(address)) for address, times in windows.items() if not times]
            kept = [(jail, _text(address), ",".join(map(repr, times)), max(times))
                    for address, times in windows.items() if times]
            if gone:
                db.executemany("DELETE FROM windows WHERE jail = ? AND address = ?", gone)
            if kept:
                db.executemany("INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?)", kept)
        if changes.positions:
            db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?)", changes.positions.items())
        if changes.backends:
            db.executemany("INSERT OR REPLACE INTO backends VALUES (?, ?, ?)",
                           [(jail, *settings) for jail, settings in changes.backends.items()])

    def _create_or_check(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == VERSION:
            return
        if version > VERSION:
            raise StoreError(f"{self.path}: written by a newer jailwarden (store schema version {version}, "
                             f"this one knows up to {VERSION}): upgrade jailwarden, or move the file aside "
                             "to start with an empty store")
        # Another process may be creating it at the same moment: decide under the write lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
                    raise StoreError(f"{self.path}: a sqlite database but not a jailwarden store: "
                                     "choose another state_dir or move the file aside")
                for statement in _SCHEMA:
                    self._db.execute(statement)
            for step in range(version or VERSION, VERSION):
                for statement in _MIGRATIONS[step]:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # sqlite rolls some failures (disk full, I/O error) back by itself; only roll back what is open.
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as error:
            log.warning("%s: rollback failed: %s", self.path, error)

    def _error(self, doing: str, error: sqlite3.Error) -> StoreError:
        hint = _HINTS.get(getattr(error, "sqlite_errorcode", -1) & 0xFF)
        return StoreError(f"{self.path}: {doing}: {error}" + (f"; {hint}" if hint else ""))


def read_backends(path: Path) -> dict[str, tuple[str, str]]:
    """{jail: (backend, options JSON)} as the store at `path` records them, read without writing
    (for `jailwarden teardown`, with the agent stopped); empty when there is no such store, or
    it is one from before backends were recorded, or unreadable."""
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return {jail: (backend, options) for jail, backend, options
                    in db.execute("SELECT jail, backend, options FROM backends")}
    except sqlite3.Error:
        return {}


def _create_private(path: Path) -> None:
    """Create the file owner-only before sqlite opens it (sqlite gives its -wal and -shm files the
    same mode); tighten an existing file that others could read."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(descriptor).st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def _text(address: Address) -> str:
    """``str(address)``, several times faster for IPv6. glibc's inet_ntop writes the same
    RFC 5952 text as ipaddress except for an embedded IPv4 tail (``::ffff:1.2.3.4``), so those
    few go through ``str()``."""
    if address.version == 4 or not hasattr(address, "packed"):  # a network has no .packed
        return str(address)
    text = socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address) if "." in text else text


def _address(text: str) -> Address:
    """An address as this module wrote it. inet_pton is strict and, fed to the constructors as an
    int, about three times faster than ipaddress's own parser, which matters for a million rows."""
    if "/" in text:  # a network banned by prefix aggregation
        return ip_network(text)
    if ":" in text:
        return IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, text)))
    return IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, text)))
