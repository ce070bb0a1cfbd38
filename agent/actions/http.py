"""One HTTP POST for an action (urllib, no extra dependency), its failures as ActionFailed: a 429
or 5xx is worth trying again (after Retry-After when the far end sends one), any other refusal
is not; a network error is tried again."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from agent import __version__
from agent.actions import ActionFailed

MAX_ANSWER = 65536  # bytes of an answer read at most


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, *, who: str,
         detail: Callable[[urllib.error.HTTPError], str] = lambda error: str(error.reason)) -> bytes:
    """POST `body` to `url`; the answer's body. `who` names the far end in errors, `detail` says
    what a refusal was about (by default the HTTP reason phrase)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"User-Agent": f"jailwarden/{__version__}"} | headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
            return response.read(MAX_ANSWER)
    except urllib.error.HTTPError as error:
        retry = error.code == 429 or error.code >= 500
        raise ActionFailed(f"{who} answered {error.code}: {detail(error)}", permanent=not retry,
                           retry_after=retry_after(error.headers.get("Retry-After"))) from None
    except (urllib.error.URLError, OSError) as error:
        raise ActionFailed(f"{who}: {getattr(error, 'reason', error)}") from None


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
