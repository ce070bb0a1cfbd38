"""The enforcer with real backends on files: bans reach the backend, a failing backend is
retried without losing what was queued, and the other jails go on."""

import asyncio
import ipaddress
import math

import agent.enforcement as enforcement
from agent.enforcement import Enforcer
from firewall.hostsdeny import HostsDenyBackend

ATTACKER = ipaddress.ip_address("203.0.113.9")
OTHER = ipaddress.ip_address("2001:db8::9")


async def until(condition, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_bans_and_unbans_reach_the_backend(tmp_path):
    path = tmp_path / "hosts.deny"
    backend = HostsDenyBackend("sshd", path=path, daemons="sshd")

    async def main():
        enforcer = Enforcer({"sshd": backend}, clock=lambda: 1000.0)
        assert await enforcer.start() == {"sshd": {}}
        enforcer.ban("sshd", ATTACKER, 1600.0)
        enforcer.ban("sshd", OTHER, math.inf)
        await until(lambda: enforcer.pending() == 0 and len(backend.list()) == 2)
        enforcer.unban("sshd", ATTACKER)
        await until(lambda: list(backend.list()) == [OTHER])
        await enforcer.stop()

    asyncio.run(main())
    assert "sshd: [2001:db8::9]" in path.read_text()


def test_a_failing_backend_keeps_its_queue_and_recovers_while_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(enforcement, "_FIRST_RETRY", 0.05)
    broken = HostsDenyBackend("web", path=tmp_path / "missing" / "hosts.deny")  # no such directory yet
    working = HostsDenyBackend("sshd", path=tmp_path / "hosts.deny")

    async def main():
        enforcer = Enforcer({"web": broken, "sshd": working}, clock=lambda: 1000.0)
        found = await enforcer.start()
        assert list(found) == ["sshd"]
        enforcer.ban("web", ATTACKER, 2000.0)
        enforcer.ban("sshd", ATTACKER, 2000.0)
        await until(lambda: ATTACKER in working.list())
        assert enforcer.pending() == 1  # web's ban waits
        (tmp_path / "missing").mkdir()
        await until(lambda: enforcer.pending() == 0)
        assert ATTACKER in broken.list()
        await enforcer.stop()

    asyncio.run(main())


def test_a_ban_applied_late_is_not_made_longer_and_an_ended_one_not_applied(tmp_path):
    now = [1000.0]
    backend = HostsDenyBackend("sshd", path=tmp_path / "hosts.deny", clock=lambda: now[0])

    async def main():
        enforcer = Enforcer({"sshd": backend}, clock=lambda: now[0])
        await enforcer.start()
        now[0] = 1500.0  # the queue ran late
        enforcer.ban("sshd", ATTACKER, 1600.0)
        enforcer.ban("sshd", OTHER, 1400.0)  # over before it could be applied
        await until(lambda: enforcer.pending() == 0)
        await enforcer.stop()

    asyncio.run(main())
    assert backend.list() == {ATTACKER: 100.0}
