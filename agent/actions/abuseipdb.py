"""The abuseipdb action: reports each banned address to AbuseIPDB's API v2 (`POST /report`,
form fields ip, categories, comment, timestamp; the key in the `Key` header).

What leaves the host is the address, the jail's categories, the ban's time and a comment made
only of the jail's name and the ban's reason (a count of failures and a filter's name): never a
log line, so no user name, URL or local address. AbuseIPDB takes one report per address per 15
minutes and a daily quota (1,000 on the free plan): an address reported within `interval` is not
sent again, and beyond `daily_limit` reports a UTC day nothing is sent until the next day. A
network (a prefix ban) is not reported: the API takes single addresses.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

from agent.actions import ActionError, ActionFailed, BanNotice
from agent.actions.http import MAX_ANSWER, post
from agent.secrets import SecretError, read_secret

log = logging.getLogger("jailwarden.actions")

API = "https://api.abuseipdb.com/api/v2/report"
_REMEMBERED = 100_000  # addresses whose last report time is kept


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
        self.url, self.timeout, self.interval, self.daily_limit = url, float(timeout), float(interval), int(daily_limit)
        self._reported: OrderedDict[str, float] = OrderedDict()
        self._day, self._today = "", 0
        self.skipped = 0

    def on_ban(self, notice: BanNotice) -> None:
        if "/" in notice.address:
            return
        now = time.time()
        last = self._reported.get(notice.address)
        if last is not None and now - last < self.interval:
            self.skipped += 1
            return
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._today = day, 0
        if self._today >= self.daily_limit:
            self.skipped += 1
            if self._today == self.daily_limit:
                log.warning("action abuseipdb: daily limit of %d reports reached; none until 00:00 UTC",
                            self.daily_limit)
                self._today += 1
            return
        self._send(notice)
        self._today += 1
        self._reported[notice.address] = now
        self._reported.move_to_end(notice.address)
        if len(self._reported) > _REMEMBERED:
            self._reported.popitem(last=False)

    def on_unban(self, notice: BanNotice) -> None:
        pass  # AbuseIPDB keeps reports; an unban is not news to it

    def _send(self, notice: BanNotice) -> None:
        form = {
            "ip": notice.address,
            "categories": ",".join(str(category) for category in self.categories),
            "comment": f"jailwarden: banned in jail {notice.jail} ({notice.reason})"[:1000],
            "timestamp": datetime.fromtimestamp(notice.start, timezone.utc).isoformat(timespec="seconds"),
        }
        answer = post(self.url, urllib.parse.urlencode(form).encode(), {"Key": self.key, "Accept": "application/json"},
                      self.timeout, who="AbuseIPDB", detail=_error_detail)
        try:
            json.loads(answer or b"{}")
        except ValueError as error:
            raise ActionFailed(f"AbuseIPDB at {self.url}: {error}") from None


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        return "; ".join(item.get("detail", "") for item in json.loads(error.read(MAX_ANSWER))["errors"])[:300]
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return str(error.reason)
