"""The abuseipdb action: reports each banned address to AbuseIPDB's API v2 (`POST /report`,
form fields ip, categories, comment, timestamp; the key in the `Key` header).

What leaves the host is the address, the jail's categories, the ban's time and a comment: the
jail's name, the ban's reason (a count of failures and a filter's name) and the lines that led to
the ban with every user name, other address, host name of ours, e-mail address and query string
replaced (agent/evidence.py), up to AbuseIPDB's 1,024 characters. AbuseIPDB takes one report per
address per 15 minutes and a daily quota (1,000 on the free plan): an address reported within
`interval` is not sent again, and beyond `daily_limit` reports a UTC day nothing is sent until
the next day (agent/actions/pacing.py). A network (a prefix ban) is not reported: the API takes
single addresses.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from agent.actions import ActionError, ActionFailed, BanNotice
from agent.actions.http import MAX_ANSWER, post
from agent.actions.pacing import Pacing
from agent.secrets import SecretError, read_secret

API = "https://api.abuseipdb.com/api/v2/report"
MAX_COMMENT = 1024  # characters AbuseIPDB takes


class AbuseIPDBAction:
    def __init__(self, key_file: str, categories: list[int] | str, url: str = API, timeout: float = 10.0,
                 interval: float = 900.0, daily_limit: int = 1000) -> None:
        try:
            self.key = read_secret(Path(key_file), "abuseipdb key_file").decode()
        except SecretError as error:
            raise ActionError(str(error)) from None
        if isinstance(categories, str):
            categories = [part.strip() for part in categories.split(",") if part.strip()]
        try:
            self.categories = [int(category) for category in categories]
        except (TypeError, ValueError):
            raise ActionError(f"abuseipdb: categories must be AbuseIPDB category numbers, got {categories!r}") from None
        if not self.categories or not all(1 <= category <= 23 for category in self.categories):
            raise ActionError(f"abuseipdb: categories must be numbers from 1 to 23 (18: brute-force, 22: SSH), "
                              f"got {categories!r}")
        if not str(url).startswith(("https://", "http://")):
            raise ActionError(f"abuseipdb: url must be http(s)://, got {url!r}")
        self.url, self.timeout = url, float(timeout)
        try:
            self.pacing = Pacing("abuseipdb", interval, daily_limit)
        except (TypeError, ValueError) as error:
            raise ActionError(str(error)) from None

    def on_ban(self, notice: BanNotice) -> None:
        now = time.time()
        if "/" in notice.address or not self.pacing.allows(notice.address, now):
            return
        self._send(notice)
        self.pacing.sent(notice.address, now)

    def on_unban(self, notice: BanNotice) -> None:
        pass  # AbuseIPDB keeps reports; an unban is not news to it

    def _send(self, notice: BanNotice) -> None:
        form = {
            "ip": notice.address,
            "categories": ",".join(str(category) for category in self.categories),
            "comment": comment(f"jailwarden: banned in jail {notice.jail} ({notice.reason})", notice.public_lines,
                               MAX_COMMENT),
            "timestamp": datetime.fromtimestamp(notice.start, timezone.utc).isoformat(timespec="seconds"),
        }
        answer = post(self.url, urllib.parse.urlencode(form).encode(), {"Key": self.key, "Accept": "application/json"},
                      self.timeout, who="AbuseIPDB", detail=_error_detail)
        try:
            json.loads(answer or b"{}")
        except ValueError as error:
            raise ActionFailed(f"AbuseIPDB at {self.url}: {error}") from None


def comment(heading: str, lines: tuple[str, ...], limit: int) -> str:
    """`heading` and as many whole `lines` as fit in `limit` characters, one a line."""
    text = heading[:limit]
    for line in lines:
        if len(text) + 1 + len(line) > limit:
            break
        text += "\n" + line
    return text


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        return "; ".join(item.get("detail", "") for item in json.loads(error.read(MAX_ANSWER))["errors"])[:300]
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return str(error.reason)
