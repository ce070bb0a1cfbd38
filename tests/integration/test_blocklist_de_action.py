"""The blocklist-de action against a local server that speaks blocklist.de's HTTP report form
(POST /en/httpreports.html with server, apikey, ip, service, format and logs; a JSON answer of
status and error): what is sent, that nothing local leaves the host, that bans without lines are
not reported, and how refusals, 429 and 5xx are told apart."""

from __future__ import annotations

import ipaddress
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.actions import ActionError, ActionFailed, BanNotice
from agent.actions.blocklist_de import BlocklistDeAction
from agent.bans import Ban
from agent.evidence import Line
from parsers.filter import Failure

KEY = "a1b2c3d4e5f6"
SERVER = "reports@mx1.example.org"


class BlocklistDe(BaseHTTPRequestHandler):
    reports: list[dict[str, str]] = []
    answers: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        status = type(self).answers.pop(0) if type(self).answers else 200
        if self.path != "/en/httpreports.html" or status >= 429:
            return self._answer(status, b"<html>busy</html>", "text/html", retry_after="1" if status == 429 else None)
        missing = [name for name in ("server", "apikey", "ip", "service", "logs") if not form.get(name)]
        if form.get("apikey") != KEY or missing:
            error = {"apikey": "Please API key with the server about giving."} if not missing else \
                {name: "missing" for name in missing}
            return self._answer(200, json.dumps({"status": "error", "error": error}).encode())
        type(self).reports.append(form)
        self._answer(200, json.dumps({"status": "success", "error": 0}).encode())

    def _answer(self, status: int, body: bytes, kind: str = "application/json", retry_after: str | None = None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments) -> None:
        pass


@pytest.fixture
def api():
    BlocklistDe.reports, BlocklistDe.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), BlocklistDe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/en/httpreports.html"
    server.shutdown()


def key_file(tmp_path, key=KEY, mode=0o600):
    path = tmp_path / "blocklist.key"
    path.write_text(key + "\n")
    path.chmod(mode)
    return str(path)


LINES = (
    "Failed password for invalid user alice from {0} port 4001 ssh2",
    "Connection from {0} port 4002 on 192.0.2.10 port 22 via mx1.example.org",
    "Failed password for root from {0} port 4003 ssh2",
)


def notice(address: str, lines=LINES, start: float = 1_796_000_000.0) -> BanNotice:
    ban = Ban("sshd", ipaddress.ip_address(address), start, start + 3600, 1, "3 sshd failures")
    evidence = tuple(Line.of(Failure(ban.address, "sshd", start - 3 + n, text.format(address),
                                     {"user": "alice"} if n == 0 else {}), ("mx1", "mx1.example.org"))
                     for n, text in enumerate(lines))
    return BanNotice.of("ban", ban, 3, evidence)


def action(api, tmp_path, **options) -> BlocklistDeAction:
    return BlocklistDeAction(server=SERVER, key_file=key_file(tmp_path), service="ssh", url=api, **options)


def test_a_ban_is_reported_with_its_service_and_lines_that_name_no_one_here(api, tmp_path):
    reporter = action(api, tmp_path)
    reporter.on_ban(notice("203.0.113.80"))
    reporter.on_unban(notice("203.0.113.80"))  # blocklist.de expires entries itself: nothing sent
    (report,) = BlocklistDe.reports
    assert {key: report[key] for key in ("server", "apikey", "ip", "service", "format")} == {
        "server": SERVER, "apikey": KEY, "ip": "203.0.113.80", "service": "ssh", "format": "json"}
    assert report["logs"].splitlines() == [
        "2026-11-30T00:53:17+00:00 Failed password for invalid user <user> from 203.0.113.80 port 4001 ssh2",
        "2026-11-30T00:53:18+00:00 Connection from 203.0.113.80 port 4002 on <address> port 22 via <host>",
        "2026-11-30T00:53:19+00:00 Failed password for <user> from 203.0.113.80 port 4003 ssh2"]
    for private in ("alice", "root", "192.0.2.10", "mx1", "example.org"):
        assert private not in report["logs"]


def test_a_ban_without_lines_or_of_a_network_is_not_reported_and_an_address_once_per_interval(api, tmp_path):
    reporter = action(api, tmp_path)
    reporter.on_ban(notice("203.0.113.81", lines=()))  # by hand or from the fleet: no proof to send
    prefix = Ban("sshd", ipaddress.ip_network("198.51.100.0/24"), 0, 1, 1)
    reporter.on_ban(BanNotice.of("ban", prefix))
    reporter.on_ban(notice("203.0.113.82"))
    reporter.on_ban(notice("203.0.113.82"))  # again within 15 minutes
    assert [report["ip"] for report in BlocklistDe.reports] == ["203.0.113.82"]
    assert reporter.without_lines == 1 and reporter.pacing.skipped == 1


def test_a_refusal_is_final_a_429_or_5xx_is_tried_again(api, tmp_path):
    BlocklistDe.answers = [429, 503]
    reporter = action(api, tmp_path)
    with pytest.raises(ActionFailed) as busy:
        reporter.on_ban(notice("203.0.113.83"))
    assert busy.value.retry_after == 1 and not busy.value.permanent
    with pytest.raises(ActionFailed, match="503") as down:
        reporter.on_ban(notice("203.0.113.83"))
    assert not down.value.permanent
    reporter.on_ban(notice("203.0.113.83"))  # what the runner does after the wait
    assert [report["ip"] for report in BlocklistDe.reports] == ["203.0.113.83"]
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    refused = BlocklistDeAction(server=SERVER, key_file=key_file(wrong, key="not-the-key"), service="ssh", url=api)
    with pytest.raises(ActionFailed, match="refused the report: apikey: Please API key") as final:
        refused.on_ban(notice("203.0.113.84"))
    assert final.value.permanent


def test_a_key_readable_by_others_or_a_bad_service_is_refused(tmp_path):
    with pytest.raises(ActionError, match="readable by others"):
        BlocklistDeAction(server=SERVER, key_file=key_file(tmp_path, mode=0o644), service="ssh")
    with pytest.raises(ActionError, match="service must name the attacked service"):
        BlocklistDeAction(server=SERVER, key_file=key_file(tmp_path), service="ssh; rm -rf /")
