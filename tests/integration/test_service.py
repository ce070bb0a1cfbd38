"""The agent as a service, driven the way an administrator drives it: the CLI over the control
socket (status, bans, manual ban and unban), bans kept across restarts in the store, reload by
CLI and by SIGHUP, and systemd's notification protocol on a real datagram socket."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from .agent import AgentProcess, journal_config
from .polling import wait_until
from .rsyslog import free_port
from .test_journal_source import APP_FILTER, fail


@pytest.fixture
def service(journal_namespace, tmp_path):
    """A dry-run agent with jail `app` (maxretry 2) reading the test's journald."""
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2)
    with AgentProcess(tmp_path, config, {"app": APP_FILTER}) as agent:
        yield agent


def answer(agent: AgentProcess, *argv: str):
    result = agent.cli(*argv, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_and_bans_show_what_the_jail_decided(service, journal_namespace):
    fail(journal_namespace, "203.0.113.70")
    fail(journal_namespace, "203.0.113.70")
    service.wait_for(r"jail app: ban 203\.0\.113\.70 for 1h")

    status = answer(service, "status")
    assert status["dry_run"] is True and status["sources"]["journal"]["running"] is True
    assert status["jails"]["app"] | {"tracked": 0} == {
        "filter": "app", "backend": "dry run", "backend_ok": True, "backend_error": None, "active_bans": 1,
        "tracked": 0, "failures": 2, "bans": 1, "untrusted": 0, "lines_too_long": 0}
    [ban] = answer(service, "bans")
    assert ban["address"] == "203.0.113.70" and ban["offence"] == 1 and 3590 < ban["remaining"] <= 3600
    assert answer(service, "status", "app")["banned"] == [ban | {"remaining": pytest.approx(ban["remaining"], abs=5)}]
    readable = service.cli("bans")
    assert readable.returncode == 0 and "203.0.113.70" in readable.stdout


def test_manual_bans_are_refused_for_protected_addresses_and_survive_a_restart(service):
    assert answer(service, "ban", "app", "198.51.100.71", "--for", "10m")["end"] is not None
    assert answer(service, "ban", "app", "2001:db8::71", "--for", "permanent")["end"] is None
    for address, reason in (("127.0.0.1", "loopback"), ("::1", "loopback")):
        refused = service.cli("ban", "app", address)
        assert refused.returncode == 1 and reason in refused.stderr
    assert service.cli("ban", "nosuchjail", "198.51.100.72").returncode == 1
    service.wait_for(r"jail app: ban 2001:db8::71 permanently")

    service.stop()
    service.start()
    kept = {ban["address"]: ban for ban in answer(service, "bans")}
    assert set(kept) == {"198.51.100.71", "2001:db8::71"}
    assert kept["2001:db8::71"]["end"] is None and 500 < kept["198.51.100.71"]["remaining"] <= 600


def test_unban_lifts_a_ban_and_forgets_the_failures(service, journal_namespace):
    fail(journal_namespace, "203.0.113.73")
    fail(journal_namespace, "203.0.113.73")
    service.wait_for(r"jail app: ban 203\.0\.113\.73")
    answer(service, "ban", "app", "198.51.100.73")

    assert [b["address"] for b in answer(service, "unban", "app", "203.0.113.73")["lifted"]] == ["203.0.113.73"]
    assert service.cli("unban", "app", "203.0.113.73").returncode == 1  # not banned any more
    fail(journal_namespace, "203.0.113.73")  # counts from zero again: one failure is no ban
    service.wait_for(r"jail app: failure from 203\.0\.113\.73", count=2)  # the 2nd was the ban
    assert [b["address"] for b in answer(service, "bans")] == ["198.51.100.73"]
    assert [b["address"] for b in answer(service, "unban", "--all")["lifted"]] == ["198.51.100.73"]
    assert answer(service, "bans") == []


def test_reload_applies_a_changed_config_and_refuses_a_broken_one(service, journal_namespace):
    answer(service, "ban", "app", "198.51.100.74")
    config = service.config_path.read_text()
    service.config_path.write_text(config + '\n[jails.second]\nfilter = "app"\nmaxretry = 3\n')

    changes = answer(service, "reload")["changes"]
    assert "jail second added" in changes and not any("jail app" in change for change in changes)
    assert set(answer(service, "status")["jails"]) == {"app", "second"}
    assert [b["address"] for b in answer(service, "bans", "--jail", "app")] == ["198.51.100.74"]  # kept

    service.config_path.write_text(config.replace("maxretry = 2", "maxretry = 0"))
    refused = service.cli("reload")
    assert refused.returncode == 1 and "maxretry" in refused.stderr and "the running one is kept" in refused.stderr
    service.signal(signal.SIGHUP)
    service.wait_for(r"reload \(SIGHUP\) refused: .*maxretry")
    assert set(answer(service, "status")["jails"]) == {"app", "second"}

    service.config_path.write_text(config.replace("[jails.app]", "[jails.renamed]"))
    service.signal(signal.SIGHUP)
    service.wait_for(r"reloaded \(SIGHUP\): jail app removed, its bans lifted")
    assert set(answer(service, "status")["jails"]) == {"renamed"} and answer(service, "bans") == []
    fail(journal_namespace, "203.0.113.75")  # the journal source follows the new jails
    fail(journal_namespace, "203.0.113.75")
    service.wait_for(r"jail renamed: ban 203\.0\.113\.75")


def test_systemd_hears_ready_watchdog_status_and_stopping(journal_namespace, tmp_path):
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(10)
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}  # ping every 0.2 s
    agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, env=env)
    try:
        with agent:
            first = manager.recv(4096).decode()
            assert first.startswith("READY=1\nSTATUS=1 jails, 0 active bans")
            started = time.monotonic()
            pings = 0
            while pings < 5:
                pings += manager.recv(4096) == b"WATCHDOG=1"
            assert time.monotonic() - started < 3
        messages = []
        wait_until(lambda: messages.append(manager.recv(4096).decode()) or "STOPPING=1" in messages[-1],
                   "STOPPING=1 after SIGTERM")
    finally:
        manager.close()


def test_a_locked_store_holds_nothing_up_and_gets_the_bans_when_it_recovers(service, journal_namespace, tmp_path):
    blocker = sqlite3.connect(tmp_path / "state" / "dry-run.db", isolation_level=None)  # a dry run's own
    blocker.execute("BEGIN EXCLUSIVE")  # another process writing, or a backup tool holding it
    try:
        fail(journal_namespace, "203.0.113.76")
        fail(journal_namespace, "203.0.113.76")
        service.wait_for(r"jail app: ban 203\.0\.113\.76 for 1h")
        service.wait_for(r"dry-run\.db: cannot write: database is locked.*written when the store recovers")
        assert "locked" in answer(service, "status")["store_error"]
        assert [b["address"] for b in answer(service, "bans")] == ["203.0.113.76"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    service.wait_for(r"the store at .* works again", timeout=15)
    assert answer(service, "status")["store_error"] is None
    service.kill()  # no final write: what the store has is what it got after recovering
    service.start()
    assert [b["address"] for b in answer(service, "bans")] == ["203.0.113.76"]


def test_prometheus_metrics_show_the_jails_counters(journal_namespace, tmp_path):
    port = free_port()
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2)
    config += f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    with AgentProcess(tmp_path, config, {"app": APP_FILTER}) as agent:
        fail(journal_namespace, "203.0.113.77")
        fail(journal_namespace, "203.0.113.77")
        agent.wait_for(r"jail app: ban 203\.0\.113\.77")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            samples = dict(line.rsplit(" ", 1) for line in response.read().decode().splitlines()
                           if not line.startswith("#"))
        assert samples['jailwarden_failures_total{jail="app"}'] == "2"
        assert samples['jailwarden_bans_total{jail="app"}'] == "1"
        assert samples['jailwarden_active_bans{jail="app"}'] == "1"
        assert samples['jailwarden_lines_too_long_total{jail="app"}'] == "0"
        assert samples['jailwarden_backend_up{jail="app",backend="dry run"}'] == "1"
        assert float(samples['jailwarden_source_events_total{source="journal"}']) >= 2
        assert samples["jailwarden_store_up"] == "1"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
