"""What the agents of a fleet tell each other through Redis, sans-IO: a ban or an unban as a
signed stream entry, and the key a fleet-wide failure count lives under.

Signing. Write access to Redis must not be enough to ban: an entry carries an HMAC-SHA256 of its
JSON text under the fleet's shared key, and an entry whose signature does not verify is
rejected. The JSON is the signed text itself, so what is checked is exactly what is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass

from agent.addresses import Address, Network, parse_address, parse_network

VERSION = 1
_KINDS = ("ban", "unban")
_MAX_EVENT = 4096  # bytes of JSON; anything longer was not written by an agent


@dataclass(slots=True, frozen=True)
class FleetEvent:
    """`kind` ("ban" or "unban") of `address` in `jail`, decided on `node` at `time`; a ban
    lasts from `start` to `end` (math.inf: permanent)."""

    kind: str
    jail: str
    address: Address | Network  # a network: a ban by prefix aggregation
    start: float
    end: float
    reason: str
    node: str
    time: float


def encode(event: FleetEvent, key: bytes) -> dict[str, str]:
    """The stream entry's fields for `event`, signed with `key`."""
    text = json.dumps({
        "v": VERSION, "kind": event.kind, "jail": event.jail, "address": str(event.address),
        "start": event.start, "end": None if event.end == math.inf else event.end, "reason": event.reason,
        "node": event.node, "time": event.time,
    }, separators=(",", ":"), sort_keys=True)
    return {"event": text, "signature": sign(text.encode(), key)}


def sign(text: bytes, key: bytes) -> str:
    return hmac.new(key, text, hashlib.sha256).hexdigest()


class RejectedEvent(Exception):
    """A stream entry that is not a valid, correctly signed event; `signature` says whether the
    signature was what failed."""

    def __init__(self, reason: str, signature: bool = False) -> None:
        super().__init__(reason)
        self.signature = signature


def decode(fields: dict[bytes, bytes], key: bytes) -> FleetEvent:
    """The event of a stream entry, or RejectedEvent saying why not."""
    text, signature = fields.get(b"event"), fields.get(b"signature")
    if text is None or signature is None:
        raise RejectedEvent("not a fleet event (no event or signature field)")
    if len(text) > _MAX_EVENT:
        raise RejectedEvent(f"event of {len(text)} bytes is too long")
    if not hmac.compare_digest(sign(text, key).encode(), signature):
        raise RejectedEvent("bad signature (written by something without the fleet key?)", signature=True)
    try:
        data = json.loads(text)
        if data.get("v") != VERSION:
            raise RejectedEvent(f"event version {data.get('v')!r}, this agent reads {VERSION}")
        kind, end = data["kind"], data["end"]
        if kind not in _KINDS:
            raise RejectedEvent(f"unknown kind {kind!r}")
        return FleetEvent(kind, str(data["jail"]), _target(str(data["address"])), float(data["start"]),
                          math.inf if end is None else float(end), str(data["reason"])[:200], str(data["node"])[:64],
                          float(data["time"]))
    except RejectedEvent:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RejectedEvent(f"malformed event: {error!r}") from None


def _target(text: str) -> Address | Network:
    return parse_network(text) if "/" in text else parse_address(text)


def failures_key(prefix: str, jail: str, address: Address) -> str:
    """The sorted set of an address's recent failures in a jail across the fleet. The braces are
    a Redis Cluster hash tag: every command touches this one key, so any slot will do."""
    return f"{prefix}:failures:{{{jail}:{address}}}"
