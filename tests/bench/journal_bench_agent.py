"""The jailwarden agent for the journal benchmark: `jailwarden run --dry-run` as a child
process whose log lines carry the time each was logged.

Run as a script, this module is the agent's entry point with one change: every log line starts
with the record's `created` time (`time.time()` taken when the daemon logs the outcome, right
after the pipeline returned it), so a line's time does not depend on when anyone reads the
pipe. Everything else is `agent.cli.main` unchanged.

`AgentRun` starts one such process on a config written into a temporary directory, with
stderr going to a file, and reads back its failure and ban lines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JAIL = "bench"
_EVENT = re.compile(r"^(\d+\.\d+) \w+: jail " + JAIL + r": (?:(failure) from (\S+) |(ban) (\S+) for )")


def _agent_main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    import agent.cli as cli  # here, not at the top: the repository goes on sys.path first

    plain = cli._StderrFormat.format
    cli._StderrFormat.format = lambda self, record: f"{record.created:.6f} {plain(self, record)}"
    return cli.main(argv)


class AgentRun:
    """One agent process on a journal namespace with one jail `bench`; a context manager that
    stops the process and removes its directory even on failure."""

    def __init__(self, namespace: str, filter_text: str, *, maxretry: int, poll_interval: float) -> None:
        self.namespace = namespace
        self.filter_text = filter_text
        self.maxretry = maxretry
        self.poll_interval = poll_interval
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> AgentRun:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "agent.log"

    def start(self, timeout: float = 20.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jw-bench-agent-"))
        try:
            (self.dir / "filter.d").mkdir()
            (self.dir / "filter.d" / f"{JAIL}.toml").write_text(self.filter_text)
            config = self.dir / "jailwarden.toml"
            config.write_text(f"""
[agent]
state_dir = "{self.dir}/state"
socket = "{self.dir}/control.sock"
[sources.journal]
namespace = "{self.namespace}"
poll_interval = {self.poll_interval!r}
[sources.syslog]
enabled = false
[jails.{JAIL}]
filter = "{JAIL}"
maxretry = {self.maxretry}
findtime = "1h"
bantime = "1h"
""")
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, __file__, "run", "--dry-run", "--config", str(config), "--log-level", "debug"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO)
            deadline = time.monotonic() + timeout
            while not re.search(r"^\S+ \w+: running", self.log_text(), re.MULTILINE):
                if self.process.poll() is not None:
                    raise RuntimeError(f"the agent exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the agent did not start within {timeout} s:\n{self.log_text()[-3000:]}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[tuple[str, str, float]]:
        """(kind, address, time) for each `failure from` ("counted") and `ban` ("banned") line."""
        events = []
        for line in self.log_text().splitlines():
            found = _EVENT.match(line)
            if found:
                when, failure, failed_address, ban, banned_address = found.groups()
                if failure:
                    events.append(("counted", failed_address, float(when)))
                else:
                    events.append(("banned", banned_address, float(when)))
        return events


if __name__ == "__main__":
    os.environ.pop("JOURNAL_STREAM", None)  # plain "level: message" lines, whoever runs the benchmark
    sys.exit(_agent_main(sys.argv[1:]))
