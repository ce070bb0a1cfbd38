"""The `[fleet]` table: where the fleet's Redis is, who this node is, and the shared key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.config_values import describe, nonempty_text

FLEET_KEYS = ("url", "sentinels", "service", "cluster", "node", "key_file", "username", "password_file", "ca_file",
              "prefix", "stream_maxlen", "buffer")
JAIL_FLEET_KEYS = ("share", "accept", "fleet_count")


@dataclass(slots=True, frozen=True)
class FleetConfig:
    key_file: Path  # the fleet's shared signing key; readable by root only
    url: str | None = None  # redis://HOST:PORT/DB, rediss:// (TLS) or unix:///PATH
    sentinels: tuple[tuple[str, int], ...] = ()  # or: Sentinels (HOST:PORT) that name the master of `service`
    service: str = "mymaster"
    cluster: bool = False  # `url` is a node of a Redis Cluster
    node: str | None = None  # this agent's name in the fleet; None: the host name
    username: str | None = None  # Redis ACL user
    password_file: Path | None = None  # Redis password (AUTH), from a file readable by root only
    ca_file: Path | None = None  # CA certificates for rediss://
    prefix: str = "jailwarden"  # of every Redis key the fleet uses
    stream_maxlen: int = 100_000  # bans and unbans the stream keeps (about; XADD MAXLEN ~)
    buffer: int = 10_000  # events held while Redis is unreachable; beyond, the oldest are dropped

    @property
    def stream(self) -> str:
        return f"{self.prefix}:bans"


def redis_url(value: object) -> str:
    text = nonempty_text(value)
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{text!r}: expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///PATH")
    if parts.password:
        raise ValueError(f"{text!r}: put the password in password_file, not in the URL (the config is readable)")
    if parts.scheme == "unix" and not parts.path.startswith("/"):
        raise ValueError(f"{text!r}: a unix socket is unix:// and an absolute path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"{text!r}: names no host")
    return text


def prefix(value: object) -> str:
    text = nonempty_text(value)
    if not text.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"expected letters, digits, '.', '-' or '_', got {describe(value)}")
    return text


def sentinel(value: object) -> tuple[str, int]:
    """A Sentinel's HOST:PORT ([IPv6]:PORT)."""
    text = nonempty_text(value)
    parts = urlsplit(f"redis://{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path:
        raise ValueError(f"{text!r}: expected HOST:PORT, as in 192.0.2.10:26379 or [2001:db8::10]:26379")
    return parts.hostname, port
