"""systemd's service notification protocol (sd_notify): READY, STATUS, WATCHDOG and STOPPING
sent as datagrams to $NOTIFY_SOCKET. Without that variable (not started by systemd with
Type=notify) every call does nothing.

Written over the socket directly: the protocol is one datagram of `KEY=VALUE` lines, and this
keeps the agent free of systemd-python where the journal source is not used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("jailwarden.notify")

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates


class Notifier:
    """One service manager connection, from the environment the agent was started with."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET", "")
        # '@' is the abstract namespace (a leading NUL byte on the wire).
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = _watchdog_interval(environ)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    async def keep_informed(self, status: Callable[[], str]) -> None:
        """Until cancelled: WATCHDOG=1 as often as systemd asks for it, sent from the loop (a loop
        that is stuck misses it, and systemd restarts the agent), and STATUS= every few seconds."""
        interval = self.watchdog_interval
        last_status = 0.0
        while True:
            await asyncio.sleep(min(interval, STATUS_INTERVAL) if interval else STATUS_INTERVAL)
            if interval:
                self.watchdog()
            if time.monotonic() - last_status >= STATUS_INTERVAL:
                self.status(status())
                last_status = time.monotonic()

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self.address)
        except OSError as error:
            if not self._failed:  # once: systemd restarting must not flood the log
                log.error("cannot notify the service manager at %s: %s", self.address.replace("\0", "@"), error)
                self._failed = True
            return
        self._failed = False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ: dict[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC, as sd_watchdog_enabled advises;
    None when no watchdog is set or it is meant for another process (WATCHDOG_PID)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000
