"""hosts.deny backend: the administrator's lines stay byte for byte, the file is replaced
atomically, entries are what libwrap understands, and ban ends survive in the file.

Every test works on a file under tmp_path; /etc/hosts.deny is never read or written (the libwrap
checks point the library's table variables at the test's files first)."""

import ctypes
import ctypes.util
import fcntl
import ipaddress
import logging
import os
import stat
import threading
import time

import pytest

from firewall import BackendError, backend_class
from firewall import hostsdeny as module
from firewall.hostsdeny import HostsDenyBackend

ADMIN_TEXT = (b"# /etc/hosts.deny: list of hosts that are _not_ allowed to access the system.\n"
              b"#\n"
              b"ALL: PARANOID\n"
              b"vsftpd: 203.0.113.66 \t\n"
              b"in.telnetd: .example.org\r\n"  # an editor's CRLF line
              b"\n"
              b"# caf\xe9, not UTF-8\n"
              b"portmap: 198.51.100.0/255.255.255.0")  # and no newline at the end

V4 = ipaddress.ip_address("192.0.2.1")
V6 = ipaddress.ip_address("2001:db8::1")
NET4 = ipaddress.ip_network("198.51.100.0/24")
NET6 = ipaddress.ip_network("2001:db8:1::/48")


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def hosts_deny(tmp_path):
    path = tmp_path / "hosts.deny"
    path.write_bytes(ADMIN_TEXT)
    return path


def backend(path, jail="sshd", clock=None, **options):
    return HostsDenyBackend(jail, path=path, daemons=options.pop("daemons", "sshd"), clock=clock or Clock(), **options)


def block_of(path, jail="sshd"):
    text = path.read_bytes()
    start = text.index(f"# BEGIN jailwarden {jail}".encode())
    end = text.index(f"# END jailwarden {jail}\n".encode())
    return text[start:end].decode()


def test_registered_as_hostsdeny():
    assert backend_class("hostsdeny") is HostsDenyBackend


def test_administrator_lines_stay_byte_for_byte_through_setup_bans_and_teardown(hosts_deny):
    jail = backend(hosts_deny)
    jail.setup()
    jail.ban_many([(V4, 600), (V6, None), (NET4, 60), (NET6, 60)])
    jail.unban(V6)
    written = hosts_deny.read_bytes()
    # The unterminated last line gets the newline it needs to stay a line of its own, and no more.
    assert written.startswith(ADMIN_TEXT + b"\n# BEGIN jailwarden sshd")
    assert written.endswith(b"# END jailwarden sshd\n")

    jail.teardown()
    assert hosts_deny.read_bytes() == ADMIN_TEXT


def test_lines_an_administrator_adds_around_the_block_are_kept(hosts_deny):
    jail = backend(hosts_deny)
    jail.setup()
    jail.ban(V4, 600)
    with open(hosts_deny, "ab") as file:  # echo 'ALL: 203.0.113.9' >> /etc/hosts.deny
        file.write(b"ALL: 203.0.113.9\n")
    hosts_deny.write_bytes(b"# added on top\n" + hosts_deny.read_bytes())
    jail.ban(V6, 600)
    jail.teardown()
    assert hosts_deny.read_bytes() == b"# added on top\n" + ADMIN_TEXT + b"\nALL: 203.0.113.9\n"


def test_every_write_replaces_the_file_atomically_keeping_mode_and_owner(hosts_deny):
    os.chmod(hosts_deny, 0o640)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(hosts_deny, *owner)
    jail = backend(hosts_deny)
    jail.setup()
    for target in (V4, V6):
        before = os.stat(hosts_deny).st_ino
        jail.ban(target, 600)
        after = os.stat(hosts_deny)
        assert after.st_ino != before  # a new file renamed over the old: readers see old or new, never half
        assert stat.S_IMODE(after.st_mode) == 0o640
        assert (after.st_uid, after.st_gid) == owner
    assert sorted(os.listdir(hosts_deny.parent)) == ["hosts.deny", "hosts.deny.jailwarden.lock"]  # no temp file


def test_a_failed_write_leaves_the_file_and_no_temp_file(hosts_deny, monkeypatch):
    jail = backend(hosts_deny)
    jail.setup()
    original = hosts_deny.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.os, "fsync", disk_full)
    with pytest.raises(BackendError, match="No space left on device"):
        jail.ban(V4, 600)
    assert hosts_deny.read_bytes() == original
    assert not [name for name in os.listdir(hosts_deny.parent) if name.endswith(".tmp")]


def test_setup_creates_a_missing_file_with_mode_0644(tmp_path):
    path = tmp_path / "hosts.deny"
    old_umask = os.umask(0o077)
    try:
        backend(path).setup()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert path.read_bytes().startswith(b"# BEGIN jailwarden sshd\n")
    backend(path).teardown()
    assert path.read_bytes() == b""  # the file stays: an empty hosts.deny denies nothing


def test_setup_twice_writes_once_and_keeps_one_block(hosts_deny):
    jail = backend(hosts_deny)
    jail.setup()
    first = os.stat(hosts_deny)
    jail.setup()
    again = os.stat(hosts_deny)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert hosts_deny.read_bytes().count(b"# BEGIN jailwarden sshd") == 1


def test_setup_after_a_crash_adopts_the_block_with_its_ends(hosts_deny):
    clock = Clock()
    first = backend(hosts_deny, clock=clock)
    first.setup()
    first.ban_many([(V4, 600), (NET6, None)])
    del first  # the agent dies; the file is all that is left

    clock.now += 100
    restarted = backend(hosts_deny, clock=clock)
    restarted.setup()
    assert restarted.list() == {V4: 500.0, NET6: None}


@pytest.mark.parametrize("text, where", [
    (b"# BEGIN jailwarden sshd\nsshd: 192.0.2.1\n", "BEGIN at line 3"),
    (b"sshd: 192.0.2.1\n# END jailwarden sshd\n", "END at line 4"),
    (b"# END jailwarden sshd\n# BEGIN jailwarden sshd\n", "END at line 3, BEGIN at line 4"),
    (b"# BEGIN jailwarden sshd\n# END jailwarden sshd\n# BEGIN jailwarden sshd\n# END jailwarden sshd\n",
     "BEGIN at line 3, END at line 4, BEGIN at line 5, END at line 6"),
    (b"# BEGIN jailwarden sshd\nsshd: 192.0.2.1\nsshd: host.example.org\n# END jailwarden sshd\n", "line 5"),
])
def test_a_malformed_block_is_refused_saying_where_and_the_file_is_untouched(tmp_path, text, where):
    path = tmp_path / "hosts.deny"
    path.write_bytes(b"# admin\nALL: PARANOID\n" + text)
    before = os.stat(path)
    jail = backend(path)
    for operation in (jail.setup, lambda: jail.ban(V4, 60), jail.list, jail.teardown):
        with pytest.raises(BackendError) as raised:
            operation()
        assert where in str(raised.value) and str(path) in str(raised.value)
    after = os.stat(path)
    assert path.read_bytes() == b"# admin\nALL: PARANOID\n" + text
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_blocks_of_other_jails_are_outside_text(hosts_deny):
    sshd, ftp = backend(hosts_deny, "sshd"), backend(hosts_deny, "sshd-ftp", daemons="vsftpd, proftpd")
    sshd.setup()
    ftp.setup()
    sshd.ban(V4, 600)
    ftp.ban(V6, 600)
    assert "vsftpd, proftpd: [2001:db8::1]" in block_of(hosts_deny, "sshd-ftp")
    sshd.teardown()
    assert b"jailwarden sshd\n" not in hosts_deny.read_bytes()
    assert ftp.list() == {V6: 600.0}
    ftp.teardown()
    # The newline the first block gave the unterminated last line is taken back only by that
    # block and only while it is last in the file; here text followed it, so the line keeps it.
    assert hosts_deny.read_bytes() == ADMIN_TEXT + b"\n"


def target_of(text):
    return ipaddress.ip_network(text) if "/" in text else ipaddress.ip_address(text)


@pytest.mark.parametrize("target, line, listed", [
    ("192.0.2.1", "sshd: 192.0.2.1", "192.0.2.1"),
    ("198.51.100.0/24", "sshd: 198.51.100.0/255.255.255.0", "198.51.100.0/24"),
    ("192.0.2.7/32", "sshd: 192.0.2.7", "192.0.2.7"),  # 255.255.255.255 is no valid mask in hosts_access(5)
    ("2001:db8::1", "sshd: [2001:db8::1]", "2001:db8::1"),
    ("2001:DB8:0:0::2", "sshd: [2001:db8::2]", "2001:db8::2"),
    ("2001:db8::/32", "sshd: [2001:db8::]/32", "2001:db8::/32"),
    ("2001:db8::5/128", "sshd: [2001:db8::5]", "2001:db8::5"),
    ("::ffff:192.0.2.9", "sshd: 192.0.2.9", "192.0.2.9"),
])
def test_entries_use_hosts_access_syntax(hosts_deny, target, line, listed):
    jail = backend(hosts_deny)
    jail.ban(target_of(target), None)
    assert line in block_of(hosts_deny).splitlines()
    assert jail.list() == {target_of(listed): None}


def test_entries_written_by_hand_in_the_other_forms_are_read(tmp_path):
    path = tmp_path / "hosts.deny"
    path.write_bytes(b"# BEGIN jailwarden sshd\r\n"
                     b"ALL : 198.51.100.0/24\r\n"
                     b"sshd:[2001:DB8:1::]/48\n"
                     b"# until 1700000100\n"
                     b"sshd,vsftpd: 192.0.2.1\n"
                     b"# END jailwarden sshd\n")
    assert backend(path).list() == {NET4: None, NET6: None, V4: 100.0}


class Libwrap:
    """Debian's libwrap0 asked directly, with its tables pointed at the test's files."""

    def __init__(self, deny, allow):
        name = ctypes.util.find_library("wrap")
        if name is None:
            pytest.skip("libwrap (Debian package libwrap0) is not installed")
        self.lib = ctypes.CDLL(name)
        self._tables = [ctypes.create_string_buffer(os.fsencode(deny)), ctypes.create_string_buffer(os.fsencode(allow))]
        for variable, table in zip(("hosts_deny_table", "hosts_allow_table"), self._tables, strict=True):
            ctypes.c_void_p.in_dll(self.lib, variable).value = ctypes.addressof(table)
        self.lib.hosts_ctl.argtypes = [ctypes.c_char_p] * 4

    def allows(self, daemon, address):
        return self.lib.hosts_ctl(daemon.encode(), b"unknown", str(address).encode(), b"unknown") == 1


def test_libwrap_denies_exactly_what_the_block_lists(tmp_path):
    path = tmp_path / "hosts.deny"
    path.write_bytes(b"# nothing denied by the administrator\n")
    libwrap = Libwrap(path, tmp_path / "hosts.allow-missing")
    inside = {"192.0.2.1": V4, "198.51.100.77": NET4, "2001:db8::1": V6, "2001:db8:1:ffff::9": NET6}
    outside = ["192.0.2.2", "198.51.101.1", "2001:db8::2", "2001:db8:2::1"]
    jail = backend(path)
    jail.setup()
    assert all(libwrap.allows("sshd", address) for address in [*inside, *outside])

    jail.ban_many([(V4, 600), (NET4, None), (V6, 600), (NET6, 600)])
    assert [address for address in inside if libwrap.allows("sshd", address)] == []
    assert all(libwrap.allows("sshd", address) for address in outside)
    assert libwrap.allows("vsftpd", "192.0.2.1")  # daemons = "sshd" only

    for target in inside.values():
        jail.unban(target)
    assert all(libwrap.allows("sshd", address) for address in inside)


def test_list_reports_seconds_left_and_none_for_permanent(hosts_deny):
    clock = Clock()
    jail = backend(hosts_deny, clock=clock)
    jail.setup()
    jail.ban_many([(V4, 600), (V6, 30.5), (NET4, None)])
    assert jail.list() == {V4: 600.0, V6: 30.5, NET4: None}
    assert "# until 1700000600 = 2023-11-14 22:23:20 UTC\nsshd: 192.0.2.1\n" in block_of(hosts_deny)

    clock.now += 60
    assert jail.list() == {V4: 540.0, V6: 0.0, NET4: None}  # ended but still in the file: it still denies
    jail.ban(V4, 60)  # a new ban replaces the end
    assert jail.list() == {V4: 60.0, NET4: None}  # and the write dropped the ended entry


def test_list_only_reads(hosts_deny):
    clock = Clock()
    jail = backend(hosts_deny, clock=clock)
    jail.ban(V4, 10)
    clock.now += 20
    written = os.stat(hosts_deny)
    assert jail.list() == {V4: 0.0}
    assert os.stat(hosts_deny).st_mtime_ns == written.st_mtime_ns
    jail.setup()  # the next start drops it
    assert jail.list() == {}


def test_unban_removes_only_its_entry_and_unbanning_again_is_quiet(hosts_deny):
    jail = backend(hosts_deny)
    jail.ban_many([(V4, 600), (V6, 600)])
    jail.unban(V4)
    written = os.stat(hosts_deny).st_ino
    jail.unban(V4)
    assert os.stat(hosts_deny).st_ino == written  # nothing to change, nothing written
    assert jail.list() == {V6: 600.0}


def test_ban_many_of_10000_addresses_is_one_write(tmp_path, monkeypatch):
    path = tmp_path / "hosts.deny"
    path.write_bytes(ADMIN_TEXT)
    renames = []
    monkeypatch.setattr(module.os, "replace", lambda *paths: (renames.append(paths), os.rename(*paths)))
    jail = backend(path)
    jail.setup()
    items = [(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + n), 3600) for n in range(5000)]
    items += [(ipaddress.IPv6Address(int(V6) + (n << 16)), None) for n in range(5000)]
    renames.clear()
    start = time.perf_counter()
    jail.ban_many(items)
    elapsed = time.perf_counter() - start
    print(f"ban_many of 10,000 to hosts.deny: {elapsed * 1000:.0f} ms in {len(renames)} write(s)")
    assert len(renames) == 1
    assert elapsed < 2.0  # ~40 ms here
    assert len(jail.list()) == 10_000
    start = time.perf_counter()
    jail.ban(V4, 60)
    print(f"one more ban into a block of 10,000: {(time.perf_counter() - start) * 1000:.0f} ms")
    jail.teardown()
    assert path.read_bytes() == ADMIN_TEXT


def test_ban_many_skips_bad_items_naming_them_and_bans_the_rest(hosts_deny, caplog):
    jail = backend(hosts_deny)
    with caplog.at_level(logging.WARNING, "jailwarden.firewall"):
        jail.ban_many([(V4, 600), ("192.0.2.99", 600), (V6, -5), (NET4, None)])
    assert jail.list() == {V4: 600.0, NET4: None}
    assert "2 of 4 bans skipped" in caplog.text and "'192.0.2.99'" in caplog.text and "-5" in caplog.text
    with pytest.raises(BackendError, match="not an ipaddress"):
        jail.ban("192.0.2.99", 600)


def test_two_agents_editing_at_once_lose_nothing(hosts_deny):
    jails = [backend(hosts_deny, "sshd"), backend(hosts_deny, "sshd"), backend(hosts_deny, "other")]
    targets = [[ipaddress.IPv4Address(int(V4) + 100 * worker + n) for n in range(30)] for worker in range(3)]

    def work(jail, mine):
        for target in mine:
            jail.ban(target, 600)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(jails, targets, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(jails[0].list()) == set(targets[0] + targets[1])
    assert set(jails[2].list()) == set(targets[2])
    assert hosts_deny.read_bytes().startswith(ADMIN_TEXT)


@pytest.mark.parametrize("style", ["append", "editor"])
def test_an_administrator_edit_during_our_write_is_kept(hosts_deny, monkeypatch, style):
    jail = backend(hosts_deny)
    jail.setup()
    real_mkstemp = module.tempfile.mkstemp
    edits = []

    def edit_while_we_write(**kwargs):
        if not edits:  # once: between our read and our rename
            edits.append(style)
            if style == "append":
                with open(hosts_deny, "ab") as file:
                    file.write(b"ALL: 203.0.113.50\n")
            else:  # an editor saving by rename
                new = hosts_deny.with_name("hosts.deny.swp")
                new.write_bytes(b"ALL: 203.0.113.50\n" + hosts_deny.read_bytes())
                os.replace(new, hosts_deny)
        return real_mkstemp(**kwargs)

    monkeypatch.setattr(module.tempfile, "mkstemp", edit_while_we_write)
    jail.ban(V4, 600)
    assert b"ALL: 203.0.113.50\n" in hosts_deny.read_bytes()
    assert jail.list() == {V4: 600.0}


def test_a_lock_held_elsewhere_fails_with_a_clear_error(hosts_deny):
    with open(f"{hosts_deny}.jailwarden.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(BackendError, match="locked by another process"):
            backend(hosts_deny, lock_timeout=0.2).ban(V4, 60)
    backend(hosts_deny).ban(V4, 60)


def test_setup_removes_a_temp_file_left_by_a_crash(hosts_deny):
    stale = hosts_deny.with_name(".hosts.deny.jailwarden-abc123.tmp")
    stale.write_bytes(b"half a file")
    backend(hosts_deny).setup()
    assert not stale.exists()


def test_a_symlinked_file_is_edited_through_the_link(tmp_path, hosts_deny):
    link = tmp_path / "link.deny"
    link.symlink_to(hosts_deny)
    jail = backend(link)
    jail.setup()
    jail.ban(V4, 60)
    assert link.is_symlink()
    assert b"sshd: 192.0.2.1\n" in hosts_deny.read_bytes()


def test_a_missing_directory_is_reported_with_what_to_do(tmp_path):
    with pytest.raises(BackendError, match="directory does not exist"):
        backend(tmp_path / "nowhere" / "hosts.deny").setup()


@pytest.mark.parametrize("options", [{"jail": "ssh d"}, {"daemons": "sshd: ALL"}, {"daemons": "sshd # x"},
                                     {"daemons": ""}])
def test_names_that_would_break_the_file_are_refused(tmp_path, options):
    with pytest.raises(BackendError):
        HostsDenyBackend(options.pop("jail", "sshd"), path=tmp_path / "hosts.deny", **options)
