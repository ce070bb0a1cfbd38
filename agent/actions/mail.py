"""The mail action: bans (and, with `unban = true`, unbans) mailed as a digest every
`interval` seconds (60 by default), never a mail per ban in a storm, over SMTP with STARTTLS
(default), implicit TLS (`security = "ssl"`) or none, with optional login. Each ban is listed
with the log lines that led to it (the last few, as logged: the mail goes to the admin) and,
with `reverse_dns = true`, the banned address's name.

The first notice of a quiet spell starts the interval; what arrives within it goes into the same
mail; when the agent stops, what is waiting is sent at once. A mail that cannot be sent is kept
(up to MAX_PENDING notices) and tried again at the next interval; the error is logged and kept
in `last_error`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from agent.actions import ActionError, BanNotice
from agent.config_values import format_duration
from agent.secrets import SecretError, read_secret

log = logging.getLogger("jailwarden.actions")

MAX_PENDING = 1000  # notices held for the next mail; beyond, the oldest are left out (and counted)
MAX_LOOKUPS = 100  # reverse DNS lookups for one mail


class MailAction:
    def __init__(self, sender: str, recipients: list[str], host: str = "localhost", port: int | None = None,
                 security: str = "starttls", username: str | None = None, password_file: str | None = None,
                 ca_file: str | None = None, interval: float = 60.0, timeout: float = 30.0,
                 unban: bool = False, reverse_dns: bool = False) -> None:
        if security not in ("starttls", "ssl", "none"):
            raise ActionError(f"mail: security must be 'starttls', 'ssl' or 'none', got {security!r}")
        if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and "@" in r
                                                                         for r in recipients):
            raise ActionError(f"mail: recipients must be a list of addresses, got {recipients!r}")
        if not isinstance(sender, str) or "@" not in sender:
            raise ActionError(f"mail: sender must be an address, got {sender!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 86400:
            raise ActionError(f"mail: interval must be 0 to 86400 seconds, got {interval!r}")
        if (username is None) != (password_file is None):
            raise ActionError("mail: give username and password_file together")
        try:
            self.password = read_secret(Path(password_file), "mail password_file").decode() if password_file else None
        except SecretError as error:
            raise ActionError(str(error)) from None
        self.sender, self.recipients, self.host, self.security = sender, recipients, host, security
        self.port = port or {"starttls": 587, "ssl": 465, "none": 25}[security]
        self.username, self.interval, self.timeout, self.unban = username, float(interval), float(timeout), unban
        self.reverse_dns = bool(reverse_dns)
        self.context = ssl.create_default_context(cafile=ca_file)
        self.pending: list[BanNotice] = []
        self.left_out = 0
        self.sent = 0
        self.last_error: str | None = None
        self._flush: asyncio.Task | None = None

    async def on_ban(self, notice: BanNotice) -> None:
        self._hold(notice)

    async def on_unban(self, notice: BanNotice) -> None:
        if self.unban:
            self._hold(notice)

    async def close(self) -> None:
        """The agent stops: send what is waiting now rather than lose it."""
        if self._flush is not None:
            self._flush.cancel()
        if self.pending:
            notices, self.pending = self.pending, []
            await asyncio.to_thread(self._compose_and_send, notices, self.left_out)
            self.sent += 1

    def _hold(self, notice: BanNotice) -> None:
        self.pending.append(notice)
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]
            self.left_out += 1
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._send_later(), name="mail digest")

    async def _send_later(self) -> None:
        while self.pending:
            await asyncio.sleep(self.interval)
            notices, left_out = self.pending, self.left_out
            self.pending, self.left_out = [], 0
            try:
                await asyncio.to_thread(self._compose_and_send, notices, left_out)
                self.sent += 1
            except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
                self.last_error = f"{self.host}:{self.port}: {error}"
                log.error("action mail: cannot send the digest of %d notices: %s; trying again in %g s",
                          len(notices), self.last_error, self.interval)
                self.pending = notices + self.pending
                del self.pending[:max(0, len(self.pending) - MAX_PENDING)]

    def message(self, notices: list[BanNotice], left_out: int = 0) -> EmailMessage:
        bans = [notice for notice in notices if notice.kind == "ban"]
        message = EmailMessage()
        message["From"], message["To"] = self.sender, ", ".join(self.recipients)
        message["Subject"] = (f"jailwarden on {socket.gethostname()}: {len(bans)} ban{'s' * (len(bans) != 1)}"
                              + (f", {len(notices) - len(bans)} unbans" if len(notices) > len(bans) else ""))
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid("jailwarden", domain=socket.gethostname())  # not getfqdn: no DNS
        names = reverse_names([notice.address for notice in bans], self.timeout) if self.reverse_dns else {}
        lines = []
        for notice in notices:
            if notice.kind == "ban":
                length = ("permanently" if notice.end is None
                          else f"for {format_duration(round(notice.end - notice.start))}")
                lines.append(f"ban   {notice.address:<39} jail {notice.jail} {length}, offence {notice.offence}: "
                             f"{notice.reason}")
                if notice.address in names:
                    lines.append(f"      reverse DNS: {names[notice.address]}")
                lines += [f"      {line}" for line in notice.lines]
            else:
                lines.append(f"unban {notice.address:<39} jail {notice.jail}")
        if left_out:
            lines.append(f"... and {left_out} more not listed (more than {MAX_PENDING} waiting)")
        message.set_content("\n".join(lines) + "\n")
        return message

    def _compose_and_send(self, notices: list[BanNotice], left_out: int) -> None:
        # In a worker thread, with the reverse DNS lookups: the loop must not wait for a resolver.
        self._send(self.message(notices, left_out))

    def _send(self, message: EmailMessage) -> None:
        # EHLO with the host name as set: smtplib's default asks DNS for the full name each time.
        name = socket.gethostname()
        if self.security == "ssl":
            client = smtplib.SMTP_SSL(self.host, self.port, local_hostname=name, timeout=self.timeout,
                                      context=self.context)
        else:
            client = smtplib.SMTP(self.host, self.port, local_hostname=name, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=self.context)
            if self.username is not None:
                client.login(self.username, self.password)
            client.send_message(message)


def reverse_names(addresses: list[str], timeout: float) -> dict[str, str]:
    """Each address's name by reverse DNS (unverified: whoever holds the address's reverse zone
    chooses it), looked up MAX_LOOKUPS at most, several at a time, within `timeout` seconds in
    all; what has no name or no answer in time says so. Blocking: call it from a worker thread.
    The lookups run in daemon threads, so one a resolver never answers holds up nothing, not
    even the agent's exit."""
    wanted = [address for address in dict.fromkeys(addresses) if "/" not in address][:MAX_LOOKUPS]
    names: dict[str, str] = {}
    todo = queue.SimpleQueue()
    for address in wanted:
        todo.put(address)

    def work() -> None:
        while True:
            try:
                address = todo.get_nowait()
            except queue.Empty:
                return
            names[address] = _reverse_name(address)

    workers = [threading.Thread(target=work, name="reverse-dns", daemon=True) for _ in range(min(8, len(wanted)))]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    return {address: names.get(address, "(no answer in time)") for address in wanted}


def _reverse_name(address: str) -> str:
    try:
        return f"{socket.gethostbyaddr(address)[0]} (unverified)"
    except OSError:
        return "(none)"
