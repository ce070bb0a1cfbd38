"""The blocklist-de action: reports each banned address to blocklist.de the way it documents for
reports without mail: a form POST to https://www.blocklist.de/en/httpreports.html with the
server's registered e-mail address or ID (`server`), its API key (`key_file`, mode 600), the
address (`ip`), the attacked `service` (ssh, mail, apache, imap, ftp, sip, bots, bruteforcelogin,
...), the answer's `format` (json) and the `logs`.

blocklist.de wants log lines as proof, so only bans a jail decided here are reported, with the
lines that led to them fit to leave the host (agent/evidence.py: no user name, other address,
host name of ours, e-mail address or query string); a ban by hand, from the fleet or of a prefix
has none and is not reported (in a fleet, the node that saw the attack reports it). An address is
reported once per `interval` (15 min) and at most `daily_limit` times a UTC day.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

from agent.actions import ActionError, ActionFailed, BanNotice
from agent.actions.http import post
from agent.actions.pacing import Pacing
from agent.secrets import SecretError, read_secret

URL = "https://www.blocklist.de/en/httpreports.html"
MAX_LOGS = 4096  # characters of log lines sent with one report
_SERVICE = re.compile(r"[a-z][a-z0-9-]{1,31}")


class BlocklistDeAction:
    def __init__(self, server: str, key_file: str, service: str, url: str = URL, timeout: float = 10.0,
                 interval: float = 900.0, daily_limit: int = 1000) -> None:
        try:
            self.key = read_secret(Path(key_file), "blocklist-de key_file").decode()
        except SecretError as error:
            raise ActionError(str(error)) from None
        if not isinstance(server, (str, int)) or isinstance(server, bool) or not str(server).strip():
            raise ActionError(f"blocklist-de: server must be the server's e-mail address or ID at blocklist.de, "
                              f"got {server!r}")
        if not isinstance(service, str) or not _SERVICE.fullmatch(service):
            raise ActionError(f"blocklist-de: service must name the attacked service (ssh, mail, apache, imap, ftp, "
                              f"...), got {service!r}")
        if not str(url).startswith(("https://", "http://")):
            raise ActionError(f"blocklist-de: url must be http(s)://, got {url!r}")
        self.server, self.service, self.url, self.timeout = str(server).strip(), service, url, float(timeout)
        try:
            self.pacing = Pacing("blocklist-de", interval, daily_limit)
        except (TypeError, ValueError) as error:
            raise ActionError(str(error)) from None
        self.without_lines = 0  # bans not reported: no lines to prove them

    def on_ban(self, notice: BanNotice) -> None:
        if "/" in notice.address:
            return
        if not notice.public_lines:
            self.without_lines += 1
            return
        now = time.time()
        if not self.pacing.allows(notice.address, now):
            return
        self._send(notice)
        self.pacing.sent(notice.address, now)

    def on_unban(self, notice: BanNotice) -> None:
        pass  # blocklist.de expires its entries itself

    def _send(self, notice: BanNotice) -> None:
        logs = "\n".join(notice.public_lines)
        form = {"server": self.server, "apikey": self.key, "ip": notice.address, "service": self.service,
                "format": "json", "logs": logs[-MAX_LOGS:]}
        answer = post(self.url, urllib.parse.urlencode(form).encode(), {"Accept": "application/json"}, self.timeout,
                      who="blocklist.de")
        try:
            result = json.loads(answer)
        except ValueError:
            raise ActionFailed(f"blocklist.de at {self.url}: the answer is not JSON: {answer[:100]!r}") from None
        if not isinstance(result, dict):
            raise ActionFailed(f"blocklist.de at {self.url}: unexpected answer {answer[:100]!r}")
        if result.get("status") == "success" or result.get("error") in (0, "0"):
            return  # what blocklist.de documents as taken
        if result.get("error"):
            # A refused report (a wrong key, a missing field) is refused again if sent again.
            raise ActionFailed(f"blocklist.de refused the report: {_describe(result['error'])}", permanent=True)
        raise ActionFailed(f"blocklist.de at {self.url}: unexpected answer {answer[:100]!r}")


def _describe(error: object) -> str:
    if isinstance(error, dict):
        return "; ".join(f"{key}: {value}" for key, value in error.items())[:300]
    if isinstance(error, list):
        return "; ".join(str(item) for item in error)[:300]
    return str(error)[:300]
