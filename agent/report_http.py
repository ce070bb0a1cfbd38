"""The HTTP endpoint applications report failures on ([agent] report_http, loopback only):
`POST /v1/failures` with `Authorization: Bearer TOKEN` and a JSON body `{"jail", "address",
"reason"?}`, answered in the control socket's shape (`{"ok": true, "result": ...}` or
`{"ok": false, "error": ...}`) with a status code that says what went wrong.

HTTP/1.1 with keep-alive on the agent's loop, standard library only. `body_length`, `authorize`
and `read_report` are sans-IO like agent/http_request.py (records in, records out or HttpError);
`ReportHttpServer` around them only reads, writes and keeps clients in bounds. No header's value
is ever logged or echoed: the Authorization header carries the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config_values import ListenAddress
from agent.control import ControlError, UnknownJail, check_arguments
from agent.http_request import HttpError, Request, parse_head, response
from agent.ratelimit import RateLimit, RateLimited, ReportLimit
from agent.stream_server import StreamServer, Throttle, send

log = logging.getLogger("jailwarden.report_http")

PATH = "/v1/failures"
MAX_HEAD = 8 * 1024  # bytes of request line and headers; a client sends a few hundred
MAX_BODY = 4 * 1024  # a report is well under 1 KiB (the reason is cut at 1,024 characters)
MIN_TOKEN = 16  # bytes; `openssl rand -hex 32` makes 64
MAX_CONNECTIONS = 32
# A connection has AUTH_TIMEOUT seconds from its start to send a whole request with the token, so
# that local users without it cannot hold the connections for long; then IDLE_TIMEOUT seconds
# for each next request and its body.
AUTH_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
LINGER = 2.0  # seconds to let a client read an answer given before its body was read
CALLER = "http"  # whom the rate limit counts: there is one token, so one caller
# Wrong or missing tokens, from anyone: beyond, no token is checked until the bucket refills.
AUTH_FAILURE_RATE, AUTH_FAILURE_BURST = 10.0, 20


def body_length(request: Request) -> int:
    """How many bytes of body to read for `request`, once it is known to be a report the
    endpoint can frame; else HttpError (closing the connection when a body would stay unread)."""
    unread = request.has_body
    if request.path != PATH:
        raise HttpError(404, f"no endpoint {request.path[:80]!r}: reports are POST {PATH}", close=unread)
    if request.method != "POST":
        raise HttpError(405, f"{request.method} is not allowed: reports are POST {PATH}",
                        headers=(("Allow", "POST"),), close=unread)
    if "transfer-encoding" in request.headers:
        raise HttpError(501, "Transfer-Encoding is not supported: send the body with Content-Length", close=True)
    digits = request.headers.get("content-length")
    if digits is None:
        raise HttpError(411, "Content-Length is required", close=True)
    # len() first: int() refuses past 4,300 digits.
    if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
        raise HttpError(413, f"a body of {digits[:20]}{'...' if len(digits) > 20 else ''} bytes: a report is at most "
                             f"{MAX_BODY}", close=True)
    return int(digits)


def authorize(request: Request, token: bytes) -> None:
    """HttpError 401, closing the connection, unless `request` carries `token` as its bearer token."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(401, "no bearer token: send Authorization: Bearer TOKEN", close=True,
                        headers=(("WWW-Authenticate", 'Bearer realm="jailwarden"'),))
    # compare_digest: the time taken says nothing about how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode("latin-1"), token):
        raise HttpError(401, "wrong bearer token", close=True,
                        headers=(("WWW-Authenticate", 'Bearer realm="jailwarden", error="invalid_token"'),))


def read_report(body: bytes) -> dict[str, Any]:
    """Commands.report's arguments from a JSON body; HttpError 400 says what is wrong."""
    try:
        fields = json.loads(body)
        arguments = check_arguments("report", fields) if isinstance(fields, dict) else None
    except RecursionError:  # how json gives up on arrays in arrays in arrays...: not a ValueError
        raise HttpError(400, "the body is not a report: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise HttpError(400, f"the body is not JSON ({error})") from None
    except ControlError as error:
        raise HttpError(400, str(error)) from None
    if arguments is None:
        raise HttpError(400, 'expected a JSON object such as {"jail": "webapp", "address": "203.0.113.7", '
                             f'"reason": "bad password"}}, got {type(fields).__name__}')
    return arguments


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # By when (loop time) it must have sent a whole request with the token; None once it has.
    deadline: float | None


class ReportHttpServer(StreamServer):
    """Serves POST /v1/failures on `listen`: each authorized, well-formed report within
    `rate_limit` calls `report(jail=, address=, reason=)` (Commands.report) and answers its result.
    `auth_failures` limits the requests refused for their token, all clients together."""

    def __init__(self, listen: ListenAddress, report: Callable[..., dict], token: bytes,
                 rate_limit: RateLimit | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT, auth_timeout: float = AUTH_TIMEOUT,
                 auth_failures: RateLimit | None = None) -> None:
        super().__init__(max_connections=max_connections, idle_timeout=idle_timeout,
                         throttle=Throttle(log, "report http: "))
        self.listen = listen
        self._report = report
        self._token = token
        self._auth_timeout = auth_timeout
        # Not `or`: a RateLimit that remembers no caller yet is falsy (len 0).
        self._auth_failures = auth_failures if auth_failures is not None else RateLimit(AUTH_FAILURE_RATE,
                                                                                        AUTH_FAILURE_BURST)
        self._reports = ReportLimit(rate_limit)
        self._reports.counts |= {"auth_failed": 0, "auth_limited": 0}

    @property
    def reports(self) -> dict[str, int]:
        """Reports accepted, and refused for the rate; requests refused for their token
        (auth_failed), and refused unchecked beyond the limit of those (auth_limited)."""
        return self._reports.counts

    @property
    def url(self) -> str:
        host = str(self.listen.host)
        return f"http://{host if self.listen.host.version == 4 else f'[{host}]'}:{self.listen.port}{PATH}"

    async def start(self) -> None:
        """Listen; OSError (address in use, not permitted) says where."""
        try:
            # limit: a head longer than MAX_HEAD makes readuntil() fail without reading on.
            self._server = await asyncio.start_server(self._serve, str(self.listen.host), self.listen.port,
                                                      limit=MAX_HEAD)
        except OSError as error:
            # asyncio words a bind error its own way ("error while attempting to bind..."): say it plainly.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise OSError(error.errno, f"report_http: cannot listen on {self.url}: {reason}") from None
        log.info("report http: taking reports on %s", self.url)

    def _refusal(self) -> bytes:
        return response(503, {"ok": False, "error": f"too many connections ({self._max_connections} open); try again"},
                        close=True, headers=(("Retry-After", "1"),))

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(reader, writer, asyncio.get_running_loop().time() + self._auth_timeout)
        while await self._exchange(connection):
            pass

    def _patience(self, connection: _Connection) -> float:
        """Seconds `connection` may take over its next read, or to take an answer."""
        if connection.deadline is None:
            return self._idle_timeout
        return max(0.0, connection.deadline - asyncio.get_running_loop().time())

    async def _exchange(self, connection: _Connection) -> bool:
        """Read one request and answer it; False when the connection is to close."""
        reader, writer = connection.reader, connection.writer
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._patience(connection))
        except (asyncio.IncompleteReadError, TimeoutError):
            return False  # gone, or idle: nothing to answer
        except asyncio.LimitOverrunError:
            head = None
        request, unread = None, False
        try:
            if head is None:
                raise HttpError(431, f"request line and headers longer than {MAX_HEAD} bytes", close=True)
            request = parse_head(head)
            length = body_length(request)
            self._authorize(request, trusted=connection.deadline is None)
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await asyncio.wait_for(reader.readexactly(length), self._patience(connection))
            except (asyncio.IncompleteReadError, TimeoutError):
                return False  # gone, or stalled, mid-body
            connection.deadline = None
            close = not request.keep_alive
            answer = response(200, {"ok": True, "result": self._answer(body)}, close=close)
        except HttpError as error:
            # After HEAD a client reads no body: the answer's would be taken for the next one's start.
            close = error.close or request is None or not request.keep_alive or request.method == "HEAD"
            unread = error.close
            self._throttle.warning(error.kind, "answered %d to %s from %s: %s", error.status, _what(request),
                                   writer.get_extra_info("peername"), error.message)
            answer = response(error.status, {"ok": False, "error": error.message}, close=close, headers=error.headers)
        except Exception as error:  # a bug in answering: the client is told, the agent goes on
            self._throttle.warning("internal", "%s from %s failed", _what(request), writer.get_extra_info("peername"),
                                   exc_info=error)
            close = True
            answer = response(500, {"ok": False, "error": f"internal error: {type(error).__name__}: {error}"},
                              close=True)
        if writer.is_closing():
            return False  # stop() closed it meanwhile
        await send(writer, answer, self._patience(connection))
        if unread:
            await self._linger(reader, writer)
        return not close

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close our side, then take what the client still sends until it closes its own (for
        LINGER seconds at most): closing on unread bytes resets the connection, and the reset can
        destroy the answer before the client has read it."""
        writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER
        with contextlib.suppress(TimeoutError, ConnectionError):
            while await asyncio.wait_for(reader.read(64 * 1024), max(0.0, deadline - loop.time())):
                pass

    def _authorize(self, request: Request, *, trusted: bool) -> None:
        """authorize(), with the failures held to their limit: beyond it, a request on a connection
        that has not yet shown the token is refused unchecked, so that guessing gains nothing."""
        now = time.monotonic()
        wait = 0.0 if trusted else self._auth_failures.wait(CALLER, now)
        if wait:
            self.reports["auth_limited"] += 1
            raise HttpError(429, f"too many failed authentications: more than {self._auth_failures.rate:g} a second "
                                 f"(burst {self._auth_failures.burst}); try again in {math.ceil(wait)} s",
                            headers=(("Retry-After", str(math.ceil(wait))),), close=True, kind="auth_limited")
        try:
            authorize(request, self._token)
        except HttpError:
            self.reports["auth_failed"] += 1
            self._auth_failures.take(CALLER, now)
            raise

    def _answer(self, body: bytes) -> dict:
        arguments = read_report(body)
        try:
            self._reports.take(CALLER, "the HTTP endpoint's token", time.monotonic())
        except RateLimited as refused:
            raise HttpError(429, str(refused), headers=(("Retry-After", str(math.ceil(refused.wait))),),
                            kind="rate_limited") from None
        try:
            result = self._report(**arguments)
        except UnknownJail as error:
            raise HttpError(404, str(error)) from None
        except ControlError as error:
            raise HttpError(400, str(error)) from None
        self.reports["accepted"] += 1
        return result


def _what(request: Request | None) -> str:
    """A request in the log: its method and path, never a header."""
    return f"{request.method} {ascii(request.path[:80])[1:-1]}" if request is not None else "a request"
