"""Fail2Ban for the journal benchmark: a private `fail2ban-server -f` watching one journal
namespace through its systemd backend, with a jail equivalent to the benchmark's jailwarden jail.

Everything it reads or writes is in its own temporary directory (config, socket, pid file,
sqlite database, log): nothing under /etc/fail2ban is read or changed. Its times come from two
places: its log (`Found ADDR` for each failure counted, `Ban ADDR` for each ban decision),
whose timestamps have millisecond resolution, and an action that appends `date +%s.%N` and the
address to a file when it bans, which adds the cost of running the action's shell.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SERVER = "/usr/bin/fail2ban-server"
JAIL = "jwbench"
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*\[" + JAIL + r"\] (Found|Ban) (\S+)")


def version() -> str | None:
    try:
        done = subprocess.run([SERVER, "-V"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


class Fail2BanServer:
    """One fail2ban-server; use as a context manager (stops the server and removes its
    directory even on failure)."""

    def __init__(self, namespace: str, exe: str, message_regex: str, maxretry: int, *,
                 action: str | None = None, netns: str | None = None) -> None:
        self.namespace = namespace
        self.exe = exe
        self.message_regex = message_regex
        self.maxretry = maxretry
        # `action`: the text of the jail's action file instead of the time stamp; `netns`: the
        # network namespace the server (and so its actions) runs in.
        self.action = action
        self.netns = netns
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Fail2BanServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "fail2ban.log"

    @property
    def stamp_path(self) -> Path:
        return self.dir / "bans.txt"

    def _write_config(self) -> Path:
        conf = self.dir / "conf"
        (conf / "filter.d").mkdir(parents=True)
        (conf / "action.d").mkdir()
        (conf / "fail2ban.conf").write_text(f"""[Definition]
loglevel = INFO
logtarget = {self.log_path}
syslogsocket = auto
socket = {self.dir}/fail2ban.sock
pidfile = {self.dir}/fail2ban.pid
dbfile = {self.dir}/fail2ban.sqlite3
dbpurgeage = 1d
dbmaxmatches = 10
[Thread]
""")
        (conf / "jail.conf").write_text(f"""[DEFAULT]
ignoreself = true
ignoreip =
usedns = no

[{JAIL}]
enabled = true
backend = systemd[namespace={self.namespace}]
filter = {JAIL}
maxretry = {self.maxretry}
findtime = 1h
bantime = 1h
action = {JAIL}-stamp
""")
        # The systemd backend hands the filter "HOST COMM[PID]: MESSAGE", so the regex is not
        # anchored at the start. journalmatch is the same identity as the jailwarden filter's.
        (conf / "filter.d" / f"{JAIL}.conf").write_text(f"""[Definition]
failregex = {self.message_regex}
ignoreregex =
journalmatch = _EXE={self.exe} _UID=0
""")
        (conf / "action.d" / f"{JAIL}-stamp.conf").write_text(self.action or f"""[Definition]
actionstart =
actionstop =
actioncheck =
actionban = printf '%%s <ip>\\n' "$(date +%%s.%%N)" >> {self.stamp_path}
actionunban =
""")
        return conf

    def start(self, timeout: float = 30.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jw-bench-f2b-"))
        try:
            conf = self._write_config()
            with open(self.dir / "server.out", "wb") as out:
                self.process = subprocess.Popen(
                    [*(["ip", "netns", "exec", self.netns] if self.netns else []),
                     SERVER, "-f", "-x", "-c", str(conf), "-s", str(self.dir / "fail2ban.sock"),
                     "-p", str(self.dir / "fail2ban.pid")],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            deadline = time.monotonic() + timeout
            while f"Jail '{JAIL}' started" not in self._log_text():
                if self.process.poll() is not None:
                    raise RuntimeError(f"fail2ban-server exited with {self.process.returncode}: "
                                       f"{self._log_text()[-2000:]}{self._out_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fail2ban-server did not start jail {JAIL} within {timeout} s: "
                                       f"{self._log_text()[-2000:]}{self._out_text()[-2000:]}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            # Its whole session: the server and any action shell still running.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.process.poll() is None:
                self.process.wait()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _out_text(self) -> str:
        try:
            return (self.dir / "server.out").read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[tuple[str, str, float]]:
        """(kind, address, time) for each `Found` ("counted") and `Ban` ("banned") log line.
        The log's times are truncated to the millisecond; half a millisecond is added back."""
        events = []
        for line in self._log_text().splitlines():
            found = _LOG_LINE.match(line)
            if found:
                stamp, millis, kind, address = found.groups()
                when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + (int(millis) + 0.5) / 1000
                events.append(("counted" if kind == "Found" else "banned", address, when))
        return events

    def action_times(self) -> dict[str, float]:
        """When the ban action's shell ran, per address."""
        try:
            text = self.stamp_path.read_text()
        except OSError:
            return {}
        times = {}
        for line in text.splitlines():
            stamp, _, address = line.partition(" ")
            times[address] = float(stamp)
        return times
