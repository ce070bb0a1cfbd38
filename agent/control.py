"""The control socket: the daemon's side (`ControlServer`, on the agent's loop) and the CLI's
(`ControlClient`, blocking), speaking one JSON object per line each way.

A request is `{"command": NAME, ...arguments}`; the answer is `{"ok": true, "result": ...}` or
`{"ok": false, "error": MESSAGE}`. What the commands do is the handler's business (the daemon);
this module checks who may connect, frames and validates requests, and keeps clients from
hurting the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any

from agent.ratelimit import RateLimit, RateLimited, ReportLimit
from agent.stream_server import StreamServer, Throttle, send

log = logging.getLogger("jailwarden.control")

MAX_LINE = 64 * 1024  # bytes in one request line, newline not counted
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 60.0  # seconds a connection may take to send its next complete line
_MAX_ANSWER = 256 * 1024 * 1024  # what the client reads at most: a list of every ban can be large

_ABSENT = object()
# Each command's arguments: name -> (accepted types, required, default). Types are checked
# exactly (a JSON true is not a string, nor a number a boolean).
_COMMANDS: dict[str, dict[str, tuple[tuple[type, ...], bool, object]]] = {
    "status": {"jail": ((str,), False, None)},
    "bans": {"jail": ((str,), False, None)},
    "ban": {"jail": ((str,), True, _ABSENT), "address": ((str,), True, _ABSENT), "duration": ((str,), False, None)},
    "unban": {"address": ((str,), False, None), "jail": ((str,), False, None), "all": ((bool,), False, False)},
    "reload": {},
    "report": {"jail": ((str,), True, _ABSENT), "address": ((str,), True, _ABSENT), "reason": ((str,), False, None)},
}


class ControlError(Exception):
    """A request the daemon refuses (unknown jail, protected address, bad duration...); the
    message is what the client is told."""


class UnknownJail(ControlError):
    """A request naming a jail that does not run (HTTP answers it 404, not 400)."""


class DaemonUnavailable(Exception):
    """The CLI cannot talk to a daemon: none runs, the socket is not ours to use, or it did not answer."""


class ControlSocketError(Exception):
    """The server cannot take its socket path: another daemon answers there, or it cannot be made."""


def check_arguments(command: str, request: dict[str, Any]) -> dict[str, Any]:
    """The handler's keyword arguments for `request`, every one present (defaults filled in);
    raises ControlError naming what is wrong."""
    spec = _COMMANDS[command]
    unknown = sorted(set(request) - set(spec) - {"command"})
    if unknown:
        expected = ", ".join(spec) or "none"
        raise ControlError(f"{command}: unknown argument {unknown[0]!r} (arguments: {expected})")
    arguments = {}
    for name, (types, required, default) in spec.items():
        value = request.get(name, default)
        if value is _ABSENT or (required and value is None):
            raise ControlError(f"{command}: missing argument {name!r}")
        if value is not None and type(value) not in types:
            wanted = " or ".join("boolean" if t is bool else "string" for t in types)
            raise ControlError(f"{command}: argument {name!r} must be a {wanted}, got {json.dumps(value)[:40]}")
        if isinstance(value, str) and not value.strip():
            raise ControlError(f"{command}: argument {name!r} is empty")
        if value is None and not required and default is not None:
            value = default  # an explicit null means the default
        arguments[name] = value
    if command == "unban" and (arguments["address"] is None) == (not arguments["all"]):
        raise ControlError("unban: give an address, or all: true (not both)")
    return arguments


def _encode(answer: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; a strict client could not read the answer.
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class ControlServer(StreamServer):
    """Serves `handler` on the unix socket `path`: each command calls the handler's method of
    the same name (plain or `async def`) with every argument as a keyword."""

    def __init__(self, path: Path, handler: object, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT, commands: frozenset[str] | None = None,
                 group: int | None = None, rate_limit: RateLimit | None = None) -> None:
        """`commands`: the only commands taken here (None: all); `group`: a group that may
        connect too (the socket is then mode 0660, owned by root and that group), for a socket
        that offers applications `report` and nothing else; `rate_limit`: how often each peer
        uid may `report` (None: no limit)."""
        super().__init__(max_connections=max_connections, idle_timeout=idle_timeout,
                         throttle=Throttle(log, "control: "))
        self.path = Path(path)
        self._commands = commands
        self._group = group
        self._reports = ReportLimit(rate_limit)
        self._handler = handler
        self._inode: int | None = None  # our socket file's, so stop() removes no successor's

    @property
    def reports(self) -> dict[str, int]:
        """`report` requests answered, and refused for the rate."""
        return self._reports.counts

    async def start(self) -> None:
        """Take the socket path (removing a stale socket file) and start accepting.
        Raises ControlSocketError when another daemon answers there or the path cannot be used."""
        self._prepare_directory()
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The umask makes the file root's alone from its first moment; the chmod is in case
            # the umask was ignored (some filesystems).
            umask = os.umask(0o177)
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(umask)
            if self._group is not None:
                os.chown(self.path, 0, self._group)
            os.chmod(self.path, 0o600 if self._group is None else 0o660)
            self._inode = os.stat(self.path).st_ino
            listener.listen(self._max_connections)
            listener.setblocking(False)
            # limit: a request line longer than MAX_LINE makes readuntil() fail without reading on.
            self._server = await asyncio.start_unix_server(self._serve, sock=listener, limit=MAX_LINE)
        except OSError as error:
            listener.close()
            raise ControlSocketError(f"{self.path}: cannot listen: {error.strerror or error}") from error
        log.debug("control: listening on %s", self.path)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, close open connections and remove the socket file. A command under
        way gets `grace` seconds to finish before it is cancelled."""
        await super().stop(grace)
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        self._inode = None

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        if directory.is_dir():
            return
        try:
            directory.mkdir(parents=True, mode=0o755)
            os.chmod(directory, 0o755)  # mkdir's mode passes through the umask
        except OSError as error:
            raise ControlSocketError(f"{directory}: cannot create the socket's directory: "
                                     f"{error.strerror or error}") from error

    def _remove_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"{self.path}: exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            # Nothing listens: left behind by an agent that did not stop cleanly.
            log.info("control: removing the stale socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError as error:
            raise ControlSocketError(f"{self.path}: cannot tell whether it is in use: "
                                     f"{error.strerror or error}") from error
        finally:
            probe.close()
        raise ControlSocketError(f"another jailwarden is running: {self.path} answers")

    def _refusal(self) -> bytes:
        return _encode({"ok": False, "error": f"too many control connections ({self._max_connections} open); "
                                              "try again"})

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        if self._group is None and uid not in (0, os.geteuid()):
            self._throttle.warning("peer", "connection from uid %d closed: only root may connect", uid)
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self._idle_timeout)
            except asyncio.IncompleteReadError:
                return  # the client is gone, perhaps mid-line: nothing to answer
            except TimeoutError:
                return
            except asyncio.LimitOverrunError:
                self._throttle.warning("oversize", "connection closed: a request line over %d bytes", MAX_LINE)
                await send(writer, _encode({"ok": False, "error": f"request line longer than {MAX_LINE} bytes"}),
                           self._idle_timeout)
                return
            answer = await self._answer(line, uid)
            if writer.is_closing():
                return  # stop() closed it while the command ran
            await send(writer, answer, self._idle_timeout)

    async def _answer(self, line: bytes, uid: int) -> bytes:
        try:
            try:
                request = json.loads(line)
            except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: [[[[...]]]]
                raise ControlError(f"malformed request: not a JSON object on one line ({error})") from None
            if not isinstance(request, dict):
                raise ControlError(f"malformed request: expected a JSON object, got {type(request).__name__}")
            command = request.get("command")
            if not isinstance(command, str):
                raise ControlError('malformed request: no "command" (a string)')
            if command not in _COMMANDS:
                raise ControlError(f"unknown command {command[:40]!r}; commands: {', '.join(_COMMANDS)}")
            if self._commands is not None and command not in self._commands:
                raise ControlError(f"{command!r} is not allowed on this socket (it takes: "
                                   f"{', '.join(sorted(self._commands))})")
            arguments = check_arguments(command, request)
            method = getattr(self._handler, command, None)
            if method is None:
                raise ControlError(f"this daemon does not support {command!r}")
            if command == "report":
                self._limit_reports(uid)
            result = method(**arguments)
            if inspect.isawaitable(result):
                result = await result
            if command == "report":
                self._reports.counts["accepted"] += 1
            log.debug("control: %s %s done", command, arguments)
            return _encode({"ok": True, "result": result})
        except ControlError as error:
            return _encode({"ok": False, "error": str(error)})
        except Exception as error:
            self._throttle.warning("internal", "a request failed: %r", line[:200], exc_info=error)
            return _encode({"ok": False, "error": f"internal error: {type(error).__name__}: {error}"})

    def _limit_reports(self, uid: int) -> None:
        try:
            self._reports.take(uid, f"uid {uid}", time.monotonic())
        except RateLimited as refused:
            self._throttle.warning("rate", "reports from uid %d refused: more than %g a second", uid,
                                   self._reports.rate_limit.rate)
            raise ControlError(str(refused)) from None


class ControlClient:
    """Blocking requests to the daemon over one connection, opened at the first request."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = bytearray()  # received past the last answer read

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._buffer.clear()

    def request(self, command: str, **arguments: object) -> object:
        """The daemon's result for `command`. Raises ControlError with the daemon's message when
        it refuses, DaemonUnavailable when there is no daemon to ask or it does not answer."""
        line = json.dumps({"command": command, **arguments}, separators=(",", ":")).encode() + b"\n"
        try:
            sock = self._connect()
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us: it may have said why (too many connections), read that
            answer = self._read_line(sock)
        except DaemonUnavailable:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise DaemonUnavailable(f"jailwarden did not answer within {self.timeout:g} s ({self.path})") from None
        except OSError as error:
            self.close()
            raise DaemonUnavailable(self._describe(error)) from None
        try:
            response = json.loads(answer)
            ok = response["ok"]
        except (ValueError, TypeError, KeyError):
            self.close()
            raise DaemonUnavailable(f"{self.path}: the answer is not jailwarden's protocol: {answer[:80]!r}") from None
        if not ok:
            raise ControlError(str(response.get("error", "refused (no reason given)")))
        return response.get("result")

    def _connect(self) -> socket.socket:
        if self._socket is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except BaseException:
                sock.close()
                raise
            self._socket = sock
        return self._socket

    def _read_line(self, sock: socket.socket) -> bytes:
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            if searched > _MAX_ANSWER:
                raise DaemonUnavailable(f"{self.path}: answer longer than {_MAX_ANSWER} bytes")
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise DaemonUnavailable(f"jailwarden closed the connection without answering ({self.path})")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def _describe(self, error: OSError) -> str:
        if isinstance(error, (FileNotFoundError, ConnectionRefusedError)):
            return f"jailwarden is not running (nothing listens on {self.path})"
        if isinstance(error, PermissionError):
            return f"{self.path}: permission denied: the control socket is root's; run as root"
        return f"{self.path}: cannot talk to jailwarden: {error.strerror or error}"
