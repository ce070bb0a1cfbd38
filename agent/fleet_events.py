"""What the agents of a fleet tell each other through Redis, sans-IO: a ban or an unban as a
signed stream entry, and the key a fleet-wide failure count lives under.

Signing. Write access to Redis must not be enough to ban: an entry carries an HMAC-SHA256 of its
JSON text under the fleet's shared key, and an entry whose signature does not verify is
rejected. The JSON is the signed text itself, so what is checked is exactly what is read; it
names the stream it was written to, so an entry copied from another fleet's stream (one with
another `prefix` and the same key) is refused. A member of a failure count is signed too, bound
to its jail and address: a member someone wrote without the key does not count.
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


def encode(event: FleetEvent, key: bytes, stream: str) -> dict[str, str]:
    """The entry's fields for `event` in `stream`, signed with `key`."""
    text = json.dumps({
        "v": VERSION, "stream": stream, "kind": event.kind, "jail": event.jail, "address": str(event.address),
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


def decode(fields: dict[bytes, bytes], key: bytes, stream: str) -> FleetEvent:
    """The event of an entry of `stream`, or RejectedEvent saying why not."""
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
        if data.get("stream") != stream:
            raise RejectedEvent(f"signed for stream {data.get('stream')!r}, copied into {stream!r}")
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


# One failure into an address's sorted set, atomically and in one round trip (one key, so any
# Redis Cluster slot). Times are Redis's own clock (TIME), so nodes whose clocks differ still
# agree on what findtime covers. Adds the member, drops what is older than findtime, newer than
# a minute ahead, and all but the newest `keep`, renews the expiry, and returns the members for
# the agent to verify. ARGV: member, findtime, keep, ttl.
COUNT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (now + 60), '+inf')
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
_MEMBER_SIGNATURE = 32  # hex digits of the HMAC a member carries


def count_member(key: bytes, count_key: str, node: str, unique: str) -> str:
    """A failure's member of the sorted set `count_key`: NODE|UNIQUE|SIGNATURE."""
    text = f"{node}|{unique}"
    return f"{text}|{sign(f'{count_key}|{text}'.encode(), key)[:_MEMBER_SIGNATURE]}"


def signed_members(members: list[bytes | str], key: bytes, count_key: str) -> int:
    """How many of a count's members carry a valid signature for this key."""
    valid = 0
    for member in members:
        text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
        body, _, signature = text.rpartition("|")
        expected = sign(f"{count_key}|{body}".encode(), key)[:_MEMBER_SIGNATURE]
        valid += bool(body) and hmac.compare_digest(signature, expected)
    return valid


def entry_time(entry_id: str) -> float:
    """When Redis added a stream entry (its ID is MILLISECONDS-SEQUENCE), in seconds."""
    return int(entry_id.partition("-")[0]) / 1000


def entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
