"""Actions of a real agent (`jailwarden run`, log backend) on a real ban: the webhook POSTs to an
HTTP server in the test (which first answers 503, then 200), signed with the secret; a plug-in
action found by entry point, from a small package made in the test, is called too; the lines
behind a ban reach AbuseIPDB, blocklist.de and the webhook with nothing local in them."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .agent import AgentProcess, socket_config
from .conftest import require_root
from .polling import wait_until
from .redis_server import make_certificates
from .rsyslog import free_port, run_logger

PLUGIN = '''
import json, os
class FileAction:
    """Writes each notice as a JSON line to `path`."""
    def __init__(self, path):
        self.path = path
    def on_ban(self, notice):
        with open(self.path, "a") as out:
            out.write(json.dumps({"kind": notice.kind, "address": notice.address}) + "\\n")
    on_unban = on_ban
'''


class Receiver(BaseHTTPRequestHandler):
    requests: list[tuple[dict, bytes]] = []
    answers: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((dict(self.headers), body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()

    def log_message(self, *arguments) -> None:
        pass


def make_plugin_package(directory: Path) -> None:
    """A package on the path with its own dist-info: what `pip install` of a plug-in leaves."""
    (directory / "jw_file_action.py").write_text(PLUGIN)
    info = directory / "jw_file_action-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jw-file-action\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[jailwarden.actions]\nto-file = jw_file_action:FileAction\n")


def test_a_ban_sets_off_a_signed_webhook_retried_after_a_503_and_an_entry_point_plugin(tmp_path):
    require_root()  # the syslog unix socket is root's; the agent enforces (log backend)
    Receiver.requests, Receiver.answers = [], [503]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = tmp_path / "webhook.secret"
    secret.write_text(secrets.token_hex(16))
    secret.chmod(0o600)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    make_plugin_package(plugins)
    notices = tmp_path / "notices.jsonl"
    metrics_port = free_port()
    config = socket_config(tmp_path) + f"""
[metrics]
listen = "127.0.0.1:{metrics_port}"
[actions.hook]
type = "webhook"
url = "http://127.0.0.1:{server.server_port}/hook"
secret_file = "{secret}"
unban = true
[actions.file]
type = "to-file"
path = "{notices}"
[jails.sshd]
filter = "sshd"
maxretry = 2
actions = ["hook", "file"]
"""
    try:
        with AgentProcess(tmp_path, config, dry_run=False, env={"PYTHONPATH": str(plugins)}) as agent:
            for port in (4001, 4002):
                run_logger("-u", str(tmp_path / "syslog.sock"), "-d", "--rfc5424", "-t", "sshd", "-p", "auth.notice",
                           f"Failed password for root from 203.0.113.70 port {port} ssh2")
            agent.wait_for(r"jail sshd: ban 203\.0\.113\.70 for 1h")
            wait_until(lambda: len(Receiver.requests) == 2, "the webhook, tried again after its 503")
            assert agent.cli("unban", "sshd", "203.0.113.70").returncode == 0
            wait_until(lambda: len(Receiver.requests) == 3, "the unban's webhook")
            wait_until(lambda: notices.exists() and len(notices.read_text().splitlines()) == 2, "the plug-in's lines")
            status = json.loads(agent.cli("status", "--json").stdout)["actions"]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as scrape:
                metrics = scrape.read().decode()
    finally:
        server.shutdown()
    for headers, body in Receiver.requests:
        expected = "sha256=" + hmac.new(secret.read_text().strip().encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Jailwarden-Signature"] == expected
    bodies = [json.loads(body) for _, body in Receiver.requests]
    assert [(b["event"], b["address"], b["jail"]) for b in bodies] == [
        ("ban", "203.0.113.70", "sshd"), ("ban", "203.0.113.70", "sshd"), ("unban", "203.0.113.70", "sshd")]
    assert bodies[0]["end"] - bodies[0]["start"] == 3600 and "2 sshd failures" in bodies[0]["reason"]
    assert [json.loads(line) for line in notices.read_text().splitlines()] == [
        {"kind": "ban", "address": "203.0.113.70"}, {"kind": "unban", "address": "203.0.113.70"}]
    assert status["hook"]["done"] == 2 and status["hook"]["retried"] == 1 and status["hook"]["failed"] == 0
    assert status["file"]["done"] == 2
    for sample in ('jailwarden_action_notices_total{action="hook",outcome="done"} 2',
                   'jailwarden_action_notices_total{action="hook",outcome="retried"} 1',
                   'jailwarden_action_notices_total{action="hook",outcome="failed"} 0',
                   'jailwarden_action_waiting{action="file"} 0'):
        assert sample in metrics.splitlines()


def serve(handler, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_lines_behind_a_ban_reach_the_reports_without_user_names_or_local_addresses(tmp_path):
    """A real agent bans on three Dovecot lines naming a user, the local address and this host's
    name; AbuseIPDB, blocklist.de (both over HTTPS, the agent trusting the test's CA) and a
    webhook, local servers speaking their protocols, get the lines with none of those, and the
    banned address as the service logged it."""
    require_root()
    from .test_abuseipdb_action import KEY as ABUSEIPDB_KEY
    from .test_abuseipdb_action import AbuseIPDB
    from .test_blocklist_de_action import KEY as BLOCKLIST_KEY
    from .test_blocklist_de_action import BlocklistDe

    AbuseIPDB.reports, AbuseIPDB.answers, BlocklistDe.reports, BlocklistDe.answers = [], [], [], []
    Receiver.requests, Receiver.answers = [], []
    certificates = make_certificates(tmp_path / "tls")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificates.certificate, certificates.key)
    servers = [serve(AbuseIPDB, tls), serve(BlocklistDe, tls), serve(Receiver)]
    abuseipdb, blocklist, hook = (f"{scheme}://127.0.0.1:{server.server_port}"
                                  for scheme, server in zip(("https", "https", "http"), servers, strict=True))
    keys = {}
    for name, key in (("abuseipdb", ABUSEIPDB_KEY), ("blocklist", BLOCKLIST_KEY)):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(key)
        keys[name].chmod(0o600)
    config = socket_config(tmp_path) + f"""
[actions.abuseipdb]
key_file = "{keys['abuseipdb']}"
categories = [18]
url = "{abuseipdb}/api/v2/report"
[actions.blocklist]
type = "blocklist-de"
server = "reports@example.org"
key_file = "{keys['blocklist']}"
service = "imap"
url = "{blocklist}/en/httpreports.html"
[actions.hook]
type = "webhook"
url = "{hook}/hook"
[jails.dovecot]
filter = "dovecot"
maxretry = 3
actions = ["abuseipdb", "blocklist", "hook"]
"""
    hostname = socket.gethostname()
    try:
        with AgentProcess(tmp_path, config, dry_run=False, env={"SSL_CERT_FILE": str(certificates.ca)}) as agent:
            for attempt in range(3):
                run_logger("-u", str(tmp_path / "syslog.sock"), "-d", "--rfc5424", "-t", "dovecot", "-p", "mail.info",
                           f"imap-login: Disconnected: Connection closed by {hostname} (auth failed, 1 attempts in "
                           f"2 secs): user=<alice.{attempt}@example.org>, method=PLAIN, rip=203.0.113.73, "
                           f"lip=192.0.2.10, TLS, session=<c2Vzc2lvbi0{attempt}>")
            agent.wait_for(r"jail dovecot: ban 203\.0\.113\.73 for 1h")
            wait_until(lambda: AbuseIPDB.reports and BlocklistDe.reports and Receiver.requests, "the three reports")
    finally:
        for server in servers:
            server.shutdown()
    (abuse,), (listed,) = AbuseIPDB.reports, BlocklistDe.reports
    (_, body), = Receiver.requests
    webhook = json.loads(body)
    lines = webhook["lines"]
    assert webhook["failures"] == 3 and len(lines) == 3
    assert abuse["comment"].splitlines() == ["jailwarden: banned in jail dovecot (3 dovecot failures)"] + lines
    assert listed["logs"].splitlines() == lines and listed["ip"] == "203.0.113.73" and listed["service"] == "imap"
    for line in lines:
        assert ("imap-login: Disconnected: Connection closed by <host> (auth failed, 1 attempts in 2 secs): "
                "user=<user>, method=PLAIN, rip=203.0.113.73, lip=<address>, TLS") in line
        for private in ("alice", "example.org", "192.0.2.10", hostname):
            assert private not in line
