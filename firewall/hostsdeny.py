"""hosts.deny backend: bans as TCP wrappers (libwrap, hosts_access(5)) entries, in one marked block
per jail, for daemons that read /etc/hosts.deny (Debian 12's sshd is linked with libwrap). Owns
that block and a lock file beside the file; every other byte of the file stays as it was."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator

from firewall import BackendError, Target
from firewall._hostsdeny_block import (
    DAEMONS,
    JAIL_NAME,
    BlockError,
    Layout,
    find_block,
    normalise,
    parse_entries,
    render_block,
)

log = logging.getLogger("jailwarden.firewall")

_ATTEMPTS = 5  # times a change is redone when the file changed between our read and our rename
_HINTS = {
    errno.EACCES: "run the agent as root or let it write the file's directory",
    errno.EPERM: "run the agent as root or let it write the file's directory",
    errno.EROFS: "the file system is mounted read-only",
    errno.ENOSPC: "the file system is full",
    errno.ENOENT: "the directory does not exist; create it or set [firewall.hostsdeny] path",
}

Entries = dict[Target, float | None]  # target -> end (epoch seconds) or None for permanent


class HostsDenyBackend:
    """Bans written to a hosts.deny file, in a block of its own per jail.

    Options:
    - `path` (default "/etc/hosts.deny"): the file; a symlink is followed and its target edited.
    - `daemons` (default "ALL"): the daemon list of every entry, e.g. "sshd" or "sshd, vsftpd".
    - `lock_timeout` (default 10 s): how long to wait for another agent's lock before failing.
    - `clock` (default time.time): what "now" is, for tests.

    Expiry: libwrap has no timers, so an entry's end is kept in the block (an `# until EPOCH`
    comment line above it) and `list()` reports the seconds left, 0.0 for an entry past its end
    that is still in the file (it still denies; the agent adopts and unbans it). The agent's own
    schedule unbans on time; besides, every write (setup, ban, ban_many, unban) drops entries past
    their end. `list()` only reads. While no agent runs, ended bans stay in force: the file errs on
    the side of denying until the next setup.

    Every change re-reads the file and writes it whole and atomically (a temp file in the same
    directory with the file's mode and owner, fsync, rename, fsync of the directory) under an
    flock on `<file>.jailwarden.lock`, so two agents never lose each other's bans. An
    administrator's edit (editor, `echo >>`, `sed -i`) that lands between our read and our
    rename is noticed (inode, size, mtime) and the change is redone on top of it. Because the
    file is replaced, a daemon that sees it through a bind mount of the file alone (a container)
    keeps seeing the old one: point it at a bind-mounted directory instead.
    """

    name = "hostsdeny"

    def __init__(self, jail: str, path: str | os.PathLike = "/etc/hosts.deny", daemons: str = "ALL",
                 lock_timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        if not JAIL_NAME.fullmatch(jail):
            raise BackendError(self.name, f"configure jail {jail!r}", "a jail name for hosts.deny is letters, digits, "
                               "'_', '.', '@' or '-' (it is written in the block's BEGIN/END lines)")
        daemons = str(daemons).strip()
        if not DAEMONS.fullmatch(daemons):
            raise BackendError(self.name, f"configure jail {jail}", f"daemons = {daemons!r} is not a hosts_access(5) "
                               "daemon list: names or patterns separated by blanks or commas, without ':', '#' or '\\'")
        self.jail = jail
        self.path = os.path.abspath(os.fspath(path))
        self.daemons = daemons
        self._lock_timeout = lock_timeout
        self._clock = clock
        self._parsed: tuple[bytes, Entries] = (b"", {})  # the last block parsed, to skip parsing it again

    def setup(self) -> None:
        """Create the file (mode 0644) if missing and this jail's block if absent, adopting an
        existing block (dropping its ended entries); a malformed block fails, the file untouched."""
        self._edit("setup", lambda entries, now: _unexpired(entries, now), cleanup=True)

    def ban(self, target: Target, ttl: float | None) -> None:
        now = self._clock()
        try:
            entry = {normalise(target): _until(ttl, now)}
        except ValueError as error:
            raise BackendError(self.name, f"ban {target!r}", str(error)) from None
        self._edit(f"ban {target}", lambda entries, now: _unexpired(entries | entry, now))

    def ban_many(self, items: list[tuple[Target, float | None]]) -> None:
        """One read and one write for all `items`; an item that is not an address or network with
        a valid ttl is skipped and named in a warning, the others are banned."""
        now = self._clock()
        new: Entries = {}
        skipped = []
        for item in items:
            try:
                target, ttl = item
                new[normalise(target)] = _until(ttl, now)
            except (TypeError, ValueError) as error:
                skipped.append(f"{item!r} ({error})")
        if skipped:
            log.warning("jail %s: hosts.deny: %d of %d bans skipped: %s%s", self.jail, len(skipped), len(items),
                        "; ".join(skipped[:10]), " ..." if len(skipped) > 10 else "")
        if new:
            self._edit(f"ban {len(new)} addresses", lambda entries, now: _unexpired(entries | new, now))

    def unban(self, target: Target) -> None:
        try:
            gone = normalise(target)
        except ValueError as error:
            raise BackendError(self.name, f"unban {target!r}", str(error)) from None
        self._edit(f"unban {target}", lambda entries, now: _unexpired(
            {t: until for t, until in entries.items() if t != gone}, now))

    def list(self) -> dict[Target, float | None]:
        """`{target: seconds left, or None for permanent}` from the file, ended entries still in
        it with 0.0. Reads without the lock: writers replace the file atomically."""
        data, _ = self._read(os.path.realpath(self.path), "list")
        entries = self._entries(self._layout(data or b"", "list"), "list")
        now = self._clock()
        return {target: None if until is None else max(0.0, until - now) for target, until in entries.items()}

    def teardown(self) -> None:
        """Remove exactly this jail's block (and the newline it added to an unterminated last line)."""
        self._edit("teardown", lambda entries, now: None)

    def _edit(self, action: str, change: Callable[[Entries, float], Entries | None], cleanup: bool = False) -> None:
        """Apply `change` (entries, now -> new entries, or None to remove the block) to the file."""
        with self._locked(action) as real:
            if cleanup:
                self._remove_stale_temp_files(real)
            for _ in range(_ATTEMPTS):
                data, identity = self._read(real, action)
                layout = self._layout(data or b"", action)
                entries = change(self._entries(layout, action), self._clock())
                block = None if entries is None else render_block(self.jail, self.daemons, entries,
                                                                   layout.newline_added)
                new = layout.with_block(block)
                if new == data or (data is None and block is None):
                    return
                if self._replace(real, new, identity, action):
                    if entries is not None:
                        self._parsed = (block, entries)
                    log.debug("jail %s: %s: %s written (%d entries)", self.jail, action, real,
                              len(entries or ()))
                    return
            raise BackendError(self.name, action, f"{real} changed {_ATTEMPTS} times while being edited; "
                               "try again once whatever rewrites it has finished")

    def _layout(self, data: bytes, action: str) -> Layout:
        try:
            return find_block(data, self.jail)
        except BlockError as error:
            raise BackendError(self.name, action, f"{self.path}: {error}; the file was not changed") from None

    def _entries(self, layout: Layout, action: str) -> Entries:
        if layout.block is None:
            return {}
        if layout.block == self._parsed[0]:
            return dict(self._parsed[1])
        try:
            entries = parse_entries(layout.block, layout.line)
        except BlockError as error:
            raise BackendError(self.name, action, f"{self.path}: {error}; the file was not changed") from None
        self._parsed = (layout.block, entries)
        return dict(entries)

    @contextlib.contextmanager
    def _locked(self, action: str) -> Iterator[str]:
        """Hold the lock file beside the (symlink-resolved) file; yields the file's real path."""
        real = os.path.realpath(self.path)
        lock = real + ".jailwarden.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            raise self._os_error(action, f"cannot open the lock file {lock}", error) from None
        try:
            deadline = time.monotonic() + self._lock_timeout
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendError(self.name, action, f"{lock} has been locked by another process for "
                                           f"{self._lock_timeout:g} s (another jailwarden?)") from None
                    time.sleep(pause)  # flock has no timeout of its own
                    pause = min(pause * 2, 0.05)
            yield real
        finally:
            os.close(fd)

    def _read(self, real: str, action: str) -> tuple[bytes | None, tuple | None]:
        """The file's bytes and identity (None, None when it does not exist)."""
        try:
            with open(real, "rb") as file:
                identity = _identity(os.fstat(file.fileno()))
                return file.read(), identity
        except FileNotFoundError:
            return None, None
        except OSError as error:
            raise self._os_error(action, f"cannot read {real}", error) from None

    def _replace(self, real: str, data: bytes, identity: tuple | None, action: str) -> bool:
        """Atomically replace `real` with `data`, keeping its mode and owner (0644 for a new file);
        False, with nothing changed, when the file is no longer the one read (`identity`)."""
        directory, base = os.path.split(real)
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{base}.jailwarden-", suffix=".tmp", dir=directory)
        except OSError as error:
            raise self._os_error(action, f"cannot create a temporary file in {directory}", error) from None
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                _copy_mode_and_owner(file.fileno(), identity)
                os.fsync(file.fileno())
            try:
                current = _identity(os.stat(real))
            except FileNotFoundError:
                current = None
            if current != identity:
                os.unlink(temp)
                return False
            os.replace(temp, real)
        except OSError as error:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise self._os_error(action, f"cannot write {real}", error) from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)
        return True

    def _remove_stale_temp_files(self, real: str) -> None:
        # Writers hold the lock while their temp file exists, so one found under the lock was
        # left by a writer that died between creating and renaming it.
        directory, base = os.path.split(real)
        for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}.jailwarden-*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
                log.info("jail %s: removed %s, left by an interrupted write", self.jail, stale)

    def _os_error(self, action: str, what: str, error: OSError) -> BackendError:
        hint = _HINTS.get(error.errno)
        return BackendError(self.name, action, f"{what}: {error.strerror}" + (f" ({hint})" if hint else ""))


def _until(ttl: object, now: float) -> float | None:
    if ttl is None or ttl == math.inf:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl {ttl!r} is not a positive number of seconds or None")
    return now + ttl


def _unexpired(entries: Entries, now: float) -> Entries:
    return {target: until for target, until in entries.items() if until is None or until > now}


def _identity(status: os.stat_result) -> tuple:
    # mode, uid and gid are carried so that a new file gets them; the rest detects a change.
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid)


def _copy_mode_and_owner(fd: int, identity: tuple | None) -> None:
    if identity is None:
        os.fchmod(fd, 0o644)
        return
    mode, uid, gid = identity[4:]
    own = os.fstat(fd)
    if (own.st_uid, own.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)  # before fchmod: a chown clears set-id bits
    os.fchmod(fd, mode)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
