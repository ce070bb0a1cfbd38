"""The `jailwarden` commands that ask the running daemon (status, bans, ban, unban, reload): what
an administrator reads and the exit status scripts test, with the real CLI in its own process
talking over a real unix socket to a control server in a thread of the test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.control import ControlError, ControlServer

REPOSITORY = Path(__file__).parents[2]
SSH_BAN = {"jail": "sshd", "address": "192.0.2.7", "start": 1000.0, "end": 4600.0, "remaining": 3552.4,
           "offence": 2, "reason": "5 failures in 10m"}
FOREVER_BAN = {"jail": "web", "address": "2001:db8::66", "start": 1000.0, "end": None, "remaining": None,
               "offence": 4, "reason": "manual"}
SSHD = {"filter": "sshd", "backend": "ipset", "backend_ok": True, "backend_error": None, "active_bans": 1,
        "tracked": 12, "failures": 140, "bans": 20}
WEB = {"filter": "nginx-auth", "backend": "nftables", "backend_ok": False,
       "backend_error": "nft: table inet jailwarden: Operation not permitted", "active_bans": 1, "tracked": 0,
       "failures": 3, "bans": 1}
STATUS = {"version": "0.1.0", "dry_run": False, "uptime": 7384.0, "jails": {"sshd": SSHD, "web": WEB},
          "sources": {"journal": {"running": True, "lag": 0.012, "events": 51234, "dropped": 0},
                      "syslog": {"running": False, "lag": None, "events": 0, "dropped": 7}},
          "reports": {"socket": {"accepted": 310, "rate_limited": 0}, "http": {"accepted": 52, "rate_limited": 4}}}


class Daemon:
    """What the agent answers, as far as these commands need; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def _jail(self, jail: str | None) -> None:
        if jail is not None and jail not in STATUS["jails"]:
            raise ControlError(f"no jail {jail!r} (jails: sshd, web)")

    def status(self, jail: str | None = None) -> dict:
        self.calls.append(("status", {"jail": jail}))
        self._jail(jail)
        if jail is None:
            return STATUS
        banned = [ban for ban in (SSH_BAN, FOREVER_BAN) if ban["jail"] == jail]
        return STATUS["jails"][jail] | {"jail": jail, "banned": banned}

    async def bans(self, jail: str | None = None) -> list:
        self.calls.append(("bans", {"jail": jail}))
        self._jail(jail)
        return [ban for ban in (SSH_BAN, FOREVER_BAN) if jail in (None, ban["jail"])]

    def ban(self, jail: str, address: str, duration: str | None = None) -> dict:
        self.calls.append(("ban", {"jail": jail, "address": address, "duration": duration}))
        self._jail(jail)
        if duration == "permanent":
            return FOREVER_BAN | {"jail": jail, "address": address, "offence": 1}
        return SSH_BAN | {"jail": jail, "address": address, "remaining": 600.0, "offence": 1, "reason": "manual"}

    async def unban(self, address: str | None = None, jail: str | None = None, all: bool = False) -> dict:
        self.calls.append(("unban", {"address": address, "jail": jail, "all": all}))
        self._jail(jail)
        return {"lifted": [ban for ban in (SSH_BAN, FOREVER_BAN)
                           if jail in (None, ban["jail"]) and (all or ban["address"] == address)]}

    def reload(self) -> dict:
        self.calls.append(("reload", {}))
        return {"changes": ["jail web added", "jail sshd: maxretry 5 -> 3"]}


@pytest.fixture
def daemon(tmp_path):
    """A control server on its own event loop in a thread; yields (socket path, Daemon)."""
    path = tmp_path / "run" / "control.sock"
    handler = Daemon()
    loop = asyncio.new_event_loop()
    server = ControlServer(path, handler)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, name="control-server", daemon=True)
    thread.start()
    try:
        yield path, handler
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def jailwarden(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=60)


def test_status_prints_a_table_of_jails_sources_and_reports_and_a_failing_backend(daemon) -> None:
    path, _ = daemon
    result = jailwarden("status", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "jailwarden 0.1.0, up 2h 3m"
    assert lines[2].split() == ["JAIL", "FILTER", "BACKEND", "BANNED", "TRACKED", "FAILURES", "BANS"]
    assert lines[3].split() == ["sshd", "sshd", "ipset", "1", "12", "140", "20"]
    assert lines[4].split() == ["web", "nginx-auth", "nftables", "(failing)", "1", "0", "3", "1"]
    assert "web: backend nftables: nft: table inet jailwarden: Operation not permitted" in lines
    assert ["journal", "yes", "0.01s", "51234", "0"] in [line.split() for line in lines]
    assert ["syslog", "no", "-", "0", "7"] in [line.split() for line in lines]
    reports = lines.index("REPORTED ON  ACCEPTED  RATE LIMITED")
    assert [line.split() for line in lines[reports + 1:reports + 3]] == [["socket", "310", "0"], ["http", "52", "4"]]


def test_status_of_a_jail_as_json_is_the_daemons_answer(daemon) -> None:
    path, handler = daemon
    result = jailwarden("status", "sshd", "--json", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SSHD | {"jail": "sshd", "banned": [SSH_BAN]}
    assert handler.calls == [("status", {"jail": "sshd"})]


def test_status_of_a_jail_shows_its_counts_and_bans(daemon) -> None:
    path, _ = daemon
    result = jailwarden("status", "web", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert "backend   nftables (failing: nft: table inet jailwarden: Operation not permitted)" in result.stdout
    assert "bans      1 active, 1 since start" in result.stdout
    assert ["2001:db8::66", "permanent", "4", "manual"] in [line.split() for line in result.stdout.splitlines()]


def test_status_of_an_unknown_jail_exits_1_with_the_daemons_reason(daemon) -> None:
    path, _ = daemon
    result = jailwarden("status", "ftp", "--socket", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "jailwarden: status: no jail 'ftp' (jails: sshd, web)\n"


def test_bans_prints_one_line_per_ban_with_its_remaining_time(daemon) -> None:
    path, _ = daemon
    result = jailwarden("bans", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("JAIL  ADDRESS       REMAINING  OFFENCE  REASON\n"
                             "sshd  192.0.2.7     59m 12s    2        5 failures in 10m\n"
                             "web   2001:db8::66  permanent  4        manual\n")


def test_bans_of_one_jail_as_json(daemon) -> None:
    path, handler = daemon
    result = jailwarden("bans", "--jail", "web", "--json", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [FOREVER_BAN]
    assert handler.calls == [("bans", {"jail": "web"})]


def test_ban_for_a_duration_and_permanently(daemon) -> None:
    path, handler = daemon
    result = jailwarden("ban", "sshd", "198.51.100.4", "--for", "10m", "--socket", str(path))
    assert (result.returncode, result.stdout) == (0, "banned 198.51.100.4 in sshd for 10m 0s (offence 1)\n")
    result = jailwarden("ban", "web", "198.51.100.5", "--for", "permanent", "--json", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["end"] is None
    assert handler.calls == [("ban", {"jail": "sshd", "address": "198.51.100.4", "duration": "10m"}),
                             ("ban", {"jail": "web", "address": "198.51.100.5", "duration": "permanent"})]


def test_a_refused_ban_exits_1_with_the_reason_on_stderr(daemon) -> None:
    path, _ = daemon
    result = jailwarden("ban", "ftp", "198.51.100.4", "--socket", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert "no jail 'ftp'" in result.stderr


def test_unban_an_address_in_a_jail_and_everything_in_a_jail(daemon) -> None:
    path, handler = daemon
    result = jailwarden("unban", "sshd", "192.0.2.7", "--socket", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lifted 1 ban\n")
    result = jailwarden("unban", "--all", "--jail", "web", "--json", "--socket", str(path))
    assert json.loads(result.stdout) == {"lifted": [FOREVER_BAN]}
    result = jailwarden("unban", "--all", "--socket", str(path))
    assert result.stdout.startswith("lifted 2 bans\n") and "2001:db8::66" in result.stdout
    assert handler.calls == [("unban", {"address": "192.0.2.7", "jail": "sshd", "all": False}),
                             ("unban", {"address": None, "jail": "web", "all": True}),
                             ("unban", {"address": None, "jail": None, "all": True})]


def test_unban_without_an_address_or_with_one_and_all_is_a_usage_error(daemon) -> None:
    path, handler = daemon
    for argv in (["unban"], ["unban", "--all", "192.0.2.7"], ["unban", "sshd", "192.0.2.7", "--jail", "web"],
                 ["unban", "a", "b", "c"]):
        result = jailwarden(*argv, "--socket", str(path))
        assert result.returncode == 2, argv
        assert "usage: jailwarden unban" in result.stderr
    assert handler.calls == []


def test_reload_lists_what_changed(daemon) -> None:
    path, _ = daemon
    result = jailwarden("reload", "--socket", str(path))
    assert (result.returncode, result.stdout) == (0, "reloaded: 2 changes\n  jail web added\n"
                                                     "  jail sshd: maxretry 5 -> 3\n")


def test_the_configured_socket_is_used(daemon, tmp_path) -> None:
    path, _ = daemon
    config = tmp_path / "jailwarden.toml"
    config.write_text(f'[agent]\nsocket = "{path}"\n')
    result = jailwarden("bans", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_configuration_with_problems_still_gives_its_socket(daemon, tmp_path) -> None:
    path, _ = daemon
    config = tmp_path / "jailwarden.toml"
    config.write_text(f'[agent]\nsocket = "{path}"\n[jails.sshd]\nfilter = "sshd"\nmaxretry = 0\n')
    result = jailwarden("reload", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"has problems (`jailwarden check-config` lists them); using its [agent] socket {path}" in result.stderr


def test_no_daemon_on_the_socket_exits_3_and_says_so(tmp_path) -> None:
    nowhere = tmp_path / "nowhere.sock"
    for argv in (["status"], ["bans"], ["ban", "sshd", "192.0.2.7"], ["unban", "192.0.2.7"], ["reload"]):
        result = jailwarden(*argv, "--socket", str(nowhere))
        assert (result.returncode, result.stdout) == (3, ""), argv
        assert result.stderr == f"jailwarden: jailwarden is not running (nothing listens on {nowhere})\n"


def test_an_unreadable_configuration_falls_back_to_the_default_socket_with_a_note(tmp_path) -> None:
    if Path("/run/jailwarden/control.sock").exists():
        pytest.skip("a jailwarden may be running on the default socket here")
    result = jailwarden("status", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 3
    assert "using the default socket /run/jailwarden/control.sock" in result.stderr
    assert "jailwarden is not running (nothing listens on /run/jailwarden/control.sock)" in result.stderr
