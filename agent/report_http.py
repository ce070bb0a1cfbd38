"""The HTTP endpoint applications report failures on ([agent] report_http, loopback only):
`POST /v1/failures` with `Authorization: Bearer TOKEN` and a JSON body `{"jail", "address",
"reason"?}`, answered in the control socket's shape (`{"ok": true, "result": ...}` or
`{"ok": false, "error": ...}`) with a status code that says what went wrong.

HTTP/1.1 with keep-alive on the agent's loop, standard library only. `parse_head`,
`body_length`, `authorize` and `read_report` are sans-IO (bytes and records in, records out or
HttpError); `ReportHttpServer` around them only reads, writes and keeps clients in bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.config_values import ListenAddress
from agent.control import ControlError, Throttle, UnknownJail, check_arguments
from agent.ratelimit import RateLimit

log = logging.getLogger("jailwarden.report_http")

PATH = "/v1/failures"
MAX_HEAD = 8 * 1024  # bytes of request line and headers; a client sends a few hundred
MAX_BODY = 4 * 1024  # a report is well under 1 KiB (the reason is cut at 1,024 characters)
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 30.0  # seconds a connection may take to send its next request, or a request's body
LINGER = 2.0  # seconds to let a client read an answer given before its body was read
CALLER = "http"  # whom the rate limit counts: there is one token, so one caller
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token: a method or a header's name


class HttpError(Exception):
    """A request answered with `status` and `message`; `headers` go with the answer, and `close`
    ends the connection after it (what follows on the stream cannot be told apart)."""

    def __init__(self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = (),
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.close = close


@dataclass(slots=True, frozen=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]  # lower-case name -> value; a repeated header's values joined by ", "

    @property
    def path(self) -> str:
        target = self.target
        if not target.startswith("/"):  # absolute-form, as sent to a proxy
            target = urlsplit(target).path if "://" in target else ""
        return target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        options = {option.strip().lower() for option in self.headers.get("connection", "").split(",")}
        return "keep-alive" in options if self.version == "HTTP/1.0" else "close" not in options

    @property
    def content_length(self) -> int | None:
        length = self.headers.get("content-length")
        return int(length) if length is not None else None

    @property
    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or bool(self.content_length)


def parse_head(head: bytes) -> Request:
    """The request line and headers in `head`, which ends with the blank line. HttpError 400
    (or 505 for another HTTP version) when they are not HTTP/1.x as RFC 9112 writes it."""
    # Empty lines before a request are allowed (RFC 9112 2.2): some clients end a body with CRLF.
    text = head.lstrip(b"\r\n").decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise HttpError(400, "malformed request: no blank line after the headers", close=True)
    lines = text[:-4].split("\r\n")
    if any("\r" in line or "\n" in line for line in lines):
        # A bare CR or LF is where request smuggling hides: one server's line end is not another's.
        raise HttpError(400, "malformed request: a bare CR or LF (lines end with CRLF)", close=True)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if re.fullmatch(r"HTTP/\d(\.\d)?", version):
            raise HttpError(505, f"{version} is not supported: use HTTP/1.1", close=True)
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}", close=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):  # also a folded line, or a space before the colon
            raise HttpError(400, f"malformed header line {line[:80]!r}", close=True)
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "an HTTP/1.1 request needs a Host header", close=True)
    if "content-length" in headers:
        headers["content-length"] = _content_length(headers["content-length"])
    return Request(method, target, version, headers)


def _content_length(value: str) -> str:
    """The one length in a Content-Length header (repeated copies must agree), without leading zeros."""
    texts = [length.strip() for length in value.split(",")]
    lengths = {text.lstrip("0") or "0" for text in texts}
    if len(lengths) != 1 or not all(text.isascii() and text.isdigit() for text in texts):
        raise HttpError(400, f"bad Content-Length {value[:40]!r}", close=True)
    digits = lengths.pop()
    if len(digits) > 18:  # beyond any body we take; int() refuses past 4,300 digits
        raise HttpError(413, f"a body of {digits[:20]}... bytes: a report is at most {MAX_BODY}", close=True)
    return digits


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
        raise HttpError(501, f"Transfer-Encoding {request.headers['transfer-encoding'][:40]!r} is not supported: "
                             "send the body with Content-Length", close=True)
    length = request.content_length
    if length is None:
        raise HttpError(411, "Content-Length is required", close=True)
    if length > MAX_BODY:
        raise HttpError(413, f"a body of {length} bytes: a report is at most {MAX_BODY}", close=True)
    return length


def authorize(request: Request, token: bytes) -> None:
    """HttpError 401 unless `request` carries `token` as its bearer token."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(401, "no bearer token: send Authorization: Bearer TOKEN",
                        headers=(("WWW-Authenticate", 'Bearer realm="jailwarden"'),))
    # compare_digest: the time taken says nothing about how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode("latin-1"), token):
        raise HttpError(401, "wrong bearer token",
                        headers=(("WWW-Authenticate", 'Bearer realm="jailwarden", error="invalid_token"'),))


def read_report(body: bytes) -> dict[str, Any]:
    """Commands.report's arguments from a JSON body; HttpError 400 says what is wrong."""
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise HttpError(400, f"the body is not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise HttpError(400, 'expected a JSON object such as {"jail": "webapp", "address": "203.0.113.7", '
                             f'"reason": "bad password"}}, got {type(fields).__name__}')
    try:
        return check_arguments("report", fields)
    except ControlError as error:
        raise HttpError(400, str(error)) from None


def response(status: int, answer: dict, *, close: bool, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; a strict client could not read the answer.
    body = json.dumps(answer, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers)]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ReportHttpServer:
    """Serves POST /v1/failures on `listen`: each authorized, well-formed report within
    `rate_limit` calls `report(jail=, address=, reason=)` (Commands.report) and answers its result."""

    def __init__(self, listen: ListenAddress, report: Callable[..., dict], token: bytes,
                 rate_limit: RateLimit | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.listen = listen
        self._report = report
        self._token = token
        self._rate_limit = rate_limit
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._throttle = Throttle(logger=log, prefix="report http: ")
        self.reports = {"accepted": 0, "rate_limited": 0}

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

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in self._connections.values():  # each conversation ends at its next read
            writer.close()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._connections) >= self._max_connections:
                self._throttle.warning("limit", "connection refused: %d connections are open", self._max_connections)
                writer.write(response(503, {"ok": False, "error": f"too many connections ({self._max_connections} "
                                                                  "open); try again"},
                                      close=True, headers=(("Retry-After", "1"),)))
                await asyncio.wait_for(writer.drain(), self._idle_timeout)
                return
            self._connections[task] = writer
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, TimeoutError):
            pass  # the client left, or stopped reading its answers: its business
        except Exception as error:  # nothing a client does may escape into the loop
            self._throttle.warning("connection", "connection failed: %s", error, exc_info=error)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; False when the connection is to close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._idle_timeout)
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
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await asyncio.wait_for(reader.readexactly(length), self._idle_timeout)
            except (asyncio.IncompleteReadError, TimeoutError):
                return False  # gone, or stalled, mid-body
            close = not request.keep_alive
            answer = response(200, {"ok": True, "result": self._answer(request, body)}, close=close)
        except HttpError as error:
            # After HEAD a client reads no body: the answer's would be taken for the next one's start.
            close = error.close or request is None or not request.keep_alive or request.method == "HEAD"
            unread = error.close
            self._throttle.warning(str(error.status), "answered %d to %s: %s", error.status,
                                   writer.get_extra_info("peername"), error.message)
            answer = response(error.status, {"ok": False, "error": error.message}, close=close, headers=error.headers)
        except Exception as error:  # a bug in answering: the client is told, the agent goes on
            self._throttle.warning("internal", "a request failed: %r", (head or b"")[:200], exc_info=error)
            close = True
            answer = response(500, {"ok": False, "error": f"internal error: {type(error).__name__}: {error}"},
                              close=True)
        if writer.is_closing():
            return False  # stop() closed it meanwhile
        writer.write(answer)
        # A client that does not read its answers is closed like an idle one.
        await asyncio.wait_for(writer.drain(), self._idle_timeout)
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

    def _answer(self, request: Request, body: bytes) -> dict:
        authorize(request, self._token)
        arguments = read_report(body)
        if self._rate_limit is not None:
            wait = self._rate_limit.take(CALLER, time.monotonic())
            if wait:
                self.reports["rate_limited"] += 1
                raise HttpError(429, self._rate_limit.refusal("the HTTP endpoint's token", wait),
                                headers=(("Retry-After", str(math.ceil(wait))),))
        try:
            result = self._report(**arguments)
        except UnknownJail as error:
            raise HttpError(404, str(error)) from None
        except ControlError as error:
            raise HttpError(400, str(error)) from None
        self.reports["accepted"] += 1
        return result
