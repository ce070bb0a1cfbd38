"""Applications report failures over HTTP ([agent] report_http, loopback only): POST /v1/failures
with the bearer token of report_token_file, answered with a status code that says what happened.
Reports count like log lines and are rate-limited. A real agent, real clients (urllib, http.client,
and curl where installed)."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .agent import AgentProcess
from .rsyslog import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "jw-" + secrets.token_urlsafe(24)
# No proxy: an http_proxy in the environment must not carry a loopback request elsewhere.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "report.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def http_config(tmp_path: Path, port: int, token_file: Path, *, maxretry: int = 2, agent_extra: str = "",
                syslog: bool = False, extra: str = "") -> str:
    """An agent taking reports on 127.0.0.1:`port` (and with `syslog`, syslog datagrams on a unix
    socket; else no log source at all); jail webapp."""
    return f"""
[agent]
state_dir = "{tmp_path}/state"
socket = "{tmp_path}/control.sock"
backend = "log"
report_http = "127.0.0.1:{port}"
report_token_file = "{token_file}"
{agent_extra}
[sources.journal]
enabled = false
[sources.syslog]
{f'listen = ["unix://{tmp_path}/syslog.sock"]' if syslog else "enabled = false"}
[jails.webapp]
filter = "sshd"
maxretry = {maxretry}
ignore = ["198.51.100.0/24"]
{extra}
"""


def post(port: int, fields: dict | None = None, *, body: object = None, token: str | None = TOKEN,
         method: str = "POST", path: str = "/v1/failures") -> tuple[int, dict[str, str], dict]:
    """(status, headers, JSON answer) of one request with urllib."""
    data = json.dumps(fields).encode() if fields is not None else body
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with OPENER.open(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


def raw(port: int, request: bytes) -> tuple[int, dict]:
    """(status, JSON answer) of bytes sent as they are, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def curl(port: int, fields: dict) -> tuple[int, dict]:
    done = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-H", f"Authorization: Bearer {TOKEN}",
                           "-H", "Content-Type: application/json", "--data", json.dumps(fields),
                           "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/v1/failures"],
                          capture_output=True, text=True, timeout=30, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def status_of(agent: AgentProcess) -> dict:
    done = agent.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def report(address: str, jail: str = "webapp") -> dict:
    return {"jail": jail, "address": address, "reason": "bad password for alice"}


def test_an_application_with_the_token_reports_failures_until_the_address_is_banned(tmp_path, token_file):
    port = free_port()
    # No log source: the HTTP endpoint alone feeds the jail, as a report socket may.
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        agent.wait_for(rf"report http: taking reports on http://127\.0\.0\.1:{port}/v1/failures")
        if shutil.which("curl"):
            first = curl(port, report("203.0.113.80"))
        else:
            first = post(port, report("203.0.113.80"))[::2]
        assert first == (200, {"ok": True, "result": {"jail": "webapp", "address": "203.0.113.80",
                                                      "outcome": "counted"}})
        status, _, second = post(port, report("203.0.113.80"))
        assert status == 200 and second["result"]["outcome"] == "banned" and second["result"]["ban"]["offence"] == 1
        agent.wait_for(r"jail webapp: ban 203\.0\.113\.80 for 1h .*reason: 2 report failures")

        # One connection carries several reports (HTTP/1.1 keep-alive).
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        outcomes, sockets = [], set()
        for address in ("198.51.100.9", "2001:db8::80"):
            connection.request("POST", "/v1/failures", json.dumps(report(address)),
                               {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            outcomes.append((answer.status, json.loads(answer.read())["result"]["outcome"]))
            sockets.add(id(connection.sock))
        connection.close()
        assert outcomes == [(200, "ignored"), (200, "counted")] and len(sockets) == 1

        running = status_of(agent)
        assert running["reports"] == {"http": {"accepted": 4, "rate_limited": 0, "auth_failed": 0, "auth_limited": 0}}
        assert running["jails"]["webapp"]["failures"] == 3  # the ignored address is not counted


def test_a_missing_or_wrong_token_is_401_closes_the_connection_and_counts_nothing(tmp_path, token_file):
    port = free_port()
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        for token, error in ((None, "no bearer token: send Authorization: Bearer TOKEN"),
                             ("guess", "wrong bearer token"), (TOKEN[:-1], "wrong bearer token")):
            status, headers, answer = post(port, report("203.0.113.81"), token=token)
            assert (status, answer) == (401, {"ok": False, "error": error})
            assert headers["WWW-Authenticate"].startswith('Bearer realm="jailwarden"')
            assert headers["Connection"] == "close"
        agent.wait_for(r"report http: answered 401 to POST /v1/failures from .*: no bearer token")
        running = status_of(agent)
        assert running["jails"]["webapp"]["failures"] == 0
        assert running["reports"] == {"http": {"accepted": 0, "rate_limited": 0, "auth_failed": 3, "auth_limited": 0}}
        agent.wait_for(r"control: status .* done")  # so every line logged before is read
        assert TOKEN[:-1] not in "\n".join(agent.lines)


def test_a_request_that_is_not_a_report_gets_the_status_code_that_says_why_never_the_token(tmp_path, token_file):
    port = free_port()
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        for request, expected, error in (
            (dict(body=b"jail=webapp&address=203.0.113.82"), 400, "the body is not JSON"),
            (dict(body=b"[" * 2000 + b"]" * 2000), 400, "the body is not a report: JSON nested too deeply"),
            (dict(fields={"jail": "webapp"}), 400, "report: missing argument 'address'"),
            (dict(fields={"jail": "webapp", "address": 3405803858}), 400, "argument 'address' must be a string"),
            (dict(fields=report("example.com")), 400, "'example.com' is not an IP address"),
            (dict(fields=report("203.0.113.82", jail="nosuchjail")), 404,
             "no running jail 'nosuchjail' (running: webapp)"),
            (dict(fields=report("203.0.113.82") | {"reason": "x" * 5000}), 413,
             "bytes: a report is at most 4096"),
            (dict(method="GET"), 405, "GET is not allowed: reports are POST /v1/failures"),
            (dict(fields=report("203.0.113.82"), path="/v1/bans"), 404, "no endpoint '/v1/bans'"),
            (dict(body=iter([json.dumps(report("203.0.113.82")).encode()])), 501,
             "Transfer-Encoding is not supported"),
        ):
            status, headers, answer = post(port, **request)
            assert (status, answer["ok"]) == (expected, False) and error in answer["error"], (request, answer)
            if expected == 405:
                assert headers["Allow"] == "POST"
        assert raw(port, b"POST /v1/failures HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"\r\n") == \
            (411, {"ok": False, "error": "Content-Length is required"})
        assert raw(port, b"POST /v1/failures HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + b"a" * 9000 + b"\r\n\r\n") \
            == (431, {"ok": False, "error": "request line and headers longer than 8192 bytes"})
        assert raw(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")[0] == 505
        assert raw(port, b"POST /v1/failures HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth.replace(b":", b" :", 1)
                   + b"Content-Length: 2\r\n\r\n{}") \
            == (400, {"ok": False, "error": "malformed header line 3: space between the name 'Authorization' and the "
                                            "colon"})

        assert status_of(agent)["jails"]["webapp"]["failures"] == 0
        agent.wait_for(r"control: status .* done")  # so every line logged before is read
        assert TOKEN not in "\n".join(agent.lines)
        assert post(port, report("203.0.113.83"))[0] == 200  # the endpoint is none the worse


def test_reports_beyond_the_rate_are_429_with_retry_after_and_counted_in_status_and_metrics(tmp_path, token_file):
    port, metrics_port = free_port(), free_port()
    config = http_config(tmp_path, port, token_file, maxretry=100, agent_extra="report_rate = 0.01\nreport_burst = 3",
                         extra=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"')
    with AgentProcess(tmp_path, config, dry_run=False) as agent:
        assert [post(port, report(f"203.0.113.{90 + number}"))[0] for number in range(3)] == [200, 200, 200]
        status, headers, answer = post(port, report("203.0.113.93"))
        # 100 s at 0.01 a second, less the time the first three took (seconds on a loaded machine).
        assert status == 429 and 90 <= int(headers["Retry-After"]) <= 100
        refused = re.fullmatch(r"rate limited: more than 0\.01 reports a second from the HTTP endpoint's token "
                               r"\(burst 3\); try again in ([\d.]+) s", answer["error"])
        assert refused and 90 <= float(refused[1]) <= 100, answer
        running = status_of(agent)
        assert running["reports"] == {"http": {"accepted": 3, "rate_limited": 1, "auth_failed": 0, "auth_limited": 0}}
        assert running["jails"]["webapp"]["failures"] == 3
        with OPENER.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as scrape:
            metrics = scrape.read().decode().splitlines()
        assert 'jailwarden_reports_total{channel="http",outcome="accepted"} 3' in metrics
        assert 'jailwarden_reports_total{channel="http",outcome="rate_limited"} 1' in metrics


@pytest.mark.parametrize("problem", ["token readable by others", "token too short", "port taken"])
def test_an_endpoint_that_cannot_start_is_logged_and_the_agent_runs_without_it(tmp_path, token_file, problem):
    port = free_port()
    with socket.socket() as holder:
        if problem == "port taken":
            holder.bind(("127.0.0.1", port))
            holder.listen()
            why = rf"report_http: cannot listen on http://127\.0\.0\.1:{port}/v1/failures: Address already in use"
        elif problem == "token too short":
            token_file.write_text("  0123456789abcde \n")  # 15 bytes once stripped
            why = (rf"\[agent\] report_token_file {re.escape(str(token_file))} holds a token of 15 bytes, fewer than "
                   r"16 \(`openssl rand -hex 32` makes one of 64\)")
        else:
            token_file.chmod(0o644)
            why = (rf"\[agent\] report_token_file {re.escape(str(token_file))} is readable by others \(mode 0644\): "
                   "chmod 600 it")
        with AgentProcess(tmp_path, http_config(tmp_path, port, token_file, syslog=True), dry_run=False) as agent:
            agent.wait_for(why + "; running without the HTTP report endpoint")
            assert status_of(agent)["reports"] == {}
            if problem != "port taken":
                with pytest.raises(urllib.error.URLError, match="Connection refused"):
                    post(port, report("203.0.113.84"))


def test_check_config_refuses_a_report_http_address_off_the_loopback(tmp_path, token_file):
    config = tmp_path / "jailwarden.toml"
    config.write_text(http_config(tmp_path, 9717, token_file).replace("127.0.0.1:9717", "0.0.0.0:9717"))
    checked = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(config)],
                             capture_output=True, text=True, timeout=30, cwd=REPO)
    assert checked.returncode == 1
    assert (f"{config}: agent.report_http: '0.0.0.0:9717' is not a loopback address (127.0.0.0/8 or ::1): its bearer "
            "token travels in plain HTTP and must not leave this host") in checked.stderr.splitlines()
