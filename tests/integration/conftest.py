"""Fixtures for integration tests against real daemons: a private journald (journal
namespace), temporary local users, and a real sshd attacked from another network namespace.

Each fixture creates what it needs and removes it on teardown, also when the test fails.
They need root; without it the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil

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
