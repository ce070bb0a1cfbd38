"""The HTTP report endpoint: what an application's request turns into (parsed head, framing,
token, JSON fields) as bytes in and records or status codes out, and the server's conduct on a
real loopback connection (keep-alive, pipelining, idle and connection limits, wrong tokens, a bug
answered 500, the token kept out of answers and the log). The agent behind it is a stub here;
tests/integration/test_report_http.py uses the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import socket

import pytest

from agent.config_values import ListenAddress
from agent.control import ControlError, UnknownJail
from agent.http_request import HttpError, parse_head
from agent.ratelimit import RateLimit
from agent.report_http import MAX_BODY, ReportHttpServer, authorize, body_length, read_report

TOKEN = b"s3cret-token-of-24-bytes"


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(body: bytes = b'{"jail": "webapp", "address": "203.0.113.7"}', *extra: str,
         token: str = TOKEN.decode()) -> bytes:
    return head("POST /v1/failures HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}",
                f"Content-Length: {len(body)}", *extra) + body


def refusal(call, *args) -> HttpError:
    with pytest.raises(HttpError) as caught:
        call(*args)
    return caught.value


# -- the head


def test_a_report_request_is_read_with_lower_case_header_names_and_its_length():
    request = parse_head(head("POST /v1/failures?source=login HTTP/1.1", "Host: 127.0.0.1:9717",
                              "Content-Type: application/json", "authorization:  Bearer abc ", "Content-Length: 045"))
    assert (request.method, request.path, request.version) == ("POST", "/v1/failures", "HTTP/1.1")
    assert request.headers["authorization"] == "Bearer abc" and request.headers["host"] == "127.0.0.1:9717"
    assert request.headers["content-length"] == "45" and request.has_body and request.keep_alive
    assert body_length(request) == 45


def test_blank_lines_before_a_request_and_an_absolute_target_are_accepted():
    request = parse_head(b"\r\n" + head("POST http://127.0.0.1:9717/v1/failures HTTP/1.1", "Host: x"))
    assert request.path == "/v1/failures" and "content-length" not in request.headers and not request.has_body


@pytest.mark.parametrize("version, connection, keep_alive", [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Keep-Alive, Close", False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "keep-alive", True),
])
def test_keep_alive_is_http_1_1s_default_and_http_1_0s_option(version, connection, keep_alive):
    lines = [f"POST /v1/failures {version}", "Host: x"] + ([f"Connection: {connection}"] if connection else [])
    assert parse_head(head(*lines)).keep_alive is keep_alive


def test_repeated_headers_are_joined_and_equal_content_lengths_are_one():
    request = parse_head(head("POST / HTTP/1.1", "Host: x", "Accept: a", "Accept: b", "Content-Length: 7",
                              "Content-Length: 007"))
    assert request.headers["accept"] == "a, b" and request.headers["content-length"] == "7"


@pytest.mark.parametrize("raw, status, says", [
    (head("POST /v1/failures HTTP/1.1", "Host: x", "Content-Length: 5", "Content-Length: 6"), 400, "Content-Length"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", "Content-Length: -1"), 400, "Content-Length"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", "Content-Length: 0x10"), 400, "Content-Length"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", "X-Smuggle: a\nContent-Length: 5"), 400, "bare CR or LF"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", " folded"), 400, "malformed header line 3: a folded line"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", "Content-Length : 5"), 400,
     "malformed header line 3: space between the name 'Content-Length' and the colon"),
    (head("POST /v1/failures HTTP/1.1", "Host: x", "no colon"), 400, "malformed header line 3: not NAME: VALUE"),
    (head("POST  /v1/failures HTTP/1.1", "Host: x"), 400, "malformed request line"),
    (head("POST /v1/failures", "Host: x"), 400, "malformed request line"),
    (head("POST /v1/failures SPDY/3", "Host: x"), 400, "malformed request line"),
    (head("PRI * HTTP/2.0"), 505, "HTTP/2.0 is not supported"),
    (head("POST /v1/failures HTTP/1.1"), 400, "needs a Host header"),
    (b"POST /v1/failures HTTP/1.1\r\nHost: x\r\n", 400, "no blank line"),
])
def test_a_malformed_head_is_refused_with_the_reason_and_the_connection_closed(raw, status, says):
    error = refusal(parse_head, raw)
    assert (error.status, error.close) == (status, True) and says in error.message, error.message


# -- what may follow the head


@pytest.mark.parametrize("lines, status, says, close", [
    (["GET /metrics HTTP/1.1", "Host: x"], 404, "no endpoint '/metrics': reports are POST /v1/failures", False),
    (["POST /v2/failures HTTP/1.1", "Host: x", "Content-Length: 2"], 404, "no endpoint", True),
    (["GET /v1/failures HTTP/1.1", "Host: x"], 405, "GET is not allowed", False),
    (["POST /v1/failures HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"], 501, "send the body with Content-Length",
     True),
    (["POST /v1/failures HTTP/1.1", "Host: x", "Transfer-Encoding: chunked", "Content-Length: 5"], 501,
     "Transfer-Encoding is not supported", True),
    (["POST /v1/failures HTTP/1.1", "Host: x"], 411, "Content-Length is required", True),
    (["POST /v1/failures HTTP/1.1", "Host: x", f"Content-Length: {MAX_BODY + 1}"], 413,
     "a body of 4097 bytes: a report is at most 4096", True),
    (["POST /v1/failures HTTP/1.1", "Host: x", "Content-Length: " + "9" * 5000], 413,
     "a body of 99999999999999999999... bytes: a report is at most 4096", True),
])
def test_only_a_post_to_the_endpoint_with_a_small_counted_body_is_read(lines, status, says, close):
    error = refusal(body_length, parse_head(head(*lines)))
    assert (error.status, error.close) == (status, close) and says in error.message, error.message
    if status == 405:
        assert error.headers == (("Allow", "POST"),)


def test_a_body_up_to_the_limit_is_read():
    request = parse_head(head("POST /v1/failures HTTP/1.1", "Host: x", f"Content-Length: {MAX_BODY}"))
    assert body_length(request) == MAX_BODY


@pytest.mark.parametrize("authorization, says, error", [
    (None, "no bearer token", None),
    ("Basic czNjcmV0LXRva2Vu", "no bearer token", None),
    ("Bearer ", "no bearer token", None),
    ("Bearer s3cret-token-of-24-byteS", "wrong bearer token", 'error="invalid_token"'),
    ("Bearer s3cret-token-of-24-bytes-and-more", "wrong bearer token", 'error="invalid_token"'),
])
def test_a_request_without_the_token_is_401_with_a_bearer_challenge_and_closes(authorization, says, error):
    lines = ["POST /v1/failures HTTP/1.1", "Host: x"] + ([f"Authorization: {authorization}"] if authorization else [])
    refused = refusal(authorize, parse_head(head(*lines)), TOKEN)
    assert refused.status == 401 and refused.message.startswith(says) and refused.close
    (name, challenge), = refused.headers
    assert name == "WWW-Authenticate" and challenge.startswith("Bearer ") and (error is None or error in challenge)


def test_the_token_is_accepted_whatever_the_case_of_the_scheme():
    for scheme in ("Bearer", "bearer", "BEARER"):
        request = head("POST /v1/failures HTTP/1.1", "Host: x", f"Authorization: {scheme} {TOKEN.decode()}")
        authorize(parse_head(request), TOKEN)


def test_the_body_gives_the_reports_arguments_with_reason_optional():
    assert read_report(b'{"jail": "webapp", "address": "203.0.113.7"}') == \
        {"jail": "webapp", "address": "203.0.113.7", "reason": None}
    assert read_report('{"jail": "webapp", "address": "2001:db8::7", "reason": "mot de passe erroné"}'
                       .encode())["reason"] == "mot de passe erroné"


@pytest.mark.parametrize("body, says", [
    (b"jail=webapp&address=203.0.113.7", "the body is not JSON"),
    (b"\xff\xfe\x00", "the body is not JSON"),
    (b'["webapp", "203.0.113.7"]', "expected a JSON object such as"),
    (b'{"address": "203.0.113.7"}', "missing argument 'jail'"),
    (b'{"jail": "webapp", "address": 3405803783}', "argument 'address' must be a string"),
    (b'{"jail": "webapp", "address": "203.0.113.7", "user": "alice"}', "unknown argument 'user'"),
    (b'{"jail": " ", "address": "203.0.113.7"}', "argument 'jail' is empty"),
])
def test_a_body_that_is_not_a_report_is_400_saying_why(body, says):
    error = refusal(read_report, body)
    assert error.status == 400 and says in error.message, error.message


def test_json_nested_however_deeply_is_a_400_never_a_crash():
    # json gives up on deep nesting with RecursionError, not ValueError; so may json.dumps, when
    # the refusal quotes a field nested almost as deeply.
    for depth in range(1, 2001):
        for body in ("[" * depth + "]" * depth, '{"jail": "webapp", "address": ' + "[" * depth + "]" * depth + "}"):
            error = refusal(read_report, body.encode())
            assert error.status == 400, (depth, error.message)
    assert refusal(read_report, b"[" * 2000 + b"]" * 2000).message == "the body is not a report: JSON nested too deeply"


# -- the server on a real connection


class Agent:
    """Commands.report's stand-in: records reports, knows jail webapp, fails on "bug"."""

    def __init__(self) -> None:
        self.reports: list[dict] = []

    def report(self, jail: str, address: str, reason: str | None = None) -> dict:
        if jail == "bug":
            raise RuntimeError("the pipeline is broken")
        if jail != "webapp":
            raise UnknownJail(f"no running jail {jail!r} (running: webapp)")
        if address == "example.com":
            raise ControlError("'example.com': not an IP address")
        self.reports.append({"jail": jail, "address": address, "reason": reason})
        return {"jail": jail, "address": address, "outcome": "counted"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(test, agent: Agent | None = None, **options) -> Agent:
    agent = agent or Agent()
    port = free_port()

    async def main() -> None:
        server = ReportHttpServer(ListenAddress("tcp", ipaddress.ip_address("127.0.0.1"), port), agent.report, TOKEN,
                                  **options)
        await server.start()
        try:
            await asyncio.wait_for(test(port, server), 30)
        finally:
            await server.stop()

    asyncio.run(main())
    return agent


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


def test_one_connection_carries_several_reports_in_order_until_the_client_closes_it():
    async def test(port: int, server: ReportHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post() + post(b'{"jail": "webapp", "address": "203.0.113.8"}')
                     + head("GET /v1/failures HTTP/1.1", "Host: x")
                     + post(b'{"jail": "nosuch", "address": "203.0.113.9"}')
                     + post(b'{"jail": "webapp", "address": "203.0.113.10"}', "Connection: close"))
        answers = [await read_answer(reader) for _ in range(5)]
        assert [status for status, _, _ in answers] == [200, 200, 405, 404, 200]
        assert answers[0][2] == {"ok": True, "result": {"jail": "webapp", "address": "203.0.113.7",
                                                        "outcome": "counted"}}
        assert answers[2][1]["allow"] == "POST"
        assert answers[3][2] == {"ok": False, "error": "no running jail 'nosuch' (running: webapp)"}
        assert answers[4][1]["connection"] == "close" and await reader.read() == b""
        assert server.reports == {"accepted": 3, "rate_limited": 0, "auth_failed": 0, "auth_limited": 0}
        writer.close()

    agent = serve(test)
    assert [report["address"] for report in agent.reports] == ["203.0.113.7", "203.0.113.8", "203.0.113.10"]


def test_beyond_the_rate_a_report_is_429_with_retry_after_and_is_not_passed_on():
    async def test(port: int, server: ReportHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post() * 3)
        answers = [await read_answer(reader) for _ in range(3)]
        assert [status for status, _, _ in answers] == [200, 200, 429]
        status, headers, answer = answers[2]
        assert 90 <= int(headers["retry-after"]) <= 100
        assert answer["ok"] is False
        refused = re.fullmatch(r"rate limited: more than 0\.01 reports a second from the HTTP endpoint's token "
                               r"\(burst 2\); try again in ([\d.]+) s", answer["error"])
        assert refused and 90 <= float(refused[1]) <= 100, answer
        assert server.reports == {"accepted": 2, "rate_limited": 1, "auth_failed": 0, "auth_limited": 0}
        writer.close()

    agent = serve(test, rate_limit=RateLimit(0.01, 2))
    assert len(agent.reports) == 2


def test_an_oversized_head_is_431_and_the_connection_closed():
    async def test(port: int, server: ReportHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head("POST /v1/failures HTTP/1.1", "Host: x", "X-Padding: " + "a" * 9000))
        status, headers, answer = await read_answer(reader)
        assert (status, headers["connection"]) == (431, "close")
        assert answer["error"] == "request line and headers longer than 8192 bytes"
        writer.close()

    serve(test)


def test_a_client_sending_expect_100_continue_is_told_to_go_on():
    async def test(port: int, server: ReportHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"jail": "webapp", "address": "203.0.113.7"}'
        writer.write(post(body, "Expect: 100-continue")[: -len(body)])
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await read_answer(reader))[0] == 200
        writer.close()

    serve(test)


def test_a_bug_behind_the_endpoint_is_a_500_and_the_next_client_is_served(caplog):
    async def test(port: int, server: ReportHttpServer) -> None:
        for jail, expected in (("bug", 500), ("webapp", 200)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post(json.dumps({"jail": jail, "address": "203.0.113.7"}).encode()))
            status, _, answer = await read_answer(reader)
            assert status == expected, answer
            writer.close()
        assert answer["ok"] is True

    serve(test)
    assert "the pipeline is broken" in caplog.text and "Traceback" in caplog.text


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (within 5 s) without answering."""
    return await asyncio.wait_for(reader.read(), 5) == b""


def test_a_connection_that_has_not_sent_the_token_is_closed_soon_however_busy():
    async def quiet(port: int, data: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        assert await closed(reader)
        writer.close()

    async def busy(port: int) -> None:  # with requests that need no token
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        deadline = asyncio.get_running_loop().time() + 5
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):  # closed
            while True:
                assert asyncio.get_running_loop().time() < deadline, "a connection without the token stays open"
                writer.write(head("GET /v1/failures HTTP/1.1", "Host: x"))
                assert (await read_answer(reader))[0] == 405
        writer.close()

    async def test(port: int, server: ReportHttpServer) -> None:
        trusted = await asyncio.open_connection("127.0.0.1", port)
        trusted[1].write(post())
        assert (await read_answer(trusted[0]))[0] == 200
        # Idle, stalled mid-body, stalled mid-head, and busy: all closed.
        await asyncio.gather(quiet(port, b""), quiet(port, post()[:-5]),
                             quiet(port, post(token="not-the-token-but-as-long")[:60]), busy(port))
        # The connection that sent the token, opened before all of these, is still served.
        trusted[1].write(post())
        assert (await read_answer(trusted[0]))[0] == 200
        trusted[1].close()

    serve(test, auth_timeout=1.0)


def test_a_connection_that_sent_the_token_is_closed_when_idle_or_stalled_mid_body():
    async def test(port: int, server: ReportHttpServer) -> None:
        for data in (b"", post()[:-5]):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            assert (await read_answer(reader))[0] == 200
            writer.write(data)
            assert await closed(reader)
            writer.close()

    serve(test, idle_timeout=0.2)


def test_a_wrong_token_is_answered_once_and_the_connection_closed():
    async def test(port: int, server: ReportHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(token="s3cret-token-of-24-byteS") + post() * 3)  # guesses pipelined behind it go unread
        status, headers, answer = await read_answer(reader)
        assert (status, headers["connection"], answer["error"]) == (401, "close", "wrong bearer token")
        assert await closed(reader)
        writer.close()
        assert server.reports == {"accepted": 0, "rate_limited": 0, "auth_failed": 1, "auth_limited": 0}

    assert serve(test).reports == []


def test_beyond_the_limit_of_wrong_tokens_a_request_is_429_unchecked_but_a_proven_connection_goes_on(caplog):
    async def test(port: int, server: ReportHttpServer) -> None:
        proven = await asyncio.open_connection("127.0.0.1", port)
        proven[1].write(post())
        assert (await read_answer(proven[0]))[0] == 200
        statuses = []
        for token in ("wrong-guess-number-one-xx", "wrong-guess-number-two-xx", TOKEN.decode()):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post(token=token))
            status, headers, answer = await read_answer(reader)
            statuses.append(status)
            assert headers["connection"] == "close" and await closed(reader)
            writer.close()
        assert statuses == [401, 401, 429], "the right token is not even checked: a guess would learn nothing"
        assert 90 <= int(headers["retry-after"]) <= 100
        assert re.fullmatch(r"too many failed authentications: more than 0\.01 a second \(burst 2\); try again in "
                            r"\d+ s", answer["error"]), answer
        proven[1].write(post())
        assert (await read_answer(proven[0]))[0] == 200
        proven[1].close()
        assert server.reports == {"accepted": 2, "rate_limited": 0, "auth_failed": 2, "auth_limited": 1}

    with caplog.at_level(logging.WARNING, logger="jailwarden.report_http"):
        agent = serve(test, auth_failures=RateLimit(0.01, 2))
    assert len(agent.reports) == 2
    assert re.search(r"answered 429 to POST /v1/failures from .*: too many failed authentications", caplog.text)


AUTHORIZATION = f"Authorization: Bearer {TOKEN.decode()}"


@pytest.mark.parametrize("request_bytes, status, says", [
    # json's RecursionError (not a ValueError) was a 500, logged with the head
    pytest.param(post(b"[" * 2000 + b"]" * 2000, "Connection: close"), 400, b"nested too deeply", id="deep JSON"),
    # a malformed header line was echoed whole, in the answer and the log
    pytest.param(head("POST /v1/failures HTTP/1.1", "Host: x", "Content-Length: 2", AUTHORIZATION.replace(":", " :"))
                 + b"{}", 400, b"'Authorization'", id="space before the colon"),
    pytest.param(head(AUTHORIZATION, "Host: x"), 400, b"malformed request line", id="a header first"),
    # a bug behind the endpoint was logged with the head
    pytest.param(post(b'{"jail": "bug", "address": "203.0.113.7"}'), 500, b"the pipeline is broken", id="a bug"),
])
def test_no_answer_and_no_log_line_shows_the_token(caplog, request_bytes, status, says):
    async def test(port: int, server: ReportHttpServer) -> None:
        with socket.create_connection(("127.0.0.1", port)) as connection:
            await asyncio.to_thread(connection.sendall, request_bytes)
            answer = await asyncio.to_thread(connection.makefile("rb").read)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and says in answer, answer
        assert TOKEN not in answer

    with caplog.at_level(logging.DEBUG):
        serve(test)
    assert len([record for record in caplog.records if record.levelno >= logging.WARNING]) == 1, "it is logged"
    assert TOKEN.decode() not in caplog.text


def test_connections_beyond_the_limit_get_503_and_the_ones_open_go_on():
    async def test(port: int, server: ReportHttpServer) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in held:  # answered, so both are the server's before the third comes
            writer.write(post())
            assert (await read_answer(reader))[0] == 200
        third = await asyncio.open_connection("127.0.0.1", port)
        status, headers, answer = await read_answer(third[0])
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
        assert answer["error"] == "too many connections (2 open); try again"
        for _, writer in held + [third]:
            writer.close()

    serve(test, max_connections=2)
