"""What the agent's stream servers (the control socket, the HTTP report endpoint) share: at most
so many connections at once, none of them able to hurt the loop, all ended by stop(); and a log
that a misbehaving client cannot flood (`Throttle`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable


class Throttle:
    """At most `burst` log lines per kind of problem per `interval`, so a client repeating a bad
    request (or an attacker repeating a forged line) cannot flood the daemon's log; the next line
    logged says how many were held back. Lines go to `logger`, each starting with `prefix`."""

    def __init__(self, logger: logging.Logger, prefix: str, interval: float = 60.0, burst: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._prefix = prefix
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._kinds: dict[str, list] = {}  # kind -> [start of the interval, lines logged in it, lines held back]

    def warning(self, kind: str, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        now = self._clock()
        entry = self._kinds.setdefault(kind, [now, 0, 0])
        if now - entry[0] >= self._interval:
            entry[0], entry[1] = now, 0
        if entry[1] >= self._burst:
            entry[2] += 1
            return
        held = f" ({entry[2]} similar problems not logged since the last line)" if entry[2] else ""
        entry[1], entry[2] = entry[1] + 1, 0
        self._logger.warning(self._prefix + message + held, *args, exc_info=exc_info)


async def send(writer: asyncio.StreamWriter, data: bytes, timeout: float) -> None:
    """Write `data`; TimeoutError when the client has not taken it within `timeout` seconds (it
    stopped reading its answers, and is closed like an idle client)."""
    writer.write(data)
    await asyncio.wait_for(writer.drain(), timeout)


class StreamServer:
    """Keeps a server's connections: each is served by `_converse`, and one beyond
    `max_connections` is sent `_refusal()` and closed. A subclass starts listening with
    `_serve` as the callback and keeps the server in `_server`."""

    def __init__(self, *, max_connections: int, idle_timeout: float, throttle: Throttle) -> None:
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._throttle = throttle
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting and close open connections; a request under way gets `grace` seconds
        to be answered before it is cancelled."""
        if self._server is not None:
            self._server.close()
        # Closing, not cancelling: Python 3.11's stream server logs a cancelled connection task
        # as an error. A closed connection ends its conversation at the next read.
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _refusal(self) -> bytes:
        """What a connection beyond the limit is told."""
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._connections) >= self._max_connections:
                self._throttle.warning("limit", "connection refused: %d connections are open", self._max_connections)
                await send(writer, self._refusal(), self._idle_timeout)
                return
            self._connections[task] = writer
            await self._converse(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client left, or stopped reading its answers: its business
        except Exception as error:  # nothing a client does may escape into the loop
            self._throttle.warning("connection", "connection failed: %s", error, exc_info=error)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
