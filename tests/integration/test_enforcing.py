"""The agent without --dry-run: its bans reach the firewall backend, end on time, and a restart
adopts what the backend holds instead of banning again. The hostsdeny backend on a file of the
test's stands in for the kernel here; the kernel backends have their own tests."""

from __future__ import annotations

from .agent import AgentProcess, journal_config
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
