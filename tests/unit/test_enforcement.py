"""The enforcer with real backends on files: bans reach the backend, a failing backend is
retried without losing what was queued, and the other jails go on."""

import asyncio
import ipaddress
import math

import agent.enforcement as enforcement
from agent.enforcement import Enforcer
from firewall import BackendError, refused_items
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


class IPv4Only(HostsDenyBackend):
    """hosts.deny that refuses IPv6 for good, as the iptables backend does with ipv6=False."""

    def ban_many(self, items):
        refused = [f"{item!r}: IPv6 is off" for item in items if item[0].version == 6]
        super().ban_many([item for item in items if item[0].version == 4])
        if refused:
            raise refused_items(self.name, self.jail, len(items), refused)


class BansBroken(HostsDenyBackend):
    """hosts.deny whose bans fail (a set gone, a lock held) while unbans still work."""

    def ban_many(self, items):
        raise BackendError(self.name, "ban", "the kernel said no")


class FirstCallRaises(HostsDenyBackend):
    """hosts.deny whose first ban_many raises what no backend documents (a library's own error)."""

    calls = 0

    def ban_many(self, items):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("libsomething went wrong")
        super().ban_many(items)


def test_items_refused_for_good_are_reported_once_and_do_not_hold_up_the_queue(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(enforcement, "_FIRST_RETRY", 0.05)
    backend = IPv4Only("sshd", path=tmp_path / "hosts.deny")

    async def main():
        enforcer = Enforcer({"sshd": backend}, clock=lambda: 1000.0)
        await enforcer.start()
        enforcer.ban("sshd", OTHER, 2000.0)
        enforcer.ban("sshd", ATTACKER, 2000.0)
        await until(lambda: enforcer.pending() == 0)
        enforcer.unban("sshd", ATTACKER)
        await until(lambda: backend.list() == {})
        await enforcer.stop()

    asyncio.run(main())
    refused = [record for record in caplog.records if "not retried" in record.getMessage()]
    assert len(refused) == 1 and "2001:db8::9" in refused[0].getMessage()


def test_unbans_go_through_while_bans_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(enforcement, "_FIRST_RETRY", 0.05)
    path = tmp_path / "hosts.deny"
    HostsDenyBackend("sshd", path=path).ban(OTHER, None)  # banned by an earlier run
    backend = BansBroken("sshd", path=path)

    async def main():
        enforcer = Enforcer({"sshd": backend}, clock=lambda: 1000.0)
        await enforcer.start()
        enforcer.ban("sshd", ATTACKER, 2000.0)
        enforcer.unban("sshd", OTHER)
        await until(lambda: backend.list() == {})
        assert enforcer.pending() == 1  # the ban, kept for the next try
        await enforcer.stop()

    asyncio.run(main())


def test_an_exception_no_backend_documents_is_reported_and_retried(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(enforcement, "_FIRST_RETRY", 0.05)
    backend = FirstCallRaises("sshd", path=tmp_path / "hosts.deny")

    async def main():
        enforcer = Enforcer({"sshd": backend}, clock=lambda: 1000.0)
        await enforcer.start()
        enforcer.ban("sshd", ATTACKER, 2000.0)
        await until(lambda: ATTACKER in backend.list())
        await enforcer.stop()

    asyncio.run(main())
    assert backend.calls == 2
    assert any("RuntimeError: libsomething went wrong" in record.getMessage() for record in caplog.records)
