"""Privilege: what the agent writes is root's alone whatever the umask it is started with, and it
neither starts nor reloads on configuration that a user other than root could have written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from .agent import AgentProcess, socket_config
from .conftest import require_root
from .polling import wait_until
from .rsyslog import run_logger

REPO = Path(__file__).resolve().parents[2]


def jailwarden(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *argv], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def modes(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): stat.S_IMODE(path.lstat().st_mode)
            for path in [directory, *directory.rglob("*")]}


def test_what_the_agent_writes_is_not_readable_by_others_even_when_started_with_umask_0(tmp_path):
    require_root()
    config = socket_config(tmp_path) + """
[jails.sshd]
filter = "sshd"
maxretry = 2
"""
    agent = AgentProcess(tmp_path, config, dry_run=False)
    old = os.umask(0)  # the agent inherits it: its files must not depend on the umask it is given
    try:
        agent.start()
    finally:
        os.umask(old)
    try:
        for port in (4001, 4002):
            run_logger("-u", str(tmp_path / "syslog.sock"), "-d", "--rfc5424", "-t", "sshd", "-p", "auth.notice",
                       f"Failed password for root from 203.0.113.60 port {port} ssh2")
        agent.wait_for(r"jail sshd: ban 203\.0\.113\.60")
        state = tmp_path / "state"
        wait_until(lambda: any(name.endswith("-wal") for name in modes(state)), "the store's write-ahead log")
        while_running = modes(state)
        sockets = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("control.sock", "syslog.sock")}
    finally:
        agent.stop()
    assert sockets == {"control.sock": 0o600, "syslog.sock": 0o600}
    for name, mode in (while_running | modes(state)).items():
        assert mode & 0o077 == 0 if name != "." else mode == 0o700, f"{state / name}: mode {mode:04o}"


def test_the_agent_refuses_configuration_others_could_write_at_start_in_check_config_and_at_reload(tmp_path):
    require_root()
    config = socket_config(tmp_path) + """
[jails.sshd]
filter = "sshd"
"""
    jail_dir = tmp_path / "jail.d"
    jail_dir.mkdir()
    jail_dir.chmod(0o777)  # anyone could drop a jail (or an ignore list) in here
    expected = f"{jail_dir}: the directory is writable by its group and others (mode 0777): chmod go-w {jail_dir}"
    agent = AgentProcess(tmp_path, config, dry_run=False)
    try:
        agent.start(ready="not starting")
        assert expected in agent.lines
        wait_until(lambda: agent.process.poll() is not None, "the agent to exit")
        assert agent.process.returncode == 1
    finally:
        agent.stop()
    checked = jailwarden("check-config", "--config", str(agent.config_path))
    assert checked.returncode == 1 and expected in checked.stderr.splitlines()

    jail_dir.chmod(0o755)
    with agent:
        (tmp_path / "filter.d").chmod(0o775)
        reloaded = agent.cli("reload")
        assert reloaded.returncode != 0 and f"{tmp_path / 'filter.d'}: the directory is writable by its group" \
            in reloaded.stderr
        assert agent.cli("status").returncode == 0  # the running configuration is kept
