"""The mail action against a real SMTP server (aiosmtpd) on loopback that requires STARTTLS and
a login: a storm of bans makes one digest, not a mail per ban; a server that is down costs
nothing and the digest goes out once it is back."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from agent.actions import ActionError, BanNotice
from agent.actions.mail import MailAction
from agent.bans import Ban

from .conftest import require_root
from .redis_server import make_certificates
from .rsyslog import free_port

PASSWORD = "correct horse"
REPO = Path(__file__).resolve().parents[2]


class Inbox:
    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.rcpt_tos, message, session.authenticated))
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"jw" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok)


@pytest.fixture
def smtp(tmp_path):
    """(inbox, port, CA file, start, running): start() runs a new server on the port (the first is
    started here; a test may stop it, running[-1].stop(), and start another)."""
    certificates = make_certificates(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.certificate, certificates.key)
    inbox = Inbox()
    port = free_port()
    running = []

    def start() -> Controller:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                                authenticator=authenticate, auth_require_tls=True)
        controller.start()
        running.append(controller)
        return controller

    start()
    yield inbox, port, certificates.ca, start, running
    for controller in running:
        controller.stop(no_assert=True)


def notice(n: int, kind: str = "ban") -> BanNotice:
    return BanNotice.of(kind, Ban("sshd", ipaddress.ip_address(f"203.0.113.{n}"), 1000.0, 4600.0, 1,
                                  "5 sshd failures"))


def action(tmp_path, port, ca, **options) -> MailAction:
    password = tmp_path / "smtp.password"
    password.write_text(PASSWORD)
    password.chmod(0o600)
    return MailAction(sender="jailwarden@example.org", recipients=["admin@example.org"], host="127.0.0.1",
                      port=port, username="jw", password_file=str(password), ca_file=str(ca), **options)


def test_a_storm_of_bans_is_one_digest_over_starttls_with_login(smtp, tmp_path):
    inbox, port, ca, *_ = smtp
    mail = action(tmp_path, port, ca, interval=0.3, unban=True)

    async def storm() -> None:
        for n in range(50):
            await mail.on_ban(notice(n))
        await mail.on_unban(notice(7, "unban"))
        while mail.pending or mail.sent == 0:
            await asyncio.sleep(0.02)

    asyncio.run(storm())
    assert len(inbox.messages) == 1
    recipients, message, authenticated = inbox.messages[0]
    assert recipients == ["admin@example.org"] and authenticated
    assert message["Subject"].endswith(": 50 bans, 1 unbans")
    body = message.get_content()
    assert body.count("ban   203.0.113.") == 50 and "unban 203.0.113.7 " in body
    assert "jail sshd for 1h, offence 1: 5 sshd failures" in body


def test_a_server_that_is_down_keeps_the_digest_for_the_next_interval(smtp, tmp_path):
    inbox, port, ca, start, running = smtp
    running.pop().stop()
    mail = action(tmp_path, port, ca, interval=0.2)

    async def down_then_up() -> None:
        await mail.on_ban(notice(1))
        while mail.last_error is None:
            await asyncio.sleep(0.02)
        start()
        while mail.sent == 0:
            await asyncio.sleep(0.02)

    asyncio.run(asyncio.wait_for(down_then_up(), 10))
    assert len(inbox.messages) == 1 and "203.0.113.1" in inbox.messages[0][1].get_content()
    assert "Connection refused" in mail.last_error


def test_a_password_file_readable_by_others_or_a_bad_security_is_refused(tmp_path):
    password = tmp_path / "smtp.password"
    password.write_text(PASSWORD)
    password.chmod(0o644)
    with pytest.raises(ActionError, match="readable by others"):
        MailAction(sender="a@example.org", recipients=["b@example.org"], username="jw", password_file=str(password))
    with pytest.raises(ActionError, match="security must be"):
        MailAction(sender="a@example.org", recipients=["b@example.org"], security="tls13")


def test_a_digest_waiting_when_the_agent_stops_is_sent_then(smtp, tmp_path):
    from agent.actions.runner import ActionRunner

    inbox, port, ca, *_ = smtp
    mail = action(tmp_path, port, ca, interval=3600)
    runner = ActionRunner({"mail": mail}, {"sshd": ("mail",)})

    async def ban_and_stop() -> None:
        runner.start()
        runner.notify("ban", Ban("sshd", ipaddress.ip_address("203.0.113.99"), 1000.0, 4600.0, 1, "5 sshd failures"))
        while mail.pending == []:
            await asyncio.sleep(0.01)
        await runner.stop()

    asyncio.run(asyncio.wait_for(ban_and_stop(), 10))
    assert len(inbox.messages) == 1 and "203.0.113.99" in inbox.messages[0][1].get_content()


# The start of a script run in a mount namespace of its own (run_with_own_resolver): a mail action
# with reverse DNS against the test's server; argv: the repository, the port, the password file, the CA.
MAIL_SCRIPT = """
import asyncio, ipaddress, json, sys, time
sys.path.insert(0, sys.argv[1])
from agent.actions import BanNotice
from agent.actions.mail import MailAction
from agent.bans import Ban
from agent.evidence import Line
from parsers.filter import Failure

def mail_action(**options):
    return MailAction(sender="jailwarden@example.org", recipients=["admin@example.org"], host="127.0.0.1",
                      port=int(sys.argv[2]), username="jw", password_file=sys.argv[3], ca_file=sys.argv[4],
                      reverse_dns=True, **options)
"""


def run_with_own_resolver(tmp_path, port: int, ca, script: str, etc: dict[str, str]) -> subprocess.CompletedProcess:
    """MAIL_SCRIPT then `script`, run by glibc's real resolver in a mount namespace where each
    /etc/NAME of `etc` holds its text (no query leaves the machine)."""
    binds = []
    for name, text in etc.items():
        (tmp_path / name).write_text(text)
        binds.append(f"mount --bind {tmp_path / name} /etc/{name}")
    (tmp_path / "send.py").write_text(MAIL_SCRIPT + script)
    inner = " && ".join(binds + [f"exec {sys.executable} {tmp_path / 'send.py'} {REPO} {port} "
                                 f"{tmp_path / 'smtp.password'} {ca}"])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], check=True,
                          timeout=60, capture_output=True, text=True)


BAN_TWO = """
mail = mail_action(interval=3600, timeout=5)

async def ban_two():
    for n in (90, 91):
        address = f"203.0.113.{n}"
        lines = tuple(Line.of(Failure(ipaddress.ip_address(address), "sshd", 1000.0 + second,
                                      f"Failed password for invalid user alice from {address} port 40{second}",
                                      {"user": "alice"})) for second in range(5))
        await mail.on_ban(BanNotice.of("ban", Ban("sshd", ipaddress.ip_address(address), 1006.0, 4606.0, 1,
                                                   "6 sshd failures"), 6, lines))
    await mail.close()

asyncio.run(ban_two())
"""


def test_a_ban_is_mailed_with_its_last_lines_as_logged_and_the_address_reverse_name(smtp, tmp_path):
    """Reverse DNS by the real resolver, in a mount namespace whose /etc/hosts names one of the
    two addresses, whose nsswitch.conf asks files then DNS, and whose resolv.conf points at
    loopback (no query leaves the machine)."""
    require_root()
    inbox, port, ca, *_ = smtp
    mail = action(tmp_path, port, ca)  # writes the password file
    run_with_own_resolver(tmp_path, port, ca, BAN_TWO, {
        "hosts": "127.0.0.1 localhost\n203.0.113.90 scanner-90.example.net\n",
        "resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n"})
    assert mail.reverse_dns is False  # off unless asked for
    (_, message, _), = inbox.messages
    body = message.get_content().replace("\r\n", "\n")
    assert "ban   203.0.113.90" in body and "      reverse DNS: scanner-90.example.net (unverified)\n" in body
    assert "      reverse DNS: (none)\n" in body  # 203.0.113.91 has no name
    # Each address's lines, as logged: this mail goes to the admin.
    assert body.count("Failed password for invalid user alice from 203.0.113.90") == 5
    assert "      1970-01-01T00:16:44+00:00 Failed password for invalid user alice from 203.0.113.91 port 404\n" in body


BAN_WHILE_DNS_HANGS = """
mail = mail_action(interval=0.1, timeout=2)

async def main():
    gaps, last = [], time.monotonic()
    await mail.on_ban(BanNotice.of("ban", Ban("sshd", ipaddress.ip_address("203.0.113.92"), 0.0, 3600.0, 1, "x")))
    while mail.sent == 0:  # the loop ticks every 10 ms while the digest waits for the resolver
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    print(json.dumps({"max_gap": max(gaps)}))

started = time.monotonic()
asyncio.run(main())
print(json.dumps({"exit_after": time.monotonic() - started}))
"""


def test_a_resolver_that_never_answers_holds_up_neither_the_loop_nor_the_exit(smtp, tmp_path):
    """Reverse DNS against a name server on loopback that reads queries and never answers (in a
    mount namespace whose resolv.conf points at it): the digest goes out after the mail's
    timeout with "(no answer in time)", the event loop never stops meanwhile, and the process
    exits without waiting for the lookup."""
    require_root()
    inbox, port, ca, *_ = smtp
    action(tmp_path, port, ca)  # writes the password file
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind(("127.0.0.1", 53))
    except OSError as error:
        silent.close()
        pytest.skip(f"127.0.0.1:53 is taken ({error.strerror}): cannot stand in for a silent name server")
    try:
        done = run_with_own_resolver(tmp_path, port, ca, BAN_WHILE_DNS_HANGS, {
            "resolv.conf": "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: dns\n"})
    finally:
        silent.close()
    figures = {key: value for line in done.stdout.splitlines() for key, value in json.loads(line).items()}
    (_, message, _), = inbox.messages
    assert "      reverse DNS: (no answer in time)" in message.get_content()
    assert figures["max_gap"] < 0.5, figures  # the loop was never held for the 2 s lookup timeout
    assert figures["exit_after"] < 10, figures  # not the resolver's 30 s
