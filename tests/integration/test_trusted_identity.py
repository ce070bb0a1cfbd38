"""Forged program identity: a local user's `logger -t sshd`, or a process that renamed itself
sshd, must not get an address banned by the sshd jail; the real sshd's lines must."""

from __future__ import annotations

from .agent import AgentProcess, journal_config

FORGED = "203.0.113.66"


def test_forged_sshd_lines_ban_nobody_and_the_real_sshd_gets_its_attacker_banned(
        journal_namespace, unprivileged_user, sshd_server, tmp_path):
    line = f"Failed password for root from {FORGED} port 4242 ssh2"
    with AgentProcess(tmp_path, journal_config(tmp_path, journal_namespace.name, "sshd", "sshd", 2)) as agent:
        for _ in range(3):
            # _COMM=sshd and SYSLOG_IDENTIFIER=sshd, but the executable is Python.
            renamed = journal_namespace.send_renamed("sshd", line, SYSLOG_IDENTIFIER="sshd")
            # An unprivileged user's logger writing as sshd through the syslog socket.
            journal_namespace.send_as_user(unprivileged_user.name, line, tag="sshd")
        assert renamed["_COMM"] == "sshd" and renamed["_EXE"] != "/usr/sbin/sshd"

        # The real sshd, attacked from another network namespace.
        assert sshd_server.attempts(2) == [False, False]
        attacker = sshd_server.attacker_address
        agent.wait_for(rf"jail sshd: ban {attacker} for 1h", timeout=30)
        # The forged lines were written first, so they have been read by now.
        assert agent.matching(FORGED) == []
        assert len(agent.matching(rf"jail sshd: failure from {attacker}")) == 1
