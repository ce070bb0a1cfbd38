"""An isolated systemd-journald for tests: one journal namespace per fixture.

`JournalNamespace` runs `/lib/systemd/systemd-journald NAME` (systemd 252) with its own
sockets in `/run/systemd/journal.NAME/` and its own volatile files in
`/run/log/journal/<machine-id>.NAME/`, so tests never touch the host's default journal.

Measured on the Debian 12 test machines (2 cores, PID 1 is not systemd):

- Start until the stdout socket accepts a stream: 5-20 ms. Stop (SIGTERM until exit): ~2 ms.
- A namespace journald exits 30 s after the last sign of life when no client stream is
  connected. Each datagram on `socket` re-arms that idle timer (it exited 30.1 s after the
  last datagram); a connected `stdout` stream disarms it (still running after 45 s; exited
  30.07 s after the stream closed). So the instance keeps one stdout stream open for as
  long as it runs.
- `journalctl --namespace=NAME --rotate` is synchronous (asks the instance over varlink,
  ~12 ms); SIGUSR2 rotates too, but asynchronously.
- `journalctl --namespace=NAME --vacuum-*` also vacuums the *default* journal directories
  (/var/log/journal and /run/log/journal); `vacuum()` therefore uses `--directory=PATH`,
  which touches only this namespace's files.
- `systemd.journal.Reader(namespace=NAME)` works with systemd-python 235 and opens only that
  namespace (every entry carries `_NAMESPACE=NAME`), also while the instance is stopped;
  `Reader(path=ns.path)` works as well.
- journald reads `_COMM`, `_EXE` and `_CMDLINE` from /proc/PID when it handles a datagram;
  a sender that exits first gets an entry without them (`_PID`, `_UID`, `_GID` come from
  the socket credentials and are always there). The helpers that send from another
  process keep that process alive until its entry is in the journal.
"""

from __future__ import annotations

import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from systemd import journal

from .polling import wait_until

JOURNALD = "/lib/systemd/systemd-journald"
_FIELD_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]*\Z")
_POLL = 0.005

Entry = dict
Match = str | Callable[[Entry], bool]

# The script behind send_renamed() (run from a file, so the entry's _CMDLINE stays short):
# renames itself, sends the datagram it reads from stdin, says so, and stays alive until
# stdin closes so journald can still read its /proc entry.
_RENAMED_SENDER = """
import ctypes, socket, struct, sys
PR_SET_NAME = 15
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_NAME, sys.argv[2].encode(), 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
size = struct.unpack("<Q", sys.stdin.buffer.read(8))[0]
datagram = sys.stdin.buffer.read(size)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(datagram, sys.argv[1])
sys.stdout.write("sent\\n")
sys.stdout.flush()
sys.stdin.buffer.read()
"""


# Behind run_with_journal_socket(): $1 the namespace's runtime directory, $2 an empty
# directory to carry it across the tmpfs mount, then the command.
_WITH_JOURNAL_SOCKET = r"""
set -e
mount -n --bind "$1" "$2"
mount -n -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/journal
mount -n --move "$2" /run/systemd/journal
shift 2
exec "$@"
"""


def encode_entry(message: str | bytes, fields: dict[str, object]) -> bytes:
    """One native-protocol datagram: `NAME=value\\n`, or the binary-safe
    `NAME\\n<le64 length><value>\\n` for values holding a newline."""
    datagram = bytearray()
    for name, value in {"MESSAGE": message, **fields}.items():
        if not _FIELD_NAME.match(name):
            # journald silently drops names it does not accept (e.g. a leading "_"),
            # which would make a test pass for the wrong reason.
            raise ValueError(f"journal field name {name!r} must be A-Z, 0-9, _ and not start with _")
        data = value if isinstance(value, bytes) else str(value).encode()
        if b"\n" in data:
            datagram += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            datagram += name.encode() + b"=" + data + b"\n"
    return bytes(datagram)


def _machine_id() -> str:
    return Path("/etc/machine-id").read_text().strip()


class JournalNamespace:
    """A private systemd-journald instance; use as a context manager or call start()/stop().

    `settings` go into the instance's drop-in under `[Journal]` and override the defaults
    below (e.g. `{"RuntimeMaxFileSize": "512K"}`).
    """

    DEFAULT_SETTINGS = {
        "Storage": "volatile",
        "RateLimitIntervalSec": "0",
        "RuntimeMaxFileSize": "1M",  # small, so rotation by size is reachable in a test
        "ForwardToSyslog": "no",
        "ForwardToKMsg": "no",
        "ForwardToConsole": "no",
        "ForwardToWall": "no",
    }

    def __init__(self, name: str | None = None, settings: dict[str, str] | None = None):
        self.name = name or "jwt" + secrets.token_hex(4)
        self.settings = {**self.DEFAULT_SETTINGS, **(settings or {})}
        self.runtime_dir = Path(f"/run/systemd/journal.{self.name}")
        self.socket_path = str(self.runtime_dir / "socket")
        self.dev_log_path = str(self.runtime_dir / "dev-log")
        self.stdout_path = str(self.runtime_dir / "stdout")
        self.path = Path(f"/run/log/journal/{_machine_id()}.{self.name}")
        self.dropin_dir = Path(f"/run/systemd/journald@{self.name}.conf.d")
        self.process: subprocess.Popen | None = None
        self._keepalive: socket.socket | None = None
        self._sender: socket.socket | None = None
        self._workdir: Path | None = None
        self._created_dirs: list[Path] = []
        self._owned = False  # True once start() has claimed the name; stop() deletes only then

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> JournalNamespace:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Write the drop-in, start journald and wait until it takes a client stream."""
        if self.runtime_dir.exists() or self.dropin_dir.exists():
            raise RuntimeError(f"journal namespace {self.name} is already in use")
        self._owned = True
        try:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"jw-journald-{self.name}-"))
            (self._workdir / "renamed_sender.py").write_text(_RENAMED_SENDER)
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            for parent in (Path("/run/log"), Path("/run/log/journal")):
                if not parent.exists():
                    self._created_dirs.append(parent)
            self.dropin_dir.mkdir(parents=True)
            body = "".join(f"{key}={value}\n" for key, value in self.settings.items())
            (self.dropin_dir / "jailwarden-test.conf").write_text("[Journal]\n" + body)
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 10.0) -> None:
        """Stop our journald (SIGTERM, wait for exit) and start it again under the same name."""
        self._terminate()
        self._launch(timeout)

    def stop(self) -> None:
        """Terminate journald and remove its drop-in, runtime directory and journal files."""
        self._terminate()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if not self._owned:
            return
        for tree in (self.dropin_dir, self.runtime_dir, self.path, self._workdir):
            if tree is not None:
                shutil.rmtree(tree, ignore_errors=True)
        for directory in reversed(self._created_dirs):
            try:
                directory.rmdir()  # only if empty: another instance may still use it
            except OSError:
                pass
        self._created_dirs = []
        self._owned = False

    def _launch(self, timeout: float) -> None:
        log = open(self._workdir / "journald.log", "ab")
        with log:
            # start_new_session is what `setsid` does, and leaves us journald's own pid.
            self.process = subprocess.Popen(
                [JOURNALD, self.name], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._keepalive = wait_until(self._connect_stream, f"journald {self.name} to accept a stream", timeout)
        wait_until(lambda: (self.path / "system.journal").exists(), f"{self.path}/system.journal", timeout)

    def _connect_stream(self) -> socket.socket | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"journald {self.name} exited with {self.process.returncode}: {self.journald_log()}")
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stream.connect(self.stdout_path)
        except OSError:  # not there yet, or a stale socket from our previous run
            stream.close()
            return None
        # The stdout-stream header: identifier, unit, priority, level prefix, forward to
        # syslog, kmsg, console. We never write a line, so it never makes an entry.
        stream.sendall(b"jailwarden-test-keepalive\n\n6\n0\n0\n0\n0\n")
        return stream

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None

    def journald_log(self) -> str:
        """What journald itself printed (it logs to stderr when PID 1 is not systemd)."""
        try:
            return (self._workdir / "journald.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    # -- writing ----------------------------------------------------------------------

    def send(self, message: str | bytes, **fields: object) -> None:
        """Send one entry from this process over the native protocol; returns once sent.

        journald adds `_PID`, `_UID`, `_GID`, `_COMM`, `_EXE`, `_CMDLINE`, `_TRANSPORT=journal`.
        A datagram is limited by the socket buffer (~200 KB); larger entries would need a memfd.
        """
        self._sender.sendto(encode_entry(message, fields), self.socket_path)

    def send_renamed(self, comm: str, message: str | bytes, timeout: float = 10.0, **fields: object) -> Entry:
        """Send from a child Python process that renamed itself `comm` (PR_SET_NAME, at most
        15 bytes) and return the stored entry: `_COMM=comm` but `_EXE` is the Python binary."""
        child = subprocess.Popen(
            [sys.executable, str(self._workdir / "renamed_sender.py"), self.socket_path, comm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            datagram = encode_entry(message, fields)
            child.stdin.write(struct.pack("<Q", len(datagram)) + datagram)
            child.stdin.flush()
            if child.stdout.readline() != b"sent\n":
                raise RuntimeError(f"renamed sender failed with {child.wait()}")
            return self.wait_for_entry(lambda entry: entry.get("_PID") == child.pid, timeout)
        finally:
            child.stdin.close()
            child.wait(timeout=10)
            child.stdout.close()

    def send_as_user(
        self, user: str, message: str, tag: str = "sshd", priority: str = "auth.info", timeout: float = 10.0
    ) -> Entry:
        """Log `message` as unprivileged `user` through the namespace's syslog socket
        (`runuser -u USER -- logger -u .../dev-log -t TAG -p PRIORITY`) and return the stored
        entry. The defaults make it look like sshd's own line (SYSLOG_FACILITY=4, PRIORITY=6).

        The dev-log socket is mode 0666, so any user can write to it. logger exits right
        after sending, so `_COMM`/`_EXE`/`_CMDLINE` are sometimes missing from this entry
        (1 in 5 in one run); `_UID`, `_GID` and `_PID` never are.
        """
        uid = pwd.getpwnam(user).pw_uid
        subprocess.run(
            ["runuser", "-u", user, "--", "logger", "-u", self.dev_log_path, "-t", tag, "-p", priority, "--", message],
            check=True,
            timeout=timeout,
        )
        return self.wait_for_entry(
            lambda entry: entry.get("_UID") == uid and entry.get("MESSAGE") == message, timeout
        )

    def run_with_journal_socket(self, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Run a command for which /run/systemd/journal is this namespace's runtime directory
        (a private mount namespace: tmpfs on /run/systemd, the directory moved in), so
        `systemd.journal.send()`, `systemd-cat` and `logger --journald`, which know only the
        default journal's sockets, write here. Nothing changes on the host."""
        mount_point = Path(tempfile.mkdtemp(prefix="jw-journal-socket-", dir=self._workdir))
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _WITH_JOURNAL_SOCKET, "sh",
             str(self.runtime_dir), str(mount_point), *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True, timeout=timeout,
        )

    # -- reading and maintenance ------------------------------------------------------

    def reader(self) -> journal.Reader:
        """A fresh `systemd.journal.Reader` on this namespace only, positioned at the head."""
        return journal.Reader(namespace=self.name)

    def entries(self, match: Match | None = None) -> list[Entry]:
        """All entries in the namespace now, oldest first, optionally filtered."""
        with self.reader() as reader:
            return [entry for entry in reader if match is None or _matches(match, entry)]

    def wait_for_entry(self, match: Match, timeout: float = 5.0) -> Entry:
        """Poll until an entry matches and return it; `match` is a MESSAGE (exact) or a
        predicate on the entry dict. Polls `get_next()` every 5 ms (a wake-up through
        `fileno()` alone lags ~450 ms), and follows new files after a rotation."""
        deadline = time.monotonic() + timeout
        with self.reader() as reader:
            reader.fileno()  # sets up inotify, so process() notices rotated and new files
            while True:
                for entry in _drain(reader):
                    if _matches(match, entry):
                        return entry
                if time.monotonic() > deadline:
                    tail = [entry.get("MESSAGE") for entry in self.entries()][-10:]
                    raise AssertionError(
                        f"no entry matching {match!r} in journal namespace {self.name} "
                        f"within {timeout} s; last messages: {tail}"
                    )
                time.sleep(_POLL)
                reader.process()

    def journal_files(self) -> list[Path]:
        """The namespace's journal files: the active `system.journal` and archived ones."""
        return sorted(self.path.glob("*.journal"))

    def archived_files(self) -> list[Path]:
        return sorted(self.path.glob("system@*.journal"))

    def rotate(self, timeout: float = 10.0) -> None:
        """Archive the active file and start a new one (synchronous, over varlink)."""
        before = set(self.archived_files())
        subprocess.run(
            ["journalctl", f"--namespace={self.name}", "--rotate"], check=True, capture_output=True, timeout=timeout
        )
        wait_until(lambda: set(self.archived_files()) - before, f"an archived file in {self.path}", timeout)

    def vacuum(self, timeout: float = 10.0) -> None:
        """Delete every archived file of this namespace (the active file stays), so entries
        written before the last rotate() are gone. Never touches the default journal."""
        subprocess.run(
            ["journalctl", f"--directory={self.path}", "--vacuum-files=1"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        wait_until(lambda: not self.archived_files(), f"archived files in {self.path} to go", timeout)


def _matches(match: Match, entry: Entry) -> bool:
    return entry.get("MESSAGE") == match if isinstance(match, str) else bool(match(entry))


def _drain(reader: journal.Reader) -> Iterator[Entry]:
    while entry := reader.get_next():
        yield entry
