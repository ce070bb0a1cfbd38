"""Helpers for the syslog receiver's integration tests: the source running on its own event loop,
free loopback ports, `logger` and a real `rsyslogd` as clients, and polling with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.config import SyslogConfig
from agent.config_values import listen as parse_listen
from agent.events import LogEvent
from agent.sources.syslog import SyslogSource

from .polling import DEADLINE, terminate, wait_until

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free for both TCP and UDP right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as tcp, socket.socket(family, socket.SOCK_DGRAM) as udp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free for both TCP and UDP on {host}")


def udp_port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
        return False


def syslog_config(*listen: str, **settings: object) -> SyslogConfig:
    """A SyslogConfig listening where told (as the config file writes it), other settings as given."""
    return dataclasses.replace(SyslogConfig(enabled=True), listen=tuple(parse_listen(text) for text in listen),
                               **settings)


class RunningSource:
    """A SyslogSource on an event loop in a thread of its own; its events collect in `events`.

    The test thread stays free to run blocking clients; every look at the source's state goes
    through the loop, so it sees the state between two callbacks, never in the middle of one.
    """

    def __init__(self, config: SyslogConfig, sink: Callable[[LogEvent], None] | None = None) -> None:
        self.config = config
        self.events: list[LogEvent] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="syslog source loop", daemon=True)
        self.source = SyslogSource(config, self._collect)
        self._sink = sink

    @property
    def port(self) -> int:
        """The port of the first UDP or TCP address listened on."""
        return next(listen.port for listen in self.config.listen if listen.transport != "unix")

    def _collect(self, event: LogEvent) -> None:
        self.events.append(event)
        if self._sink is not None:
            self._sink(event)

    def __enter__(self) -> RunningSource:
        self.thread.start()
        try:
            self.call(self.source.start())
        except BaseException:
            self._end_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call(self.source.stop())
        finally:
            self._end_loop()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=DEADLINE)

    def stats(self) -> dict[str, int]:
        async def snapshot() -> dict[str, int]:
            return self.source.stats()

        return self.call(snapshot())

    def wait_for_stat(self, name: str, at_least: int = 1) -> dict[str, int]:
        """The stats once `name` has reached `at_least`."""
        def reached() -> dict[str, int] | None:
            stats = self.stats()
            return stats if stats[name] >= at_least else None

        return self._wait(reached, f"stats[{name!r}] >= {at_least}")

    def wait_for_message(self, text: str) -> LogEvent:
        """The first event whose message contains `text`."""
        def found() -> LogEvent | None:
            return next((event for event in list(self.events) if text in event.message), None)

        return self._wait(found, f"a message containing {text!r}")

    def _wait(self, condition: Callable[[], T | None], what: str) -> T:
        try:
            return wait_until(condition, what)
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; stats now: {self.stats()}") from None

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


def need_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (packaging/deps.sh installs it)")
    return path


def run_logger(*arguments: str) -> int:
    """Run util-linux logger with `arguments`; return its pid (what `-i` writes as the PID)."""
    process = subprocess.Popen([need_program("logger"), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output, _ = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, f"logger {' '.join(arguments)} failed: {output.decode(errors='replace')}"
    return process.pid


class Rsyslogd:
    """A real rsyslogd, fed by `logger` over UDP on a spare loopback port (no imuxsock, so the
    host's /dev/log is left alone), forwarding by the RainerScript `rules` given."""

    def __init__(self, workdir: Path, rules: str) -> None:
        self.workdir = workdir
        self.rules = rules
        self.input_port = 0
        self.process: subprocess.Popen | None = None
        self.output = workdir / "rsyslogd.out"

    def start(self) -> Rsyslogd:
        program = need_program("rsyslogd")
        self.input_port = free_port()
        config = self.workdir / "rsyslog.conf"
        config.write_text(
            f'global(workDirectory="{self.workdir}")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.input_port}")\n'
            f"{self.rules}\n"
        )
        with open(self.output, "wb") as output:
            command = [program, "-n", "-f", str(config), "-i", str(self.workdir / "rsyslogd.pid")]
            self.process = subprocess.Popen(command,
                                            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: self.process.poll() is not None or udp_port_taken("127.0.0.1", self.input_port),
                   f"rsyslogd to listen on 127.0.0.1:{self.input_port}")
        if self.process.poll() is not None:
            raise AssertionError(f"rsyslogd exited with {self.process.returncode}: {self.output.read_text()}")
        return self

    def stop(self) -> None:
        terminate(self.process)

    def log(self, message: str, tag: str = "sshd") -> int:
        """Send `message` to rsyslogd as `tag` with logger's pid; return that pid."""
        return run_logger("--server", "127.0.0.1", "--port", str(self.input_port), "--udp", "--rfc3164",
                          "-t", tag, "-i", message)
