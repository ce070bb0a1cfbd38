"""The recorder while the store cannot be written: nothing decided is lost, and what it holds
back stays bounded however many addresses fail meanwhile."""

import asyncio
import functools
import ipaddress
import sqlite3

from agent import recording
from agent.jail import Jail
from agent.recording import Recorder
from agent.store import Store
from parsers.filter import Failure

BASE = int(ipaddress.IPv4Address("198.18.0.0"))  # RFC 2544 benchmark range


def fail(jail: Jail, offset: int, now: float) -> None:
    jail.record(Failure(ipaddress.IPv4Address(BASE + offset), "flood", now, "", {}), now)


def snapshot_of(jail: Jail):
    def snapshot(everything: set[str]):
        windows, whole = jail.changed_windows(jail.name in everything)
        return {}, {jail.name: windows}, {jail.name} if whole else set()
    return snapshot


def stored_windows(path) -> dict:
    store = Store(path)
    try:
        return store.load(1000.0).windows.get("flood", {})
    finally:
        store.close()


def test_windows_held_back_by_a_locked_store_stay_bounded_and_are_written_whole_on_recovery(tmp_path, monkeypatch):
    monkeypatch.setattr(recording, "PENDING_WINDOWS", 500)
    monkeypatch.setattr(recording, "Store", functools.partial(Store, busy_timeout=0.05))  # fail fast
    path = tmp_path / "jailwarden.db"
    jail = Jail("flood", maxretry=3, findtime=600, max_tracked=1_000)

    async def scenario():
        recorder = Recorder(path, snapshot_of(jail), 3600.0, lambda: 600.0)
        await recorder.open(1000.0)
        for offset in range(300):  # written while the store works
            fail(jail, offset, 1000.0)
        assert await recorder._write()
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            for round_ in range(10):  # 5,000 more addresses while it is locked
                for offset in range(500):
                    fail(jail, 300 + 500 * round_ + offset, 1000.0)
                assert not await recorder._write()
                held = sum(len(windows) for windows in recorder._pending.windows.values())
                assert held <= 500 and len(jail._changed) <= 1_000
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert "locked" in recorder.error
        assert await recorder._write() and recorder.error is None
        await recorder.close()

    asyncio.run(scenario())
    # The store holds exactly the jail's windows: the 1,000 it still tracks, none it forgot.
    assert stored_windows(path) == jail.windows()
    assert len(jail.windows()) == 1_000


def test_a_jail_tracking_more_changes_than_it_may_keep_lists_all_its_windows():
    jail = Jail("flood", maxretry=3, findtime=600, max_tracked=100)
    for offset in range(250):
        fail(jail, offset, 1000.0)
    windows, whole = jail.changed_windows()
    assert whole and windows == jail.windows() and len(windows) == 100
    fail(jail, 249, 1001.0)
    assert jail.changed_windows() == ({ipaddress.IPv4Address(BASE + 249): [1000.0, 1001.0]}, False)
