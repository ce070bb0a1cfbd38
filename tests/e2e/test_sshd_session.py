"""Self-lockout: an admin logged in over ssh who then mistypes a password (in a second terminal,
a script) is not banned while the session lasts. A real sshd records the session in utmp (its own,
in its private /run), the agent reads it, and failures from that address are not counted until
the session ends; then the same failures ban as usual."""

from __future__ import annotations

import subprocess

from integration.agent import AgentProcess
from integration.conftest import require_root, require_tools
from integration.polling import wait_until
from integration.sshd import SSHD, SshServer

from .test_sshd_attack import config

from agent.sessions import session_addresses


def open_session(server: SshServer) -> subprocess.Popen:
    """A logged-in interactive session (a pty, as a terminal has) from the attacker's namespace."""
    return subprocess.Popen(
        ["ip", "netns", "exec", server.attacker_netns, "sshpass", "-p", server.password, "ssh", "-tt",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
         f"{server.user.name}@{server.server_address}", "sleep 300"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_an_address_with_a_login_session_is_not_banned_until_the_session_ends(journal_namespace, tmp_path):
    require_root()
    require_tools(SSHD, "ssh", "sshpass", "ssh-keygen", "ip", "unshare", "chpasswd")
    with SshServer(journal_namespace, use_pam=False) as server:
        utmp = f"/proc/{server.pid}/root/run/utmp"  # sshd's private /run, seen from here
        agent = AgentProcess(tmp_path, config(tmp_path, journal_namespace.name, "log", f'utmp = "{utmp}"'),
                             dry_run=False)
        session = open_session(server)
        try:
            agent.start()
            admin = server.attacker_address
            wait_until(lambda: {str(a) for a in session_addresses(open(utmp, "rb").read())} == {admin},
                       "sshd to record the session in utmp")
            agent.wait_for(rf"protecting {admin} from bans: a user is logged in from it", timeout=10)

            assert server.attempts(3) == [False] * 3
            agent.wait_for(rf"failure from {admin} not counted: a user is logged in on this host from it", count=3)
            assert agent.matching(rf"ban {admin}") == []
            refused = agent.cli("ban", "sshd", admin)
            assert refused.returncode != 0 and "a user is logged in on this host from it" in refused.stderr

            session.terminate()  # the admin logs out: sshd marks the record dead
            session.wait(timeout=10)
            wait_until(lambda: session_addresses(open(utmp, "rb").read()) == set(), "sshd to end the session")
            agent.wait_for(rf"no longer protecting {admin}: its last session ended", timeout=10)
            assert server.attempts(3) == [False] * 3
            agent.wait_for(rf"jail sshd: ban {admin} for ", timeout=15)
        finally:
            if session.poll() is None:
                session.kill()
            agent.stop()
