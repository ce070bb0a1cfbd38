"""The agent without --dry-run: its bans reach the firewall backend, end on time, and a restart
adopts what the backend holds instead of banning again, also after a kill -9. The hostsdeny
backend on a file of the test's, and nftables in a network namespace of the test's, hold the
bans; each kernel backend has its own tests."""

from __future__ import annotations

from .agent import AgentProcess, journal_config
from .conftest import require_tools
from .netns import NetworkNamespace
from .polling import wait_until
from .test_firewall_nftables import elements
from .test_journal_source import APP_FILTER, fail


def test_bans_are_enforced_ended_and_adopted_after_a_restart(journal_namespace, tmp_path):
    deny = tmp_path / "hosts.deny"
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2,
                            extra='backend = "hostsdeny"\nbantime = "3s"') + f"""
[firewall.hostsdeny]
path = "{deny}"
daemons = "sshd"
"""
    config = config.replace('bantime = "1h"\n', "")
    agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False)
    with agent:
        fail(journal_namespace, "203.0.113.60")
        fail(journal_namespace, "203.0.113.60")
        agent.wait_for(r"jail app: ban 203\.0\.113\.60 for 3s")
    assert "sshd: 203.0.113.60" in deny.read_text()
    with agent:
        agent.wait_for(r"jail app: 1 bans found in the firewall, adopted")
        agent.wait_for(r"jail app: unban 203\.0\.113\.60 \(ban ended\)", timeout=10)
        assert agent.matching(r"ban 203\.0\.113\.60 for") == []
    assert "203.0.113.60" not in deny.read_text()


def test_a_kill_9_right_after_a_ban_keeps_it_in_the_kernel_and_bans_nothing_twice(journal_namespace, tmp_path):
    """The agent, with the nftables backend in a network namespace of the test's, is killed the
    moment it logs a ban, before it can save anything; the restarted agent finds the ban in the
    kernel, adopts it with the time the kernel has left, and does not count the re-read failures
    into a second ban."""
    require_tools("ip", "nft")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2,
                            extra='backend = "nftables"\nbantime_increment = { factor = 2, max = "1w" }')
    with NetworkNamespace("jwagt") as ns:
        agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name)
        agent.start()
        fail(journal_namespace, "203.0.113.61")
        fail(journal_namespace, "203.0.113.61")
        agent.wait_for(r"jail app: ban 203\.0\.113\.61 for 1h")
        # The decision is logged before the backend call: give the kernel the ban, not the agent a save.
        wait_until(lambda: "203.0.113.61" in elements(ns, "app_v4"), "the ban in the kernel")
        agent.kill()
        assert 3590 <= elements(ns, "app_v4")["203.0.113.61"] <= 3600

        with agent:
            agent.wait_for(r"jail app: 1 bans found in the firewall, adopted")
            fail(journal_namespace, "203.0.113.62")
            fail(journal_namespace, "203.0.113.62")
            agent.wait_for(r"jail app: ban 203\.0\.113\.62 for 1h")  # everything before it was read by now
            assert agent.matching(r"ban 203\.0\.113\.61 for") == []
        held = elements(ns, "app_v4")
        assert set(held) == {"203.0.113.61", "203.0.113.62"} and held["203.0.113.61"] <= 3600
