"""The webhook action: a JSON POST per ban (and, with `unban = true`, per unban) to a URL, signed
with HMAC-SHA256 when a secret is given. `format = "slack"` sends `{"text": ...}`, which Slack
and Mattermost incoming webhooks take. The JSON body's `lines` are the lines that led to the ban
as fit to leave the host (agent/evidence.py): a webhook often points at someone else's service."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlsplit

from agent.actions import ActionError, BanNotice
from agent.actions.http import post
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
                           "reason": notice.reason, "failures": notice.failures,
                           "lines": list(notice.public_lines)}, sort_keys=True).encode()

    def _post(self, notice: BanNotice) -> None:
        body = self.body(notice)
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        post(self.url, body, headers, self.timeout, who=self.url)
