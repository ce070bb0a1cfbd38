"""The RPMs: `make rpm` builds packaging/rpm/jailwarden.spec here with rpmbuild into the same
layout as the .deb, jailwarden and its subpackage jailwarden-rsyslog with the rsyslog snippet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import VERSION

SNIPPET = "/etc/rsyslog.d/60-jailwarden.conf"


def rpm_query(rpm, *options: str) -> list[str]:
    if not shutil.which("rpm"):
        raise AssertionError("rpm is missing although make rpm succeeded")
    return subprocess.run(["rpm", "-qp", *options, str(rpm)], capture_output=True, text=True,
                          check=True).stdout.splitlines()


@pytest.fixture(scope="session")
def rsyslog_rpm(rpm: Path) -> Path:
    """jailwarden-rsyslog, built from the same spec by the same `make rpm` as jailwarden."""
    package = rpm.with_name(f"jailwarden-rsyslog-{VERSION}-1.noarch.rpm")
    assert package.is_file(), f"make rpm made no {package}"
    return package


def test_rpm_has_the_debian_layout_and_config_files(rpm):
    files = set(rpm_query(rpm, "-l"))
    assert {"/usr/sbin/jailwarden", "/usr/lib/jailwarden/agent/cli.py", "/usr/lib/jailwarden/parsers/filters/sshd.toml",
            "/usr/lib/systemd/system/jailwarden.service", "/etc/jailwarden/jailwarden.toml",
            "/usr/share/bash-completion/completions/jailwarden"} <= files
    assert set(rpm_query(rpm, "--configfiles")) == {"/etc/jailwarden/jailwarden.toml"}


def test_rsyslog_snippet_is_a_noreplace_config_file_of_the_rsyslog_subpackage_only(rpm, rsyslog_rpm):
    assert SNIPPET not in rpm_query(rpm, "-l")
    assert "jailwarden-rsyslog" in rpm_query(rpm, "--suggests")
    # Mode, and the config file flags: c(onfig), n(oreplace).
    assert rpm_query(rsyslog_rpm, "--qf", "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]") == [
        f"-rw-r--r-- cn {SNIPPET}"]
    requires = rpm_query(rsyslog_rpm, "--requires")
    assert {"rsyslog", "rsyslog-relp", f"jailwarden = {VERSION}-1"} <= set(requires)
    # rsyslog reads its configuration only at start: a running one is restarted when the snippet
    # comes and when it goes.
    scripts = "\n".join(rpm_query(rsyslog_rpm, "--scripts"))
    assert scripts.count("systemctl try-restart rsyslog.service") == 2


def test_rpm_requires_distribution_libraries_and_tears_down_on_erase(rpm):
    requires = " ".join(rpm_query(rpm, "--requires"))
    for name in ("python3-systemd", "python3-pyroute2", "nftables"):
        assert name in requires
    assert "cachetools" not in requires and "ipset" not in requires
    scripts = "\n".join(rpm_query(rpm, "--scripts"))
    assert "jailwarden teardown" in scripts and "rm -rf /var/lib/jailwarden" in scripts
