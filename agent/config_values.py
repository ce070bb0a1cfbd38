"""Single config values: durations, addresses and networks, listen URLs, backend names.

Each converter takes what TOML gave and returns the typed value, or raises ValueError (a
bad value) or TypeError (a value of the wrong type) with a reason fit for the user.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.addresses import Address, Network, parse_network
from agent.bans import WEEK

# "auto": nftables where the host's firewall is in nftables, else ipset (decided at start).
BACKENDS = ("auto", "ipset", "nftables", "iptables", "route", "hostsdeny", "log")


@dataclass(slots=True, frozen=True)
class ListenAddress:
    transport: str  # "udp", "tcp", "relp" (RELP over TCP) or "unix" (a datagram socket at `path`)
    host: Address | None = None
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.transport == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{self.transport}://{host}:{self.port}"



def parse_duration(value: object, *, permanent: bool = False) -> float:
    """Seconds from 600, 600.5, "600", "10m", "1h30m", "2d", "1w" (units s m h d w, largest first).

    With `permanent`, -1 and "permanent" mean a ban that never ends and return `math.inf`.
    Zero, negative and infinite values are errors: no duration here means anything with them.
    Raises ValueError for a bad value, TypeError for a value of the wrong type (a boolean, a list).
    """
    if permanent and not isinstance(value, bool) and value in (-1, "-1", "permanent"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f'expected a duration such as 600, "10m" or "1h30m", got {describe(value)}')
    seconds = _duration_text(value) if isinstance(value, str) else _float(value)
    if not 0 < seconds < math.inf:
        hint = ' (-1 or "permanent" for a ban that never ends)' if permanent else ""
        raise ValueError(f"must be a positive, finite duration{hint}, got {value!r}")
    return seconds


def _float(value: int | float) -> float:
    # TOML integers have no bound in tomllib: one too large for a float is infinite here,
    # which the callers reject with their own reason (float() would raise OverflowError).
    try:
        return float(value)
    except OverflowError:
        return math.inf


_UNITS = {"w": WEEK, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:{_NUMBER}[{''.join(_UNITS)}])+")


def format_duration(seconds: float) -> str:
    """`seconds` as a duration is written in the config: "1h", "1h30m", "90.5s"."""
    whole, fraction = divmod(seconds, 1)
    parts, whole = [], int(whole)
    for unit, size in _UNITS.items():
        if size > 1 and whole >= size:
            parts.append(f"{whole // int(size)}{unit}")
            whole %= int(size)
    if whole or fraction or not parts:
        parts.append(f"{whole + fraction:g}s")
    return "".join(parts)


def _duration_text(text: str) -> float:
    compact = text.replace(" ", "")
    # A leading minus is parsed only so that the caller can reject it with a clear reason.
    sign, compact = (-1.0, compact[1:]) if compact.startswith("-") else (1.0, compact)
    if re.fullmatch(_NUMBER, compact):
        return sign * float(compact)
    if not _DURATION.fullmatch(compact):
        raise ValueError(
            f"{text!r} is not a duration: write seconds (600) or numbers with units s, m, h, d, w (10m, 1h30m)"
        )
    parts = re.findall(rf"({_NUMBER})([{''.join(_UNITS)}])", compact)
    units = [unit for _, unit in parts]
    order = list(_UNITS)
    if any(order.index(a) >= order.index(b) for a, b in itertools.pairwise(units)):
        raise ValueError(f"{text!r}: each unit at most once, largest first (w d h m s), as in 1h30m")
    return sign * sum(float(number) * _UNITS[unit] for number, unit in parts)


def describe(value: object) -> str:
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return f"{kinds.get(type(value), type(value).__name__)} {value!r}"


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {describe(value)}")
    return value


def nonempty_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def filter_reference(value: object) -> str:
    text = nonempty_text(value)
    if text.startswith("fail2ban:") and not text.removeprefix("fail2ban:").strip():
        raise ValueError('"fail2ban:" needs the filter\'s name after it, as in "fail2ban:sshd"')
    return text


def absolute_path(value: object) -> Path:
    path = Path(nonempty_text(value))
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path, got {value!r}")
    return path


def backend(value: object) -> str:
    text = nonempty_text(value)
    if text not in BACKENDS:
        close = difflib.get_close_matches(text, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {text!r} (known: {', '.join(BACKENDS)}){hint}")
    return text


def positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {describe(value)}")
    return value


def factor(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= _float(value) < math.inf:
        raise ValueError(f"expected a finite number of at least 1, got {describe(value)}")
    return float(value)


def network(value: object) -> Network:
    if not isinstance(value, str):
        raise TypeError(f"expected an address or CIDR network as a string, got {describe(value)}")
    return parse_network(value)


def listen(value: object) -> ListenAddress:
    text = nonempty_text(value)
    example = ("as in udp://127.0.0.1:5514, tcp://[::1]:5514, relp://127.0.0.1:5515 or "
               "unix:///run/jailwarden/syslog.sock")
    if text.startswith("unix:"):
        path = text.removeprefix("unix://")
        if not path.startswith("/") or path == text:
            raise ValueError(f"{text!r}: a unix socket is unix:// and an absolute path, {example}")
        return ListenAddress("unix", path=path)
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        raise ValueError(f"{text!r} is not SCHEME://HOST:PORT with a port from 1 to 65535, {example}") from None
    if url.scheme not in ("udp", "tcp", "relp"):
        raise ValueError(f"{text!r}: the scheme must be udp://, tcp://, relp:// or unix://")
    if url.path or url.query or url.fragment or url.username or url.password:
        raise ValueError(f"{text!r}: only SCHEME://HOST:PORT is allowed, {example}")
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: needs a port from 1 to 65535, {example}")
    try:
        host = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address (names are not resolved), {example}") from None
    return ListenAddress(url.scheme, host, port)


def http_listen(value: object) -> ListenAddress:
    """HOST:PORT of an HTTP endpoint, e.g. "127.0.0.1:9716" or "[::1]:9716"."""
    text = nonempty_text(value)
    try:
        return listen(f"tcp://{text}")
    except ValueError:
        raise ValueError(f"{text!r}: expected HOST:PORT with an IP address, as in 127.0.0.1:9716 or "
                         "[::1]:9716") from None


def per_second(value: object) -> float:
    """A rate: a positive, finite number of events a second (0.5: one every two seconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number a second such as 20 or 0.5, got {describe(value)}")
    if not 0 < _float(value) < math.inf:
        raise ValueError(f"must be a positive, finite number a second, got {value!r}")
    return float(value)


def poll_interval(value: object) -> float:
    """Seconds between checks of the journal for entries its notifications have not announced yet."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number of seconds such as 0.01, got {describe(value)}")
    if not 0.001 <= value <= 5:
        raise ValueError(f"must be from 0.001 to 5 seconds, got {value!r}")
    return float(value)


def byte_size(value: object) -> int:
    """A size in bytes: 65536, "64KiB", "1MiB"."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB)?\s*", value)
        if m is None:
            raise ValueError(f"{value!r} is not a size: write bytes (65536) or 64KiB, 1MiB")
        value = int(m.group(1)) * {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024}[m.group(2)]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'expected a size such as 65536 or "64KiB", got {describe(value)}')
    if not 480 <= value <= 16 * 1024 * 1024:
        raise ValueError(f"must be from 480 bytes (the least RFC 5424 allows) to 16MiB, got {value}")
    return value


def uid(value: object) -> int:
    """A numeric user id (names are not looked up: the agent may start before NSS is ready)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a numeric uid such as 0, got {describe(value)}")
    if not 0 <= value < 2**32 - 1:
        raise ValueError(f"a uid is from 0 to 4294967294, got {value}")
    return value


def port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {describe(value)}")
    return value


def choice(*allowed: str):
    """A converter accepting one of `allowed` strings."""
    def convert(value: object) -> str:
        text = nonempty_text(value)
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {text!r}")
        return text
    return convert


def nft_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise ValueError(f"expected a hook priority from -1000 to 1000, got {describe(value)}")
    return value


# Each backend's options in [firewall.NAME], with their converters; the backend's constructor
# takes them as keyword arguments (firewall/*.py). Per-jail `ports` and `protocol` are added there.
FIREWALL_OPTIONS = {
    "ipset": {"chain": nonempty_text, "action": choice("drop", "reject")},
    "nftables": {"priority": nft_priority, "action": choice("drop", "reject")},
    "iptables": {"chain": nonempty_text, "action": choice("drop", "reject")},
    "route": {"kind": choice("blackhole", "unreachable", "prohibit")},
    "hostsdeny": {"path": absolute_path, "daemons": nonempty_text},
    "log": {},
}
