"""A real OpenSSH server in a network namespace, attacked from a second namespace, logging
into a test journal namespace; and temporary local users for it and for forged log lines.

Layout (all names and the 10.250.X.0/24 subnet are random per instance):

    netns jw-atk-ID  [veth .2] ---- [veth .1]  netns jw-srv-ID: /usr/sbin/sshd -D

sshd calls syslog(3), which writes to the hard-coded /dev/log. The host has no /dev/log
and we must not create one, so sshd runs in its own mount namespace (`unshare --mount
--propagation private`, inside `ip netns exec`) where:

- /dev is a small tmpfs with bind mounts of null, zero, full, random, urandom and tty, a
  devpts instance of its own at /dev/pts (/dev/ptmx a link into it, so a session can have
  a pty), the journal namespace's runtime directory bind-mounted at /dev/.journal and
  `/dev/log -> .journal/dev-log`. Binding the directory rather than the socket keeps
  /dev/log working across a journald restart: journald re-creates the socket, and a
  bind mount of the old socket file silently stops delivering (checked).
- /run is a tmpfs holding /run/sshd (the privilege-separation chroot), so the host needs
  no /run/sshd and pam_motd's /run/motd.dynamic stays private, and an empty /run/utmp, in
  which sshd records the sessions it opens (the host's /proc/PID/root/run/utmp shows it).
- /var/log is a tmpfs, so sshd's failed-login records (btmp) do not land in the host's
  /var/log/btmp (they did, before this was added).

Propagation is private, so none of these mounts shows up on the host (the tests check
the host's /proc/self/mountinfo). OpenSSH here is 9.2 (Debian 12): there is no
sshd-session binary, so every entry comes from `_EXE=/usr/sbin/sshd`.

Measured: start() (namespaces, veth, user, host key, sshd up and "Server listening"
in the journal) takes ~0.1 s. With UsePAM yes a failed password attempt takes 2.4-2.9 s,
because pam_unix delays a failure by ~2 s before sshd logs `Failed password`
(attempts(4) in parallel: 4.7 s); with `use_pam=False` it takes ~0.2 s and logs the same
`Failed password` line, without the pam_unix lines. A successful login takes ~0.3 s.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .journald import JournalNamespace

SSHD = "/usr/sbin/sshd"
NETNS_DIR = Path("/run/netns")

# Runs as `sh -s -- WORKDIR JOURNAL_RUNTIME_DIR ID` in sshd's private mount namespace.
# mount -n: do not record these mounts in the host's /run/mount/utab.
_PRIVATE_MOUNTS_THEN_SSHD = r"""
set -eu
work=$1 journal_dir=$2 id=$3
stage=$work/dev
mkdir "$stage"
mount -n -t tmpfs -o mode=0755,nosuid,size=1m "jwdev-$id" "$stage"
for node in null zero full random urandom tty; do
    : > "$stage/$node"
    mount -n --bind "/dev/$node" "$stage/$node"
done
mkdir "$stage/pts" "$stage/.journal"
# A devpts of its own, with /dev/ptmx leading into it: a session's pty is allocated there.
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 "jwpts-$id" "$stage/pts"
ln -s pts/ptmx "$stage/ptmx"
mount -n --bind "$journal_dir" "$stage/.journal"
ln -s .journal/dev-log "$stage/log"
ln -s /proc/self/fd "$stage/fd"
mount -n --move "$stage" /dev
mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=1m "jwrun-$id" /run
mkdir -m 0755 /run/sshd
: > /run/utmp  # glibc records sessions only in an existing utmp; this one is sshd's alone
mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=1m "jwlog-$id" /var/log
exec /usr/sbin/sshd -D -f "$work/sshd_config"
"""


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)


def _is_mount_point(path: Path) -> bool:
    # os.path.ismount() misses a bind mount of a directory onto itself, which is what
    # `ip netns add` makes of /run/netns.
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(path) for line in mountinfo)


class TemporaryUser:
    """A system user with a private group and no home directory, deleted on exit.

    Removes its own lines from the shadow-utils backups (/etc/passwd- etc.) too, which
    userdel leaves holding the deleted user.
    """

    def __init__(self, prefix: str = "jwuser", password: str | None = None, shell: str = "/bin/sh"):
        self.name = prefix + secrets.token_hex(3)
        self.password = password
        self.shell = shell
        self.uid: int | None = None
        self.gid: int | None = None
        self._created = False

    def __enter__(self) -> TemporaryUser:
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.delete()

    def create(self) -> None:
        try:
            _run("useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", self.shell, self.name)
            self._created = True
            if self.password is not None:
                subprocess.run(["chpasswd"], input=f"{self.name}:{self.password}\n", text=True, check=True)
            entry = pwd.getpwnam(self.name)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        if not self._created:
            return
        subprocess.run(["userdel", self.name], capture_output=True, check=True)
        self._created = False
        for backup in ("/etc/passwd-", "/etc/shadow-", "/etc/group-", "/etc/gshadow-"):
            _drop_lines(Path(backup), f"{self.name}:")


def _drop_lines(path: Path, prefix: str) -> None:
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return
    kept = [line for line in lines if not line.startswith(prefix)]
    if kept != lines:
        stat = path.stat()
        temporary = path.with_name(path.name + ".jwtmp")
        temporary.write_text("".join(kept))
        os.chown(temporary, stat.st_uid, stat.st_gid)
        os.chmod(temporary, stat.st_mode)
        os.replace(temporary, path)


class SshServer:
    """sshd in namespace `server_netns`, reachable from `attacker_netns`, logging to `journal`.

    Attributes: `server_address`, `attacker_address` (strings), `port`, `user` (a
    TemporaryUser whose password is `password`), `pid` (sshd's listener), `workdir`.
    """

    def __init__(self, journal: JournalNamespace, password: str = "correct-horse", use_pam: bool = True):
        self.journal = journal
        self.password = password
        self.use_pam = use_pam
        self.id = secrets.token_hex(3)
        self.server_netns = f"jw-srv-{self.id}"
        self.attacker_netns = f"jw-atk-{self.id}"
        subnet = 1 + secrets.randbelow(254)
        self.server_address = f"10.250.{subnet}.1"
        self.attacker_address = f"10.250.{subnet}.2"
        self.port = 22
        self.user = TemporaryUser("jwvictim", password=password)
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        self._netns_dir_existed = NETNS_DIR.exists()
        self._netns_mount_existed = _is_mount_point(NETNS_DIR)
        self._namespaces: list[str] = []

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"jw-sshd-{self.id}-"))
            self._create_network()
            self.user.create()
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.workdir / "host_ed25519_key"))
            (self.workdir / "sshd_config").write_text(self._config())
            self._start_sshd(timeout)
        except BaseException:
            self.stop()
            raise

    def _create_network(self) -> None:
        server_link, attacker_link = f"jw{self.id}s", f"jw{self.id}a"
        for netns in (self.server_netns, self.attacker_netns):
            _run("ip", "netns", "add", netns)
            self._namespaces.append(netns)
        _run("ip", "link", "add", server_link, "netns", self.server_netns,
             "type", "veth", "peer", "name", attacker_link, "netns", self.attacker_netns)
        for netns, link, address in ((self.server_netns, server_link, self.server_address),
                                     (self.attacker_netns, attacker_link, self.attacker_address)):
            _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", link)
            _run("ip", "-n", netns, "link", "set", link, "up")
            _run("ip", "-n", netns, "link", "set", "lo", "up")

    def _config(self) -> str:
        return f"""\
ListenAddress {self.server_address}
Port {self.port}
HostKey {self.workdir}/host_ed25519_key
PidFile {self.workdir}/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
AuthorizedKeysFile none
PermitRootLogin no
UsePAM {"yes" if self.use_pam else "no"}
SyslogFacility AUTH
LogLevel INFO
PrintMotd no
MaxStartups 100
MaxAuthTries 6
LoginGraceTime 30
"""

    def _start_sshd(self, timeout: float) -> None:
        stderr = open(self.workdir / "sshd.stderr", "wb")
        with stderr:
            # ip netns exec, unshare, sh and sshd each exec the next: Popen's pid is sshd's.
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.server_netns, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", _PRIVATE_MOUNTS_THEN_SSHD, "sh", str(self.workdir), str(self.journal.runtime_dir),
                 self.id],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True,
            )
        self.pid = self.process.pid
        listening = f"Server listening on {self.server_address} port {self.port}."
        deadline = time.monotonic() + timeout
        while not self.journal.entries(lambda e: e.get("_PID") == self.pid and e.get("MESSAGE") == listening):
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd did not log {listening!r} within {timeout} s: {self.stderr()}")
            time.sleep(0.01)

    def stderr(self) -> str:
        return (self.workdir / "sshd.stderr").read_text(errors="replace")

    def attempt(self, user: str | None = None, password: str = "wrong", timeout: float = 30) -> bool:
        """One password login from the attacker namespace running `true`; True if it got in.
        One attempt makes one password check (NumberOfPasswordPrompts=1)."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.attacker_netns, "sshpass", "-p", password, "ssh",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
             "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=5", "-p", str(self.port),
             f"{user or self.user.name}@{self.server_address}", "true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        )
        return result.returncode == 0

    def attempts(self, count: int, user: str | None = None, password: str = "wrong") -> list[bool]:
        """`count` attempts at once, each its own connection (a failure costs ~2.9 s, mostly
        pam_unix's delay, so parallel attempts keep tests short)."""
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(lambda _: self.attempt(user, password), range(count)))

    def stop(self) -> None:
        """Kill sshd (by its pid file) and everything left in the server namespace, delete
        both namespaces, the user and the work directory."""
        self._kill_sshd()
        for netns in self._namespaces:
            self._kill_namespace_processes(netns)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self._namespaces = []
        self._release_netns_dir()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.user.delete()  # last: it raises if userdel fails, e.g. a process of the user survived

    def _kill_sshd(self) -> None:
        pid_file = self.workdir / "sshd.pid" if self.workdir else None
        if pid_file is not None and pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()  # no pid file yet: sshd did not get that far
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    @staticmethod
    def _kill_namespace_processes(netns: str) -> None:
        # Per-connection sshd children outlive the listener until their client goes away.
        listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        for pid in listed.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.strip():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)

    def _release_netns_dir(self) -> None:
        # `ip netns add` turns /run/netns into a shared bind mount and leaves it there.
        # Undo that only if it was not there before and no one else has a namespace in it.
        if self._netns_mount_existed or not NETNS_DIR.exists() or any(NETNS_DIR.iterdir()):
            return
        # -n: umount would otherwise create the host's /run/mount/utab.
        if _is_mount_point(NETNS_DIR) and subprocess.run(["umount", "-n", str(NETNS_DIR)]).returncode != 0:
            return
        if not self._netns_dir_existed:
            try:
                NETNS_DIR.rmdir()
            except OSError:
                pass
