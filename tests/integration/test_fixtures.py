"""The integration fixtures do what the journal-source and end-to-end tests rely on:
entries land in a private journal with the trusted fields of the real sender, the journal
survives restart, rotation and vacuuming, and a real sshd's failures reach it."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

from systemd import journal

from .conftest import require_root, require_tools
from .journald import JournalNamespace
from .sshd import SshServer


def test_sent_entry_reads_back_with_trusted_fields_of_this_process(journal_namespace):
    journal_namespace.send("jw hello", SYSLOG_IDENTIFIER="sshd", JW_MULTILINE="one\ntwo")

    entry = journal_namespace.wait_for_entry("jw hello")

    assert entry["JW_MULTILINE"] == "one\ntwo"
    assert entry["SYSLOG_IDENTIFIER"] == "sshd"
    assert entry["_TRANSPORT"] == "journal"
    assert entry["_NAMESPACE"] == journal_namespace.name
    assert (entry["_PID"], entry["_UID"]) == (os.getpid(), 0)
    assert entry["_EXE"] == os.path.realpath(sys.executable)
    assert entry["_COMM"] == Path("/proc/self/comm").read_text().strip()
    with journal.Reader(path=str(journal_namespace.path)) as by_path:
        assert "jw hello" in [e.get("MESSAGE") for e in by_path]


def test_restart_keeps_earlier_entries_readable(journal_namespace):
    journal_namespace.send("jw before restart")
    journal_namespace.wait_for_entry("jw before restart")
    first_pid = journal_namespace.process.pid

    journal_namespace.restart()
    journal_namespace.send("jw after restart")
    journal_namespace.wait_for_entry("jw after restart")

    assert journal_namespace.process.pid != first_pid
    messages = [entry.get("MESSAGE") for entry in journal_namespace.entries()]
    assert messages.index("jw before restart") < messages.index("jw after restart")


def test_rotate_archives_and_vacuum_deletes_older_entries(journal_namespace):
    journal_namespace.send("jw old")
    journal_namespace.wait_for_entry("jw old")

    journal_namespace.rotate()
    assert len(journal_namespace.archived_files()) == 1
    journal_namespace.send("jw new")
    journal_namespace.wait_for_entry("jw new")
    journal_namespace.vacuum()

    messages = [entry.get("MESSAGE") for entry in journal_namespace.entries()]
    assert "jw new" in messages and "jw old" not in messages
    assert journal_namespace.journal_files() == [journal_namespace.path / "system.journal"]


def test_wait_for_entry_follows_a_rotation_while_waiting(journal_namespace):
    with journal_namespace.reader() as reader:
        reader.fileno()
        journal_namespace.rotate()
        journal_namespace.send("jw in the new file")
        assert journal_namespace.wait_for_entry("jw in the new file")["MESSAGE"] == "jw in the new file"


def test_renamed_sender_claims_comm_sshd_but_not_sshds_executable(journal_namespace):
    entry = journal_namespace.send_renamed("sshd", "Failed password for root from 203.0.113.9 port 22 ssh2",
                                           SYSLOG_IDENTIFIER="sshd")

    assert entry["_COMM"] == "sshd"
    assert entry["_EXE"] == os.path.realpath(sys.executable)
    assert entry["_UID"] == 0
    assert entry["_TRANSPORT"] == "journal"


def test_unprivileged_logger_entry_carries_the_users_uid(journal_namespace, unprivileged_user):
    forged = "Failed password for root from 203.0.113.8 port 22 ssh2"
    entry = journal_namespace.send_as_user(unprivileged_user.name, forged)

    assert entry["_UID"] == unprivileged_user.uid != 0
    assert entry["SYSLOG_IDENTIFIER"] == "sshd"
    assert (entry["_TRANSPORT"], entry["SYSLOG_FACILITY"], entry["PRIORITY"]) == ("syslog", 4, 6)
    assert entry.get("_EXE") != "/usr/sbin/sshd"


def test_real_sshd_failure_reaches_the_namespace_journal_from_sshd(sshd_server, journal_namespace):
    server = sshd_server
    btmp = Path("/var/log/btmp")
    host_btmp = btmp.stat().st_mtime_ns if btmp.exists() else None

    assert server.attempt(password="wrong") is False
    failed = re.compile(rf"Failed password for {server.user.name} from {re.escape(server.attacker_address)} "
                        r"port \d+ ssh2\Z")
    entry = journal_namespace.wait_for_entry(lambda e: failed.match(e.get("MESSAGE", "")), timeout=10)

    assert entry["_EXE"] == "/usr/sbin/sshd"
    assert entry["_COMM"] == "sshd"
    assert entry["_UID"] == 0
    assert entry["_TRANSPORT"] == "syslog"
    assert entry["SYSLOG_IDENTIFIER"] == "sshd"
    assert entry["SYSLOG_FACILITY"] == 4  # AUTH
    assert server.attempt(password=server.password) is True
    assert (btmp.stat().st_mtime_ns if btmp.exists() else None) == host_btmp  # sshd's /var/log is private


def test_sshd_mounts_stay_private_and_teardown_removes_everything():
    require_root()
    host_paths = {path: os.path.lexists(path) for path in ("/dev/log", "/run/sshd", "/run/mount")}
    with JournalNamespace() as namespace:
        with SshServer(namespace) as server:
            sshd_mounts = Path(f"/proc/{server.pid}/mountinfo").read_text()
            assert f"jwdev-{server.id}" in sshd_mounts and f"jwrun-{server.id}" in sshd_mounts
            assert f"jwdev-{server.id}" not in Path("/proc/self/mountinfo").read_text()
            assert {path: os.path.lexists(path) for path in host_paths} == host_paths
            created = (server.workdir, server.user.name, server.server_netns, server.attacker_netns, server.pid)

    workdir, user, server_netns, attacker_netns, sshd_pid = created
    assert not workdir.exists()
    assert user not in [entry.pw_name for entry in pwd.getpwall()]
    assert user not in Path("/etc/passwd-").read_text()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert server_netns not in netns and attacker_netns not in netns
    assert not Path(f"/proc/{sshd_pid}").exists()
    assert not namespace.runtime_dir.exists() and not namespace.path.exists() and not namespace.dropin_dir.exists()
    assert server_netns not in Path("/proc/self/mountinfo").read_text()


def test_sshd_without_pam_fails_fast_and_keeps_logging_across_a_journald_restart(journal_namespace):
    require_tools("/usr/sbin/sshd", "ssh", "sshpass", "ssh-keygen", "ip", "unshare", "chpasswd")
    with SshServer(journal_namespace, use_pam=False) as server:
        failed = f"Failed password for {server.user.name} from {server.attacker_address} port "

        started = time.monotonic()
        assert server.attempt() is False
        assert time.monotonic() - started < 1.5
        first = journal_namespace.wait_for_entry(lambda e: e.get("MESSAGE", "").startswith(failed))

        journal_namespace.restart()
        assert server.attempt() is False
        journal_namespace.wait_for_entry(
            lambda e: e.get("MESSAGE", "").startswith(failed) and e["_PID"] != first["_PID"])
