"""The RPM: `make rpm` builds packaging/rpm/jailwarden.spec here with rpmbuild into the same
layout as the .deb."""

from __future__ import annotations

import shutil
import subprocess


def rpm_query(rpm, *options: str) -> list[str]:
    if not shutil.which("rpm"):
        raise AssertionError("rpm is missing although make rpm succeeded")
    return subprocess.run(["rpm", "-qp", *options, str(rpm)], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_rpm_has_the_debian_layout_and_config_files(rpm):
    files = set(rpm_query(rpm, "-l"))
    assert {"/usr/sbin/jailwarden", "/usr/lib/jailwarden/agent/cli.py", "/usr/lib/jailwarden/parsers/filters/sshd.toml",
            "/usr/lib/systemd/system/jailwarden.service", "/etc/jailwarden/jailwarden.toml",
            "/etc/rsyslog.d/60-jailwarden.conf", "/usr/share/bash-completion/completions/jailwarden"} <= files
    assert set(rpm_query(rpm, "--configfiles")) == {"/etc/jailwarden/jailwarden.toml",
                                                     "/etc/rsyslog.d/60-jailwarden.conf"}


def test_rpm_requires_distribution_libraries_and_tears_down_on_erase(rpm):
    requires = " ".join(rpm_query(rpm, "--requires"))
    for name in ("python3-systemd", "python3-pyroute2", "nftables"):
        assert name in requires
    assert "cachetools" not in requires and "ipset" not in requires
    scripts = "\n".join(rpm_query(rpm, "--scripts"))
    assert "jailwarden teardown" in scripts and "rm -rf /var/lib/jailwarden" in scripts
