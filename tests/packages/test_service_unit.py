"""The packaged unit run by a real systemd: the clean Debian 12 root, with the .deb and systemd
installed, is booted by systemd-nspawn (systemd as its PID 1, a network namespace of its own,
so the agent's firewall never touches this machine's); a one-shot service inside checks the
agent as systemd sees it and writes what it found, then powers the container off."""

from __future__ import annotations

import shutil
import subprocess

import pytest

# Runs inside the booted container; each line of /root/unit-check.txt is KEY=VALUE.
CHECK = r"""#!/bin/bash
exec > /root/unit-check.txt 2>&1
show() { systemctl show jailwarden -p "$1" --value; }
for i in $(seq 1 60); do [ "$(systemctl is-active jailwarden)" = active ] && break; sleep 1; done
echo "active=$(systemctl is-active jailwarden)"
echo "type=$(show Type)"
echo "status=$(show StatusText)"
echo "watchdog=$(show WatchdogUSec)"
pid=$(show MainPID)
sleep 40  # past WatchdogSec=30s: a loop that missed its pings would have been killed by now
echo "restarts=$(show NRestarts)"
echo "same_pid=$([ "$(show MainPID)" = "$pid" ] && echo yes || echo no)"
systemctl reload jailwarden && echo "reload=ok" || echo "reload=failed"
cp /etc/jailwarden/jailwarden.toml /root/good.toml
echo 'maxretry = "lots"' >> /etc/jailwarden/jailwarden.toml
systemctl reload jailwarden && echo "broken_reload=ok" || echo "broken_reload=refused"
echo "after_broken=$(systemctl is-active jailwarden) same_pid=$([ "$(show MainPID)" = "$pid" ] && echo yes || echo no)"
cp /root/good.toml /etc/jailwarden/jailwarden.toml
systemctl stop jailwarden
echo "stopped=$(systemctl is-active jailwarden) result=$(show Result)"
score='s/.*exposure level for jailwarden.service: \([0-9.]*\).*/\1/p'
echo "exposure=$(systemd-analyze security jailwarden.service 2>&1 | sed -n "$score")"
echo "journal<<"; journalctl -u jailwarden --no-pager -o cat | tail -30
systemctl poweroff
"""

UNIT = """[Unit]
Description=check jailwarden as systemd runs it
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/bin/unit-check
[Install]
WantedBy=multi-user.target
"""


def test_the_unit_runs_under_systemd_with_notify_watchdog_reload_and_stop(deb, debian_root):
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-nspawn is missing (`make packaging-deps` installs systemd-container)")
    root = debian_root.path
    shutil.copy(deb, root / "tmp" / deb.name)
    install = debian_root.run(f"apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                              f"systemd systemd-sysv dbus /tmp/{deb.name}")
    if install.returncode != 0 and "Could not resolve" in install.stdout + install.stderr:
        pytest.skip(f"the Debian mirror cannot be reached from here: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    (root / "usr/local/bin/unit-check").write_text(CHECK)
    (root / "usr/local/bin/unit-check").chmod(0o755)
    (root / "etc/systemd/system/unit-check.service").write_text(UNIT)
    (root / "etc/systemd/system/multi-user.target.wants/unit-check.service").symlink_to(
        "/etc/systemd/system/unit-check.service")

    # The container gets a /proc of its own: the host's, mounted there for apt, would show the
    # container's systemd this machine's processes under their pids.
    subprocess.run(["umount", "-l", str(root / "proc")], check=True)
    debian_root.mounts.remove(root / "proc")
    # --register=no --keep-unit: no machined or system bus needed on this (non-systemd) host.
    boot = subprocess.run(["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network",
                           "-D", str(root), "-b"], capture_output=True, text=True, timeout=300)
    report = (root / "root/unit-check.txt").read_text() if (root / "root/unit-check.txt").exists() else ""
    assert report, f"no report from the container ({boot.returncode}): {boot.stdout[-2000:]}{boot.stderr[-2000:]}"
    found = dict(line.split("=", 1) for line in report.split("journal<<")[0].splitlines() if "=" in line)
    journal = report.split("journal<<")[-1]
    assert found["active"] == "active" and found["type"] == "notify", report
    assert found["status"].startswith("1 jails, 0 active bans"), report  # STATUS= from sd_notify
    assert found["watchdog"] == "30s" and found["restarts"] == "0" and found["same_pid"] == "yes", report
    assert found["reload"] == "ok" and "reloaded" in journal, report
    assert found["broken_reload"] == "refused" and found["after_broken"] == "active same_pid=yes", report
    assert found["stopped"] == "inactive result=success" and "stopping" in journal, report
    assert float(found["exposure"]) <= 3.0, report
