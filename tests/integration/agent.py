"""The real agent for integration tests: `jailwarden run --dry-run` as a child process with a
config written for the test, its log read back line by line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_POLL = 0.01


def journal_config(workdir: Path, namespace: str, jail: str, filter_name: str, maxretry: int,
                   extra: str = "") -> str:
    """A config reading only journal namespace `namespace`, with one jail (findtime 10m,
    bantime 1h; `extra` lines are added to the jail's table)."""
    return f"""
[agent]
state_dir = "{workdir}/state"
socket = "{workdir}/control.sock"
[sources.journal]
namespace = "{namespace}"
[sources.syslog]
enabled = false
[jails.{jail}]
filter = "{filter_name}"
maxretry = {maxretry}
findtime = "10m"
bantime = "1h"
{extra}
"""


def socket_config(workdir: Path, backend: str = "log") -> str:
    """The [agent] and [sources] tables of an agent in `workdir` that reads syslog datagrams on
    `workdir`/syslog.sock only (no journal) and bans through `backend`; add [jails.*] and others."""
    return f"""
[agent]
state_dir = "{workdir}/state"
socket = "{workdir}/control.sock"
backend = "{backend}"
[sources.journal]
enabled = false
[sources.syslog]
listen = ["unix://{workdir}/syslog.sock"]
"""


def fleet_config(workdir: Path, fleet: str, node: str, key_file: Path, *, backend: str = "log", maxretry: int = 5,
                 fleet_count: bool = False, jail_extra: str = "") -> str:
    """socket_config, [fleet] with the Redis lines `fleet` (url, or sentinels and service), `node`
    and `key_file`, and jail sshd (findtime 10m, bantime 1h; `jail_extra` lines are added to it)
    counting failures fleet-wide with `fleet_count`."""
    return socket_config(workdir, backend) + f"""
[fleet]
{fleet}
node = "{node}"
key_file = "{key_file}"
[jails.sshd]
filter = "sshd"
maxretry = {maxretry}
findtime = "10m"
bantime = "1h"
fleet_count = {str(fleet_count).lower()}
{jail_extra}
"""


class AgentProcess:
    """`jailwarden run [--dry-run]` on `config` (TOML text); `filters` are written to filter.d.

    `lines` is everything it logged so far (the process writes its log to stderr).
    Use as a context manager, or call start()/stop().
    """

    def __init__(self, workdir: Path, config: str, filters: dict[str, str] | None = None, dry_run: bool = True,
                 netns: str | None = None, env: dict[str, str] | None = None, log_level: str = "debug",
                 interpreter: str = sys.executable) -> None:
        self.interpreter = interpreter  # the agent's Python: this run's, or the distribution's
        self.dry_run = dry_run
        self.log_level = log_level
        self.env = env  # added to this process's environment (NOTIFY_SOCKET, WATCHDOG_USEC)
        self.netns = netns  # a network namespace to run in (for tests of kernel firewall backends)
        self.workdir = workdir
        self.config_path = workdir / "jailwarden.toml"
        (workdir / "filter.d").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)
        for name, text in (filters or {}).items():
            (workdir / "filter.d" / f"{name}.toml").write_text(text)
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, ready: str = "running", timeout: float = 15.0) -> None:
        """Start and wait for the line saying it runs."""
        self.lines = []
        self.read_at: list[float] = []  # time.monotonic() when each of `lines` was read
        self.process = subprocess.Popen(
            [*(["ip", "netns", "exec", self.netns] if self.netns else []),
             self.interpreter, "-m", "agent.cli", "run", *(["--dry-run"] if self.dry_run else []),
             "--config", str(self.config_path), "--log-level", self.log_level],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **self.env} if self.env else None,
            cwd=Path(__file__).resolve().parents[2],
        )
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        self.wait_for(ready, timeout)

    def _read(self, stream) -> None:
        for line in stream:
            self.read_at.append(time.monotonic())  # before the line: a line always has its time
            self.lines.append(line.rstrip("\n"))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, as systemd stops it; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        status, self.process = self.process.returncode, None
        return status

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        """`jailwarden ARGV --socket` this agent's control socket."""
        socket = str(self.workdir / "control.sock")
        return subprocess.run([sys.executable, "-m", "agent.cli", *argv, "--socket", socket], capture_output=True,
                              text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to save or clean anything up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._reader.join(timeout=5)
            self.process = None

    def logged_at(self, pattern: str, timeout: float = 10.0) -> float:
        """time.monotonic() when the first line matching `pattern` was read (waiting for it), so a
        latency can run from the moment a line was logged rather than from when a poll saw it."""
        self.wait_for(pattern, timeout)
        return self.read_at[next(i for i, line in enumerate(list(self.lines)) if re.search(pattern, line))]

    def matching(self, pattern: str) -> list[str]:
        return [line for line in list(self.lines) if re.search(pattern, line)]

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """Poll until `count` logged lines match `pattern` (a regex); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pattern)
            if len(found) >= count:
                return found
            if self.process is not None and self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"the agent exited with {self.process.returncode} before logging "
                                     f"{pattern!r}:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} lines matching {pattern!r} within {timeout} s; "
                                     "the agent logged:\n" + "\n".join(self.lines[-30:]))
            time.sleep(_POLL)
