"""The sqlite store: what is committed comes back after a restart, exactly and all-or-nothing."""

import ipaddress
import json
import math
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import state
from agent.bans import Ban
from agent.sources.journal import Position
from agent.store import VERSION, Changes, Store, StoreError

REPO = Path(__file__).resolve().parents[2]
V4 = ipaddress.ip_address("192.0.2.7")
V6 = ipaddress.ip_address("2001:db8::9")
OTHER = ipaddress.ip_address("198.51.100.3")


def ban(address, jail="sshd", start=1000.0, end=4600.0, offence=1, reason="5 sshd failures"):
    return Ban(jail, address, start, end, offence, reason)


def bans_changes(*bans):
    return Changes(bans={(b.jail, b.address): b for b in bans})


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "jailwarden.db"


@pytest.fixture
def store(path):
    store = Store(path)
    yield store
    store.close()


def reopen(store, path, now=2000.0):
    store.close()
    fresh = Store(path)
    try:
        return fresh.load(now)
    finally:
        fresh.close()


def test_bans_come_back_exactly_after_a_restart(store, path):
    saved = [ban(V4), ban(V6, jail="nginx", start=1000.25, end=1e9 + 0.5, offence=3),
             ban(OTHER, end=math.inf, reason="manual")]
    store.commit(bans_changes(*saved))

    loaded = reopen(store, path)
    assert sorted(loaded.bans, key=str) == sorted(saved, key=str)
    assert loaded.ended == [] and loaded.history == []
    assert {type(b.address) for b in loaded.bans} == {ipaddress.IPv4Address, ipaddress.IPv6Address}
    assert [b for b in loaded.bans if b.address == OTHER][0].permanent


def test_permanent_ban_is_stored_without_an_end(store, path):
    store.commit(bans_changes(ban(V4, end=math.inf)))
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT ends FROM bans").fetchall() == [(None,)]


def test_bans_that_ended_while_the_agent_was_down_come_back_as_ended(store, path):
    store.commit(bans_changes(ban(V4, end=1500.0), ban(V6, end=2000.0), ban(OTHER, end=2500.0)))

    loaded = reopen(store, path, now=2000.0)
    assert [b.address for b in loaded.bans] == [OTHER]
    assert {b.address for b in loaded.ended} == {V4, V6}


def test_lifted_ban_leaves_the_active_bans_and_enters_the_history(store, path):
    store.commit(bans_changes(ban(V4, offence=2), ban(V6)))
    store.commit(Changes(lifted={("sshd", V4): (2, 1800.0)}))

    loaded = reopen(store, path)
    assert [b.address for b in loaded.bans] == [V6]
    assert loaded.history == [("sshd", V4, 2, 1800.0)]


def test_history_keeps_the_latest_release_of_each_address(store, path):
    store.commit(Changes(lifted={("sshd", V4): (1, 1000.0)}))
    store.commit(Changes(lifted={("sshd", V4): (2, 3000.0), ("nginx", V4): (1, 1500.0)}))

    assert reopen(store, path).history == [("nginx", V4, 1, 1500.0), ("sshd", V4, 2, 3000.0)]


def test_history_comes_back_oldest_release_first(store, path):
    store.commit(Changes(lifted={("sshd", V4): (1, 3000.0), ("sshd", V6): (1, 1000.0), ("app", V4): (1, 2000.0)}))

    assert [released for *_, released in reopen(store, path).history] == [1000.0, 2000.0, 3000.0]


def test_positions_and_windows_are_replaced_address_by_address(store, path):
    store.commit(Changes(positions={"journal": '{"cursor":"a","usec":1}', "syslog": "x"},
                         windows={"sshd": {V4: [1.0, 2.0], V6: [3.0]}, "nginx": {OTHER: [4.0]}}))
    store.commit(Changes(positions={"journal": '{"cursor":"b","usec":2}'},
                         windows={"sshd": {V6: [3.0, 5.5], V4: None}}))

    loaded = reopen(store, path)
    assert loaded.positions == {"journal": '{"cursor":"b","usec":2}', "syslog": "x"}
    assert loaded.windows == {"sshd": {V6: [3.0, 5.5]}, "nginx": {OTHER: [4.0]}}


def test_a_window_that_ended_is_deleted_and_an_old_one_pruned(store, path):
    store.commit(Changes(windows={"sshd": {V4: [1.0], V6: [900.0, 1000.0]}}))
    store.commit(Changes(windows={"sshd": {V4: None}}))
    store.commit(Changes(windows={"sshd": {OTHER: [5000.0]}}))
    assert store.load(2000.0).windows == {"sshd": {V6: [900.0, 1000.0], OTHER: [5000.0]}}

    store.prune(released_before=0.0, windows_before=2000.0)
    assert reopen(store, path).windows == {"sshd": {OTHER: [5000.0]}}


def test_dropped_jail_loses_its_windows_and_bans_but_not_its_history(store, path):
    store.commit(Changes(bans={("old", V4): ban(V4, jail="old"), ("sshd", V4): ban(V4)},
                         lifted={("old", V6): (1, 1500.0)},
                         windows={"old": {V6: [1.0]}, "sshd": {V6: [2.0]}}))
    store.commit(Changes(dropped_jails={"old"}))

    loaded = reopen(store, path)
    assert [(b.jail, b.address) for b in loaded.bans] == [("sshd", V4)]
    assert loaded.windows == {"sshd": {V6: [2.0]}}
    assert loaded.history == [("old", V6, 1, 1500.0)]


def test_a_jail_dropped_and_configured_again_in_one_batch_keeps_the_new_state(store, path):
    store.commit(bans_changes(ban(V4, jail="app")))
    pending = Changes(dropped_jails={"app"})
    pending.merge(Changes(bans={("app", V6): ban(V6, jail="app")}, windows={"app": {OTHER: [9.0]}}))
    store.commit(pending)

    loaded = reopen(store, path)
    assert [b.address for b in loaded.bans] == [V6]
    assert loaded.windows == {"app": {OTHER: [9.0]}}


def test_empty_changes_have_nothing_to_write():
    assert not Changes()
    assert Changes(dropped_jails={"sshd"})
    assert Changes(positions={"journal": "{}"})


def test_merge_keeps_only_the_latest_fate_of_each_ban():
    failed = Changes(bans={("sshd", V4): ban(V4)}, lifted={("sshd", V6): (1, 1500.0)})
    failed.merge(Changes(bans={("sshd", V6): ban(V6, offence=2)}, lifted={("sshd", V4): (1, 1600.0)}))

    assert failed.bans == {("sshd", V6): ban(V6, offence=2)}
    assert failed.lifted == {("sshd", V4): (1, 1600.0)}


def test_merge_lets_later_positions_and_windows_win():
    failed = Changes(positions={"journal": "old", "syslog": "s"},
                     windows={"sshd": {V4: [1.0], OTHER: [1.5]}, "app": {V6: [2.0]}})
    failed.merge(Changes(positions={"journal": "new"}, windows={"sshd": {OTHER: [3.0], V4: None}}))

    assert failed.positions == {"journal": "new", "syslog": "s"}
    assert failed.windows == {"sshd": {V4: None, OTHER: [3.0]}, "app": {V6: [2.0]}}


def test_merge_of_a_later_drop_discards_that_jails_earlier_bans_and_windows():
    failed = Changes(bans={("old", V4): ban(V4, jail="old"), ("sshd", V4): ban(V4)},
                     lifted={("old", V6): (1, 1500.0)}, windows={"old": {V4: [1.0]}, "sshd": {V4: [1.0]}})
    failed.merge(Changes(dropped_jails={"old"}))

    assert list(failed.bans) == [("sshd", V4)]
    assert list(failed.windows) == ["sshd"]
    assert failed.lifted == {("old", V6): (1, 1500.0)}  # history outlives the jail
    assert failed.dropped_jails == {"old"}


def test_commit_blocked_by_another_writer_says_locked_names_the_file_and_writes_nothing(path):
    store = Store(path, busy_timeout=0.05)
    store.commit(Changes(positions={"journal": "before"}))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked") as raised:
            store.commit(Changes(bans={("sshd", V4): ban(V4)}, positions={"journal": "after"}))
        assert str(path) in str(raised.value)
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert store.load(2000.0).positions == {"journal": "before"}
    store.commit(Changes(positions={"journal": "after"}))  # the store is usable again
    assert store.load(2000.0).positions == {"journal": "after"}
    store.close()


def test_commit_failing_midway_leaves_nothing_written(store, path):
    store.commit(Changes(positions={"journal": "before"}, windows={"sshd": {V4: [1.0]}}))
    # A real sqlite failure after the bans, history and windows of the batch are written.
    with sqlite3.connect(path) as other:
        other.execute("CREATE TRIGGER refuse BEFORE INSERT ON positions BEGIN SELECT RAISE(ABORT, 'refused'); END")

    with pytest.raises(StoreError, match="refused") as raised:
        store.commit(Changes(bans={("sshd", V6): ban(V6)}, lifted={("sshd", OTHER): (1, 1500.0)},
                             windows={"sshd": {V6: [2.0]}}, positions={"journal": "after"}))
    assert str(path) in str(raised.value)

    loaded = store.load(2000.0)
    assert (loaded.bans, loaded.history) == ([], [])
    assert loaded.windows == {"sshd": {V4: [1.0]}}
    assert loaded.positions == {"journal": "before"}


def test_store_written_by_a_newer_version_is_refused_with_a_clear_error(path):
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {VERSION + 1}")

    with pytest.raises(StoreError, match=f"newer jailwarden.*version {VERSION + 1}") as raised:
        Store(path)
    assert str(path) in str(raised.value)


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(path):
    path.parent.mkdir()
    path.write_bytes(b"not a database at all, " * 100)

    with pytest.raises(StoreError, match="not a database") as raised:
        Store(path)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == b"not a database at all, " * 100


def test_another_programs_database_is_refused(path):
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")

    with pytest.raises(StoreError, match="not a jailwarden store"):
        Store(path)


def test_store_files_are_readable_by_the_owner_only(tmp_path):
    path = tmp_path / "new" / "jailwarden.db"
    old_umask = os.umask(0o022)
    try:
        store = Store(path)
        store.commit(bans_changes(ban(V4)))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old_umask)


def test_existing_store_readable_by_others_is_made_private(path):
    Store(path).close()
    path.chmod(0o644)

    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_commit_survives_the_process_being_killed_right_after(path):
    child = textwrap.dedent(f"""
        import ipaddress, os
        from agent.bans import Ban
        from agent.store import Changes, Store
        address = ipaddress.ip_address("192.0.2.7")
        store = Store({str(path)!r})
        store.commit(Changes(bans={{("sshd", address): Ban("sshd", address, 1000.0, 4600.0, 1, "r")}},
                             positions={{"journal": "cursor-1"}}))
        os.kill(os.getpid(), 9)
    """)
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr

    store = Store(path)
    loaded = store.load(2000.0)
    store.close()
    assert loaded.bans == [ban(V4, reason="r")]
    assert loaded.positions == {"journal": "cursor-1"}


def test_prune_forgets_history_released_before_the_cutoff(store, path):
    store.commit(Changes(lifted={("sshd", V4): (1, 1000.0), ("sshd", V6): (2, 2000.0), ("app", V4): (1, 3000.0)}))

    assert store.prune(released_before=2000.0) == 1
    assert reopen(store, path).history == [("sshd", V6, 2, 2000.0), ("app", V4, 1, 3000.0)]


def test_size_counts_what_the_store_takes_on_disk(store):
    empty = store.size()
    store.commit(bans_changes(*(ban(ipaddress.ip_address(0x0A000000 + n)) for n in range(2000))))
    assert store.size() > empty + 2000 * 20


def write_checkpoint(path, journal, windows):
    jail_windows = {jail: {str(address): times for address, times in addresses.items()}
                    for jail, addresses in windows.items()}
    state.save(path, state.Checkpoint(journal, jail_windows))


def test_old_checkpoint_is_imported_into_an_empty_store(store, tmp_path, path):
    checkpoint = tmp_path / "checkpoint.json"
    write_checkpoint(checkpoint, Position("s=1;i=2", 1010_000_000), {"sshd": {V4: [1000.0, 1010.0], V6: [5.0]}})

    assert store.import_checkpoint(checkpoint)
    assert checkpoint.exists()
    loaded = reopen(store, path)
    assert json.loads(loaded.positions["journal"]) == {"cursor": "s=1;i=2", "usec": 1010_000_000}
    assert loaded.windows == {"sshd": {V4: [1000.0, 1010.0], V6: [5.0]}}


def test_old_checkpoint_is_not_imported_over_newer_positions(store, tmp_path, path):
    checkpoint = tmp_path / "checkpoint.json"
    write_checkpoint(checkpoint, Position("old", 1), {"sshd": {V4: [1.0]}})
    store.commit(Changes(positions={"journal": "new"}))

    assert not store.import_checkpoint(checkpoint)
    loaded = reopen(store, path)
    assert loaded.positions == {"journal": "new"} and loaded.windows == {}


def test_missing_checkpoint_is_nothing_to_import(store, tmp_path):
    assert not store.import_checkpoint(tmp_path / "checkpoint.json")


def test_damaged_checkpoint_is_a_store_error_naming_it(store, tmp_path):
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text("{")
    with pytest.raises(StoreError, match="checkpoint.json"):
        store.import_checkpoint(checkpoint)


def test_each_jails_backend_is_kept_until_the_jail_is_dropped(store, path):
    store.commit(Changes(backends={"sshd": ("iptables", '{"chain": "INPUT"}'), "nginx": ("nftables", "{}")}))
    store.commit(Changes(backends={"sshd": ("ipset", "{}")}))
    assert reopen(store, path).backends == {"sshd": ("ipset", "{}"), "nginx": ("nftables", "{}")}
    store = Store(path)
    store.commit(Changes(dropped_jails={"nginx"}))
    assert reopen(store, path).backends == {"sshd": ("ipset", "{}")}


def test_a_version_1_store_is_upgraded_in_place_keeping_what_it_holds(path):
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:  # the version 1 schema, as the first release wrote it
        db.executescript("""
            CREATE TABLE bans (jail TEXT NOT NULL, address TEXT NOT NULL, start REAL NOT NULL, ends REAL,
                offence INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (jail, address)) WITHOUT ROWID;
            CREATE TABLE history (jail TEXT NOT NULL, address TEXT NOT NULL, offence INTEGER NOT NULL,
                released REAL NOT NULL, PRIMARY KEY (jail, address)) WITHOUT ROWID;
            CREATE TABLE positions (source TEXT PRIMARY KEY, position TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE windows (jail TEXT NOT NULL, address TEXT NOT NULL, failures TEXT NOT NULL,
                latest REAL NOT NULL, PRIMARY KEY (jail, address)) WITHOUT ROWID;
            INSERT INTO bans VALUES ('sshd', '192.0.2.7', 1000.0, 4600.0, 1, '5 sshd failures');
            PRAGMA user_version = 1;
        """)
    store = Store(path)
    store.commit(Changes(backends={"sshd": ("ipset", "{}")}))
    loaded = reopen(store, path)
    assert loaded.bans == [ban(V4)] and loaded.backends == {"sshd": ("ipset", "{}")}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION == 2
