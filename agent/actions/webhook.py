"""The webhook action: a JSON POST per ban (and, with `unban = true`, per unban) to a URL, signed
with HMAC-SHA256 when a secret is given. `format = "slack"` sends `{"text": ...}`, which Slack
and Mattermost incoming webhooks take."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from agent import __version__
from agent.actions import ActionError, ActionFailed, BanNotice
from agent.config_values import format_duration
from agent.secrets import SecretError, read_secret

SIGNATURE_HEADER = "X-Jailwarden-Signature"  # "sha256=" + hex HMAC of the body


class WebhookAction:
    def __init__(self, url: str, secret_file: str | None = None, format: str = "json",  # noqa: A002
                 timeout: float = 10.0, unban: bool = False) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ActionError(f"webhook: url must be an http:// or https:// URL, got {url!r}")
        if format not in ("json", "slack"):
            raise ActionError(f"webhook: format must be 'json' or 'slack', got {format!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 120:
            raise ActionError(f"webhook: timeout must be 0 to 120 seconds, got {timeout!r}")
        try:
            self.secret = read_secret(Path(secret_file), "webhook secret_file") if secret_file else None
        except SecretError as error:
            raise ActionError(str(error)) from None
        self.url, self.format, self.timeout, self.unban = url, format, float(timeout), bool(unban)

    def on_ban(self, notice: BanNotice) -> None:
        self._post(notice)

    def on_unban(self, notice: BanNotice) -> None:
        if self.unban:
            self._post(notice)

    def body(self, notice: BanNotice) -> bytes:
        if self.format == "slack":
            length = "permanently" if notice.end is None else f"for {format_duration(round(notice.end - notice.start))}"
            text = (f"jailwarden: ban {notice.address} in jail {notice.jail} {length} "
                    f"(offence {notice.offence}; {notice.reason})" if notice.kind == "ban"
                    else f"jailwarden: unban {notice.address} in jail {notice.jail}")
            return json.dumps({"text": text}).encode()
        return json.dumps({"event": notice.kind, "jail": notice.jail, "address": notice.address,
                           "start": notice.start, "end": notice.end, "offence": notice.offence,
                           "reason": notice.reason}, sort_keys=True).encode()

    def _post(self, notice: BanNotice) -> None:
        body = self.body(notice)
        headers = {"Content-Type": "application/json", "User-Agent": f"jailwarden/{__version__}"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                response.read(65536)
        except urllib.error.HTTPError as error:
            retry = error.code == 429 or error.code >= 500
            raise ActionFailed(f"{self.url} answered {error.code} {error.reason}",
                               retry_after=_retry_after(error.headers.get("Retry-After")),
                               permanent=not retry) from None
        except (urllib.error.URLError, OSError) as error:
            raise ActionFailed(f"{self.url}: {getattr(error, 'reason', error)}") from None


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
