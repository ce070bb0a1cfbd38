"""The README's syslog-ng example (/etc/syslog-ng/conf.d/jailwarden.conf), taken from README.md,
in a real syslog-ng from Debian 12 (an overlay of the clean root) forwarding to the real syslog
source on this machine's loopback: auth, authpriv, mail and local5 arrive, other facilities do
not, and a line logged while the agent is down waits in the disk buffer."""

from __future__ import annotations

import re
import secrets
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.polling import DEADLINE, terminate, wait_until
from integration.rsyslog import RunningSource, free_port, run_logger, syslog_config

from .conftest import REPO, Chroot

README = REPO / "README.md"
REOPEN_DEFAULT = 60  # syslog-ng's time-reopen() when the configuration sets none
REOPEN_BUDGET = 30  # seconds this test waits for syslog-ng to reconnect; beyond, it only checks the line waits
FAILURE = "Failed password for root from 203.0.113.9 port 22 ssh2"


def readme_example() -> str:
    """The code block the README gives for /etc/syslog-ng/conf.d/jailwarden.conf."""
    match = re.search(r"`/etc/syslog-ng/conf\.d/jailwarden\.conf`.*?\n( *)```\n(.*?)\n\1```", README.read_text(), re.S)
    assert match, "README.md has no code block after `/etc/syslog-ng/conf.d/jailwarden.conf`"
    return textwrap.dedent(match.group(2))


def forwarding_config(input_port: int, agent_port: int, buffer_dir: str) -> str:
    """A whole syslog-ng configuration: a network source s_net on loopback UDP, then the README's
    example verbatim but for the agent's port and the disk buffer's directory."""
    example = readme_example()
    for text in ("port(5514)", 'dir("/var/lib/syslog-ng")'):
        assert example.count(text) == 1, f"the README's syslog-ng example no longer has {text} once:\n{example}"
    example = example.replace("port(5514)", f"port({agent_port})")
    example = example.replace('dir("/var/lib/syslog-ng")', f'dir("{buffer_dir}")')
    return ("@version: 3.38\n"
            f'source s_net {{ network(transport("udp") ip("127.0.0.1") port({input_port})); }};\n'
            f"{example}\n")


class SyslogNg:
    """syslog-ng in the foreground in the root, its configuration, persist file, control socket,
    pid file and disk buffer in a directory of the root's /tmp; fed by `logger` over UDP."""

    def __init__(self, root: Chroot, agent_port: int) -> None:
        self.root = root
        self.work = Path(tempfile.mkdtemp(prefix="syslog-ng-", dir=root.path / "tmp"))
        self.inside = f"/tmp/{self.work.name}"  # the same directory as syslog-ng sees it
        self.input_port = free_port()
        (self.work / "buffer").mkdir()
        (self.work / "syslog-ng.conf").write_text(forwarding_config(self.input_port, agent_port,
                                                                    f"{self.inside}/buffer"))
        self.output = self.work / "syslog-ng.out"
        self.process: subprocess.Popen | None = None

    def start(self) -> SyslogNg:
        command = ["chroot", str(self.root.path), "syslog-ng", "--foreground", "--stderr", "--no-caps",
                   f"--cfgfile={self.inside}/syslog-ng.conf", f"--persist-file={self.inside}/syslog-ng.persist",
                   f"--control={self.inside}/syslog-ng.ctl", f"--pidfile={self.inside}/syslog-ng.pid"]
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
        wait_until(lambda: self.process.poll() is not None or "syslog-ng starting up" in self.said(),
                   "syslog-ng to start")
        assert self.process.poll() is None, f"syslog-ng exited with {self.process.returncode}:\n{self.said()}"
        return self

    def stop(self) -> None:
        terminate(self.process)

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def log(self, priority: str, text: str) -> None:
        run_logger("--server", "127.0.0.1", "--port", str(self.input_port), "--udp", "--rfc3164",
                   "-p", priority, "-t", "sshd", text)

    def queued(self) -> int:
        """Messages waiting in d_jailwarden's queue (its disk buffer), as syslog-ng-ctl counts them."""
        stats = self.root.run(f"syslog-ng-ctl stats --control={self.inside}/syslog-ng.ctl", timeout=DEADLINE)
        assert stats.returncode == 0, stats.stderr
        found = re.search(r"^dst\.syslog;d_jailwarden#0;[^;]*;a;queued;(\d+)$", stats.stdout, re.M)
        assert found, stats.stdout
        return int(found.group(1))


@pytest.fixture
def syslog_ng_root(debian_root: Chroot) -> Chroot:
    """The clean root with Debian's syslog-ng-core, not started by its package."""
    # Debian's syslog-ng.conf reads /proc/kmsg, this machine's kernel log: no service starts here.
    policy = debian_root.path / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    install = debian_root.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends syslog-ng-core")
    if install.returncode != 0 and "Could not resolve" in install.stdout + install.stderr:
        pytest.skip(f"the Debian mirror cannot be reached from here: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return debian_root


@pytest.fixture
def agent_port() -> int:
    return free_port()


@pytest.fixture
def syslog_ng(syslog_ng_root: Chroot, agent_port: int) -> Iterator[SyslogNg]:
    """Not started: syslog-ng that finds the agent's port closed waits time-reopen() before trying again."""
    daemon = SyslogNg(syslog_ng_root, agent_port)
    try:
        yield daemon
    finally:
        daemon.stop()


def test_readme_example_forwards_auth_mail_and_web_facilities_and_no_others(syslog_ng, agent_port):
    tag = secrets.token_hex(4)
    with RunningSource(syslog_config(f"tcp://127.0.0.1:{agent_port}")) as receiver:
        syslog_ng.start()
        syslog_ng.log("user.notice", f"{FAILURE} user-{tag}")
        for facility in ("auth", "authpriv", "mail", "local5"):
            syslog_ng.log(f"{facility}.notice", f"{FAILURE} {facility}-{tag}")
        for facility in ("auth", "authpriv", "mail", "local5"):
            event = receiver.wait_for_message(f"{facility}-{tag}")
            assert event.fields["SYSLOG_IDENTIFIER"] == "sshd" and event.trusted, event
        stats = receiver.stats()
    # syslog-ng handles lines in order: the user line, logged first, would have arrived by now.
    assert not [event for event in receiver.events if f"user-{tag}" in event.message]
    assert stats["malformed"] == 0 and stats["framing_errors"] == 0, stats
    assert list((syslog_ng.work / "buffer").glob("*.rqf")), "no reliable disk buffer in the configured dir()"


def test_a_line_logged_while_the_agent_is_down_waits_in_the_disk_buffer(syslog_ng, agent_port):
    """syslog-ng reads the end of the idle connection when the agent stops, so nothing is written
    into a closed connection; it keeps what comes meanwhile in the disk buffer and connects again
    after time-reopen(), 60 s unless the example sets it."""
    tag = secrets.token_hex(4)
    with RunningSource(syslog_config(f"tcp://127.0.0.1:{agent_port}")) as receiver:
        syslog_ng.start()
        syslog_ng.log("auth.notice", f"{FAILURE} before-{tag}")
        receiver.wait_for_message(f"before-{tag}")
    closed = wait_until(lambda: re.search(r"Syslog connection closed;.*time_reopen='(\d+)'", syslog_ng.said()),
                        "syslog-ng to see the agent close the connection")
    stopped = time.monotonic()
    reopen = int(closed.group(1))
    configured = re.search(r"time[-_]reopen\((\d+)\)", readme_example())
    assert reopen == (int(configured.group(1)) if configured else REOPEN_DEFAULT), syslog_ng.said()
    syslog_ng.log("auth.notice", f"{FAILURE} down-{tag}")
    wait_until(lambda: syslog_ng.queued() == 1, "the line in d_jailwarden's disk buffer", interval=0.1)
    if reopen > REOPEN_BUDGET:
        print(f"\nsyslog-ng holds the line logged while the agent was down in its disk buffer and sends it "
              f"only when it connects again, time_reopen={reopen} s after the agent stopped: not waited for")
        return
    with RunningSource(syslog_config(f"tcp://127.0.0.1:{agent_port}")) as receiver:
        wait_until(lambda: any(f"down-{tag}" in event.message for event in receiver.events),
                   "the line logged while the agent was down", timeout=reopen + DEADLINE, interval=0.1)
        print(f"\nthe line logged while the agent was down arrived {time.monotonic() - stopped:.1f} s after it stopped")
