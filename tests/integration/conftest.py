"""Fixtures for integration tests against real daemons: a private journald (journal
namespace), temporary local users, and a real sshd attacked from another network namespace.

Each fixture creates what it needs and removes it on teardown, also when the test fails.
They need root; without it the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .journald import JOURNALD, JournalNamespace
from .sshd import SSHD, SshServer, TemporaryUser


def require_root() -> None:
    """Skip the calling test unless it runs as root (integration tests run as root in CI)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: starts daemons, creates users and network namespaces")


def require_tools(*tools: str) -> None:
    """Skip the calling test unless every tool (a name on PATH or an absolute path) exists."""
    missing = [tool for tool in tools if not (os.access(tool, os.X_OK) if "/" in tool else shutil.which(tool))]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


DISTRIBUTION_PYTHON = "/usr/bin/python3"
# What the distribution's interpreter must import: the libraries the firewall backends bind to.
_DISTRIBUTION_PROBE = """
import sys, pyroute2, iptc, nftables
assert sys.version_info >= (3, 11), sys.version
print(getattr(pyroute2, "__version__", "?"), pyroute2.__file__, iptc.__file__, nftables.__file__)
"""


@pytest.fixture(scope="session", params=["pypi", "distribution"], ids=["pypi-libs", "debian-libs"])
def interpreter(request) -> str:
    """The Python that firewall code runs under in a namespace: this run's (the PyPI releases in
    the venv), then the distribution's /usr/bin/python3 with its python3-pyroute2, python3-iptables
    and python3-nftables (Debian 12: pyroute2 0.7.2, python-iptables 1.0.1), which the packaged
    agent uses. The second is skipped, with the reason, where those packages are not installed."""
    if request.param == "pypi":
        return sys.executable
    probe = subprocess.run([DISTRIBUTION_PYTHON, "-c", _DISTRIBUTION_PROBE], capture_output=True, text=True)
    if probe.returncode != 0 or "/usr/lib/python3/dist-packages/" not in probe.stdout:
        reason = (probe.stderr.strip().splitlines() or ["not from the distribution"])[-1]
        pytest.skip(f"{DISTRIBUTION_PYTHON} lacks the distribution's python3-pyroute2, python3-iptables or "
                    f"python3-nftables ({reason}); packaging/deps.sh installs them")
    return DISTRIBUTION_PYTHON


@pytest.fixture
def journal_namespace():
    """A running JournalNamespace (private journald, ~10 ms to start), removed afterwards."""
    require_root()
    require_tools(JOURNALD, "journalctl")
    with JournalNamespace() as namespace:
        yield namespace


@pytest.fixture
def unprivileged_user():
    """A TemporaryUser named jwforger<hex>, without password or home, deleted afterwards."""
    require_root()
    require_tools("useradd", "userdel", "runuser", "logger")
    with TemporaryUser("jwforger", shell="/usr/sbin/nologin") as user:
        yield user


@pytest.fixture
def sshd_server(journal_namespace):
    """A running SshServer logging into `journal_namespace`; `attempt()` attacks it."""
    require_tools(SSHD, "ssh", "sshpass", "ssh-keygen", "ip", "unshare", "chpasswd")
    with SshServer(journal_namespace) as server:
        yield server
