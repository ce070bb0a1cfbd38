"""The acceptance test of the product: a real OpenSSH server (Debian's, password authentication,
logging to a real journald) in network namespace `srv`, `jailwarden run` beside it with a kernel
firewall backend, and password guessing with a real ssh client from namespace `atk` across a
veth pair. The attack is stopped in the kernel, the ban ends on time, a repeat offence is banned
longer, and a kill -9 of the agent while it bans loses nothing and counts nothing twice.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from integration.agent import AgentProcess
from integration.conftest import require_root, require_tools
from integration.polling import wait_until
from integration.sshd import SSHD, SshServer

BANTIME = 30


def kernel_ban(server: SshServer, backend: str) -> float | None:
    """Seconds left of the attacker's ban in the kernel's own view, None if it is not there."""
    run = ["ip", "netns", "exec", server.server_netns]
    if backend == "ipset":
        listing = subprocess.run([*run, "ipset", "list", "jw-sshd-4"], capture_output=True, text=True).stdout
        found = re.search(rf"^{re.escape(server.attacker_address)} timeout (\d+)", listing, re.MULTILINE)
        return float(found.group(1)) if found else None
    listing = subprocess.run([*run, "nft", "-j", "list", "set", "inet", "jailwarden", "sshd_v4"], capture_output=True,
                             text=True).stdout
    for entry in json.loads(listing)["nftables"] if listing else []:
        for element in entry.get("set", {}).get("elem", []):
            if isinstance(element, dict) and element["elem"]["val"] == server.attacker_address:
                return float(element["elem"].get("expires", element["elem"].get("timeout")))
    return None


def failed_logins(journal) -> list[dict]:
    return journal.entries(lambda entry: entry.get("MESSAGE", "").startswith("Failed password"))


def connects(server: SshServer) -> bool:
    """Whether a new TCP connection from the attacker's namespace reaches sshd's port."""
    code = (f"import socket; s = socket.socket(); s.settimeout(1)\n"
            f"try: s.connect(({server.server_address!r}, 22)); print('yes')\nexcept OSError: print('no')")
    result = subprocess.run(["ip", "netns", "exec", server.attacker_netns, sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=10)
    return result.stdout.strip() == "yes"


def status(agent: AgentProcess) -> dict:
    result = agent.cli("status", "sshd", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def config(workdir, journal: str, backend: str, agent_extra: str = "") -> str:
    """The agent beside the real sshd: jail sshd on the journal namespace `journal`, bans
    through `backend`; `agent_extra` lines go into [agent]."""
    return f"""
[agent]
state_dir = "{workdir}/state"
socket = "{workdir}/control.sock"
backend = "{backend}"
{agent_extra}
[sources.journal]
namespace = "{journal}"
[sources.syslog]
enabled = false
[jails.sshd]
filter = "sshd"
maxretry = 3
findtime = "10m"
bantime = "{BANTIME}s"
bantime_increment = {{ factor = 2, max = "1w" }}
"""


@pytest.mark.parametrize("backend", ["ipset", "nftables"])
def test_a_password_guessing_attack_on_a_real_sshd_is_stopped(journal_namespace, tmp_path, backend):
    require_root()
    require_tools(SSHD, "ssh", "sshpass", "ssh-keygen", "ip", "unshare", "chpasswd",
                  "ipset" if backend == "ipset" else "nft")
    with SshServer(journal_namespace, use_pam=False) as server:
        agent = AgentProcess(tmp_path, config(tmp_path, journal_namespace.name, backend), dry_run=False,
                             netns=server.server_netns)
        agent.start()
        try:
            attacker = server.attacker_address
            assert connects(server)

            # Three failed password logins, one after the other.
            for _ in range(3):
                assert server.attempt() is False
            third = wait_until(lambda: failed_logins(journal_namespace)[2:3], "sshd to log the third failure")[0]
            logged = third["__REALTIME_TIMESTAMP"].timestamp()
            wait_until(lambda: kernel_ban(server, backend) is not None, "the ban in the kernel", timeout=1.0)
            print(f"\n{backend}: last failed login logged -> ban in the kernel: {1000 * (time.time() - logged):.0f} ms"
                  " (upper bound: polled)")
            assert not connects(server)
            [ban] = status(agent)["banned"]
            assert ban["address"] == attacker and ban["offence"] == 1 and ban["remaining"] <= BANTIME

            # The ban ends on time (the kernel and the agent), and the door opens again.
            wait_until(lambda: connects(server), "the connection after the ban ended", timeout=BANTIME + 5)
            wait_until(lambda: status(agent)["banned"] == [], "the agent to end the ban")

            # A repeat offence: banned twice as long.
            for _ in range(3):
                server.attempt()
            wait_until(lambda: kernel_ban(server, backend) is not None, "the second ban", timeout=5)
            assert 2 * BANTIME - 5 <= kernel_ban(server, backend) <= 2 * BANTIME
            assert status(agent)["banned"][0]["offence"] == 2

            # kill -9 while banned: the ban stays in the kernel, and after the restart the agent
            # has it with its time left, and counts none of the failures it reads again.
            agent.kill()
            killed = time.monotonic()
            assert kernel_ban(server, backend) is not None and not connects(server)
            agent.start()
            [ban] = status(agent)["banned"]
            assert ban["offence"] == 2 and ban["remaining"] <= 2 * BANTIME - (time.monotonic() - killed) + 1
            time.sleep(1.5)  # the journal read back from the stored position by now
            assert status(agent)["failures"] == 0 and agent.matching(rf"ban {re.escape(attacker)} for") == []
            assert not connects(server)
        finally:
            agent.stop()
