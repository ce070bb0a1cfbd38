"""The journal source against a real journald (a private journal namespace): failures reach
the jails, journald filters server-side, and restarts, rotation, vacuuming and a journald
restart lose nothing and count nothing twice."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

import pytest

from agent import state as state_module
from agent.config import JournalConfig
from agent.sources import journal as journal_module
from agent.sources.journal import JournalSource, Position
from agent.store import Store

from .agent import AgentProcess, journal_config
from .rsyslog import free_port

EXE = os.path.realpath(sys.executable)  # journald's _EXE for entries this test process sends

APP_FILTER = f"""
description = "a test service, known by the executable that writes its entries"
syslog = ["jwapp"]
failregex = ['login failed for \\S+ from <HOST>$']
[journal]
_EXE = ["{EXE}"]
_UID = ["0"]
"""


def config(workdir, namespace, maxretry=3, filter_name="app", extra=""):
    return journal_config(workdir, namespace, "app", filter_name, maxretry, extra)


def fail(journal, address, user="root"):
    journal.send(f"login failed for {user} from {address}", SYSLOG_IDENTIFIER="jwapp")


@pytest.fixture
def agent_for(journal_namespace, tmp_path):
    def make(maxretry=3):
        return AgentProcess(tmp_path, config(tmp_path, journal_namespace.name, maxretry), {"app": APP_FILTER})
    return make


def test_failures_written_to_the_journal_get_the_address_banned(journal_namespace, agent_for):
    with agent_for(maxretry=3) as agent:
        for _ in range(3):
            fail(journal_namespace, "203.0.113.10")
        agent.wait_for(r"jail app: ban 203\.0\.113\.10 for 1h \(offence 1; reason: 3 app failures\)")
        assert len(agent.matching(r"failure from 203\.0\.113\.10")) == 2  # the third one bans


def test_first_start_reads_back_findtime_of_history(journal_namespace, agent_for):
    fail(journal_namespace, "2001:db8::10")
    fail(journal_namespace, "2001:db8::10")
    journal_namespace.wait_for_entry("login failed for root from 2001:db8::10")
    with agent_for(maxretry=3) as agent:
        agent.wait_for(r"reading back 10m of history")
        agent.wait_for(r"failure from 2001:db8::10", count=2)
        fail(journal_namespace, "2001:db8::10")
        agent.wait_for(r"ban 2001:db8::10 for 1h")


def test_restart_resumes_from_the_cursor_without_loss_or_double_counting(journal_namespace, agent_for):
    agent = agent_for(maxretry=4)
    with agent:
        fail(journal_namespace, "198.51.100.20")
        fail(journal_namespace, "198.51.100.20")
        agent.wait_for(r"failure from 198\.51\.100\.20", count=2)
    # Written while the agent is down: counted once, after the restart.
    fail(journal_namespace, "198.51.100.20")
    journal_namespace.wait_for_entry(lambda e: e.get("MESSAGE", "").endswith("198.51.100.20"), timeout=5)
    with agent:
        agent.wait_for(r"resuming after the saved journal cursor")
        agent.wait_for(r"restored from .*: 0 active bans, 0 ended while stopped, 1 failure windows")
        agent.wait_for(r"failure from 198\.51\.100\.20")
        fail(journal_namespace, "198.51.100.20")
        agent.wait_for(r"ban 198\.51\.100\.20 .*reason: 4 app failures")
        assert len(agent.matching(r"failure from 198\.51\.100\.20")) == 1
        assert agent.matching(r"no saved journal position") == []


def test_journald_restarting_underneath_loses_nothing(journal_namespace, agent_for):
    with agent_for(maxretry=3) as agent:
        fail(journal_namespace, "203.0.113.30")
        agent.wait_for(r"failure from 203\.0\.113\.30")
        journal_namespace.restart()
        fail(journal_namespace, "203.0.113.30")
        fail(journal_namespace, "203.0.113.30")
        agent.wait_for(r"ban 203\.0\.113\.30 for 1h")
        assert len(agent.matching(r"failure from 203\.0\.113\.30")) == 2


def test_rotation_and_a_vacuumed_cursor_lose_nothing_left_and_count_nothing_twice(journal_namespace, agent_for):
    agent = agent_for(maxretry=4)
    with agent:
        fail(journal_namespace, "203.0.113.40")
        agent.wait_for(r"failure from 203\.0\.113\.40")
        journal_namespace.rotate()
        fail(journal_namespace, "203.0.113.40")
        agent.wait_for(r"failure from 203\.0\.113\.40", count=2)
    # The saved cursor's entry is archived and then deleted while the agent is down.
    journal_namespace.rotate()
    journal_namespace.vacuum()
    fail(journal_namespace, "203.0.113.40")
    journal_namespace.wait_for_entry("login failed for root from 203.0.113.40")
    with agent:
        agent.wait_for(r"saved journal cursor no longer exists .* resuming after the last entry seen")
        agent.wait_for(r"failure from 203\.0\.113\.40")
        fail(journal_namespace, "203.0.113.40")
        agent.wait_for(r"ban 203\.0\.113\.40 .*reason: 4 app failures")
        assert len(agent.matching(r"failure from 203\.0\.113\.40")) == 1
        assert len(agent.matching(r"cursor no longer exists")) == 1


def test_lines_from_systemd_journal_send_and_systemd_cat_are_read(journal_namespace, tmp_path):
    # Known by their syslog tag only, which anyone may write: a jail that accepts that says so.
    tagged = ('description = "tagged"\nsyslog = ["jwsend", "jwcat"]\n'
              "failregex = ['login failed for \\S+ from <HOST>$']\n")
    with AgentProcess(tmp_path, config(tmp_path, journal_namespace.name, maxretry=2, filter_name="tagged",
                                       extra="require_trusted = false"), {"tagged": tagged}) as agent:
        journal_namespace.run_with_journal_socket(
            sys.executable, "-c", "from systemd import journal; "
            "journal.send('login failed for root from 198.51.100.70', SYSLOG_IDENTIFIER='jwsend')")
        journal_namespace.run_with_journal_socket(
            "systemd-cat", "-t", "jwcat", "echo", "login failed for admin from 198.51.100.70")
        agent.wait_for(r"jail app: ban 198\.51\.100\.70 for 1h")


def _read_with_source(journal, matches, send, until, timeout=10.0):
    """Run a JournalSource on the namespace, call `send()`, and collect events until `until(events)`."""
    events = []

    async def main():
        source = JournalSource(JournalConfig(namespace=journal.name), events.append, matches=matches)
        await source.start()
        try:
            send()
            deadline = time.monotonic() + timeout
            while not until(events):
                assert time.monotonic() < deadline, f"only {len(events)} events within {timeout} s"
                await asyncio.sleep(0.01)
            return source.stats(), source.position
        finally:
            await source.stop()

    return events, *asyncio.run(main())


def test_journald_itself_skips_entries_no_jail_wants(journal_namespace):
    def send():
        for i in range(200):
            journal_namespace.send(f"noise {i}", SYSLOG_IDENTIFIER="noise")
        journal_namespace.send("login failed for root from 203.0.113.50", SYSLOG_IDENTIFIER="jwapp", JW_KIND="wanted")

    events, stats, position = _read_with_source(
        journal_namespace, [{"JW_KIND": ["wanted"]}], send, lambda events: events)
    assert [e.message for e in events] == ["login failed for root from 203.0.113.50"]
    assert stats["received"] == 1  # the 200 others never left journald's index
    event = events[0]
    assert event.source == "journal" and event.trusted
    assert event.fields["_EXE"] == EXE and event.fields["SYSLOG_IDENTIFIER"] == "jwapp"
    assert abs(event.time - time.time()) < 10 and isinstance(position, Position)


def test_a_message_longer_than_64_kib_reaches_the_filters_cut_and_counted(journal_namespace):
    # Any local user can write a journal entry of megabytes; the filters are proved linear on
    # 64 KiB (tests/unit/test_regex_safety.py), so that is what they get.
    long = "login failed for " + "x" * 150_000 + " from 203.0.113.51"

    def send():
        journal_namespace.send(long, SYSLOG_IDENTIFIER="jwapp", JW_KIND="long")

    events, stats, _ = _read_with_source(journal_namespace, [{"JW_KIND": ["long"]}], send, lambda events: events)
    assert [event.message for event in events] == [long[:journal_module.MAX_MESSAGE]]
    assert stats["truncated"] == 1 and stats["delivered"] == 1


def test_an_entry_is_seen_sooner_than_journalds_own_notification(journal_namespace):
    # journald announces appends ~450 ms late; the source's poll sees them within ~20 ms. This
    # is not the benchmark (tests/bench/bench_journal.py): a median of five under 250 ms only
    # shows the poll works, with room for a loaded machine.
    sent, seen = [], []

    def send():
        sent.append(time.time())
        journal_namespace.send("login failed for root from 203.0.113.51", JW_KIND="wanted")

    def arrived(events):
        if events:
            seen.append(time.time())
        return events

    for _ in range(5):
        _read_with_source(journal_namespace, [{"JW_KIND": ["wanted"]}], send, arrived)
    delays = sorted(b - a for a, b in zip(sent, seen, strict=True))
    assert delays[2] < 0.25, delays


def test_a_journal_that_cannot_be_opened_keeps_the_saved_position(tmp_path):
    # Otherwise the next start would read findtime of history again on top of the restored
    # windows, counting those failures twice. The position comes from a checkpoint file of a
    # version before the store, which the agent imports once.
    state = tmp_path / "state"
    state.mkdir()
    saved = {"format": state_module.FORMAT, "journal": {"cursor": "s=abc;i=1", "usec": 1_000_000}, "windows": {}}
    (state / "checkpoint.json").write_text(json.dumps(saved))
    config = f"""
[agent]
state_dir = "{state}"
socket = "{tmp_path}/control.sock"
backend = "log"
[sources.journal]
path = "{tmp_path}/no-such-journal"
[sources.syslog]
listen = ["udp://127.0.0.1:{free_port()}"]
[jails.sshd]
filter = "sshd"
"""
    # Not a dry run (which keeps a state of its own), with the log backend, which touches nothing.
    with AgentProcess(tmp_path, config, dry_run=False) as agent:
        agent.wait_for(r"journal: cannot read directory .*no-such-journal: no such directory")
    assert (state / "checkpoint.json.imported").exists() and not (state / "checkpoint.json").exists()
    store = Store(state / "jailwarden.db")
    try:
        assert json.loads(store.load(time.time()).positions["journal"]) == saved["journal"]
    finally:
        store.close()


def test_the_reader_opened_afresh_during_a_flood_loses_and_repeats_nothing(journal_namespace, monkeypatch, caplog):
    # Normally once the mapped journal pages grew by 12 MiB, looked at every 250 entries.
    monkeypatch.setattr(journal_module, "_REOPEN_CHECK", 7)
    monkeypatch.setattr(journal_module, "_REOPEN_GROWTH", -1)
    monkeypatch.setattr(journal_module, "_BATCH", 5)
    caplog.set_level(logging.DEBUG, "jailwarden.journal")
    for i in range(60):
        journal_namespace.send(f"login failed for root from 198.51.100.{i}", SYSLOG_IDENTIFIER="jwapp",
                               JW_KIND="flood")
    journal_namespace.wait_for_entry("login failed for root from 198.51.100.59")
    events = []

    async def main():
        source = JournalSource(JournalConfig(namespace=journal_namespace.name), events.append,
                               matches=[{"JW_KIND": ["flood"]}], history=600, now=time.time())
        await source.start()
        try:
            deadline = time.monotonic() + 10
            while len(events) < 60:
                assert time.monotonic() < deadline, f"only {len(events)} events"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # nothing more arrives
            return source.stats()
        finally:
            await source.stop()

    stats = asyncio.run(main())
    assert [e.message.rsplit(".", 1)[1] for e in events] == [str(i) for i in range(60)]
    assert stats["received"] == 60 and stats["errors"] == 0
    assert len([r for r in caplog.records if r.getMessage() == "resuming after the saved journal cursor"]) >= 5
