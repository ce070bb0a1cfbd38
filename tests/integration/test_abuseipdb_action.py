"""The abuseipdb action against a local server that speaks AbuseIPDB's API v2 report endpoint
(form POST, Key header, JSON answers, 429 with Retry-After and a JSON error): what is sent, that
the per-address interval and the daily limit are kept, and that nothing local leaves the host."""

from __future__ import annotations

import ipaddress
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.actions import ActionError, ActionFailed, BanNotice
from agent.actions.abuseipdb import AbuseIPDBAction
from agent.bans import Ban

KEY = "0123456789abcdef" * 5


class AbuseIPDB(BaseHTTPRequestHandler):
    reports: list[dict[str, str]] = []
    answers: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        if self.path != "/api/v2/report" or self.headers.get("Key") != KEY:
            return self._json(401, {"errors": [{"detail": "Authentication failed.", "status": 401}]})
        status = type(self).answers.pop(0) if type(self).answers else 200
        if status == 429:
            return self._json(429, {"errors": [{"detail": "Daily rate limit of 1000 requests exceeded.",
                                                "status": 429}]}, retry_after="1")
        type(self).reports.append(form)
        self._json(200, {"data": {"ipAddress": form["ip"], "abuseConfidenceScore": 52}})

    def _json(self, status: int, body: dict, retry_after: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *arguments) -> None:
        pass


@pytest.fixture
def api():
    AbuseIPDB.reports, AbuseIPDB.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), AbuseIPDB)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api/v2/report"
    server.shutdown()


def key_file(tmp_path, mode=0o600):
    path = tmp_path / "abuseipdb.key"
    path.write_text(KEY + "\n")
    path.chmod(mode)
    return str(path)


def notice(address: str, reason: str = "5 sshd failures", start: float = 1_796_000_000.0) -> BanNotice:
    return BanNotice.of("ban", Ban("sshd", ipaddress.ip_address(address), start, start + 3600, 1, reason))


def test_a_ban_is_reported_with_its_categories_time_and_a_comment_of_jail_and_reason_only(api, tmp_path):
    action = AbuseIPDBAction(key_file(tmp_path), categories=[18, 22], url=api)
    action.on_ban(notice("203.0.113.90"))
    action.on_unban(notice("203.0.113.90"))  # not news to AbuseIPDB: nothing sent
    assert AbuseIPDB.reports == [{"ip": "203.0.113.90", "categories": "18,22",
                                  "comment": "jailwarden: banned in jail sshd (5 sshd failures)",
                                  "timestamp": "2026-11-30T00:53:20+00:00"}]


def test_an_address_is_reported_once_per_interval_and_no_more_than_the_daily_limit(api, tmp_path):
    action = AbuseIPDBAction(key_file(tmp_path), categories="18,22", url=api, daily_limit=2)
    for address in ("203.0.113.91", "203.0.113.91", "203.0.113.92", "203.0.113.93", "203.0.113.94"):
        action.on_ban(notice(address))
    assert [report["ip"] for report in AbuseIPDB.reports] == ["203.0.113.91", "203.0.113.92"]
    assert action.pacing.skipped == 3
    action.on_ban(notice("2001:db8::1"))  # over the daily limit still
    prefix = BanNotice.of("ban", Ban("sshd", ipaddress.ip_network("198.51.100.0/24"), 0, 1, 1))
    action.on_ban(prefix)  # a network is never reported
    assert len(AbuseIPDB.reports) == 2


def test_a_429_is_tried_again_after_retry_after_and_a_refusal_is_not(api, tmp_path):
    action = AbuseIPDBAction(key_file(tmp_path), categories=[18], url=api)
    AbuseIPDB.answers = [429]
    with pytest.raises(ActionFailed) as failed:
        action.on_ban(notice("203.0.113.95"))
    assert failed.value.retry_after == 1 and not failed.value.permanent
    assert "Daily rate limit" in str(failed.value)
    action.on_ban(notice("203.0.113.95"))  # what the runner does after the wait
    assert [report["ip"] for report in AbuseIPDB.reports] == ["203.0.113.95"]
    wrong = tmp_path / "other"
    wrong.mkdir()
    (wrong / "abuseipdb.key").write_text("not the key")
    (wrong / "abuseipdb.key").chmod(0o600)
    with pytest.raises(ActionFailed, match="401: Authentication failed") as refused:
        AbuseIPDBAction(str(wrong / "abuseipdb.key"), categories=[18], url=api).on_ban(notice("203.0.113.96"))
    assert refused.value.permanent


def test_a_key_readable_by_others_or_unknown_categories_are_refused(tmp_path):
    with pytest.raises(ActionError, match="readable by others .*chmod 600"):
        AbuseIPDBAction(key_file(tmp_path, 0o644), categories=[18])
    with pytest.raises(ActionError, match="from 1 to 23"):
        AbuseIPDBAction(key_file(tmp_path), categories=[99])
