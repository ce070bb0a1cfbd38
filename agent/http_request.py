"""An HTTP/1.1 request's head read strictly (RFC 9112), and the answer to it framed, for the
agent's small HTTP server (agent/report_http.py). Sans-IO: bytes in, a `Request` or HttpError out."""

from __future__ import annotations

import http
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token: a method or a header's name


class HttpError(Exception):
    """A request answered with `status` and `message`; `headers` go with the answer, `close`
    ends the connection after it (what follows on the stream cannot be told apart, or the client
    is not trusted), and `kind` is the problem's name in the log's throttle."""

    def __init__(self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = (),
                 close: bool = False, kind: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.close = close
        self.kind = kind or str(status)


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
    def has_body(self) -> bool:
        # Content-Length is digits without leading zeros (parse_head), perhaps thousands of them.
        return "transfer-encoding" in self.headers or self.headers.get("content-length", "0") != "0"


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
    # Not echoed: what stands first may be a header (after a stray blank line), the token's.
    malformed = HttpError(400, "malformed request line: expected METHOD TARGET HTTP/1.1", close=True)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise malformed
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if re.fullmatch(r"HTTP/\d(\.\d)?", version):
            raise HttpError(505, f"{version} is not supported: use HTTP/1.1", close=True)
        raise malformed
    headers: dict[str, str] = {}
    for number, line in enumerate(lines[1:], 2):
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"malformed header line {number}: {_header_problem(line, name, colon)}", close=True)
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "an HTTP/1.1 request needs a Host header", close=True)
    if "content-length" in headers:
        headers["content-length"] = _content_length(headers["content-length"])
    return Request(method, target, version, headers)


def _header_problem(line: str, name: str, colon: str) -> str:
    """What is wrong with a header line, naming at most the header (never the line: it may be
    `Authorization : Bearer TOKEN`)."""
    if line[:1] in (" ", "\t"):
        return "a folded line (each header on a line of its own)"
    name = name.rstrip(" \t")
    if colon and _TOKEN.fullmatch(name):
        return f"space between the name {name[:40]!r} and the colon"
    return "not NAME: VALUE"


def _content_length(value: str) -> str:
    """The one length in a Content-Length header (repeated copies must agree), without leading zeros."""
    texts = [length.strip() for length in value.split(",")]
    lengths = {text.lstrip("0") or "0" for text in texts}
    if len(lengths) != 1 or not all(text.isascii() and text.isdigit() for text in texts):
        raise HttpError(400, "bad Content-Length: not one decimal number of bytes", close=True)
    return lengths.pop()


def response(status: int, answer: dict, *, close: bool, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; a strict client could not read the answer.
    body = json.dumps(answer, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers)]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
