"""Fail2Ban values as jailwarden needs them: time spans, `name[key=value, ...]` action and
filter references, port lists, ignoreip entries, and incremental bantime.

Each converter raises ValueError with a reason fit for the user; none evaluates or runs anything.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from dataclasses import dataclass, field

from agent.addresses import Network, parse_network

_DAY = 86400.0
_YEAR = 365.25 * _DAY  # Fail2Ban's year and month count leap years in
# Each unit and the spellings Fail2Ban accepts for it, plus the common plurals it does not.
_UNITS = {
    "s": (1.0, "s ss se sec secs second seconds"),
    "m": (60.0, "m mm mi min mins minute minutes"),
    "h": (3600.0, "h hh ho hou hour hours hr hrs"),
    "d": (_DAY, "d dd da day days"),
    "w": (7 * _DAY, "w ww we wee week weeks"),
    "mo": (_YEAR / 12, "mo mon month months"),
    "y": (_YEAR, "y yy ye yea year years"),
}
_UNIT_SECONDS = {spelling: size for size, spellings in _UNITS.values() for spelling in spellings.split()}
_TERM = re.compile(r"\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)


def seconds(text: str) -> float:
    """Seconds from a Fail2Ban time span: "600", "10m", "1h30m", "1d 12h", "1hour", "5 mins",
    "1year-6mo" (terms add up; a sign subtracts). A negative result is returned as it is."""
    total, position, text = 0.0, 0, text.strip()
    if not text:
        raise ValueError("empty: expected a time such as 600, 10m or 1h")
    while position < len(text):
        term = _TERM.match(text, position)
        unit = term[3].lower() if term else ""
        if term is None or unit not in _UNIT_SECONDS and unit != "":
            raise ValueError(f"{text!r} is not a time: write seconds (600) or numbers with units (10m, 1h, 2d, 1w)")
        total += (-1 if term[1] == "-" else 1) * float(term[2]) * _UNIT_SECONDS.get(unit, 1.0)
        position = term.end()
    return total


@dataclass(slots=True, frozen=True)
class Reference:
    """One `name[key=value, ...]` entry of a Fail2Ban `filter` or `action` value."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """For a comment: the name and options, secret-looking values left out, on one line."""
        shown = [f"{key}={'...' if _SECRET.search(key) else value}" for key, value in self.options.items()]
        text = f"{self.name}[{', '.join(shown)}]" if shown else self.name
        text = " ".join(text.split())
        return text if len(text) <= 120 else text[:117] + "..."


_SECRET = re.compile(r"key|token|pass|secret|auth", re.IGNORECASE)
_NAME = re.compile(r"[^\s\[\]]+")
_OPTION = re.compile(r"[\s,]*([\w.-]+)\s*=\s*")
_CLOSING = re.compile(r"[\s,]*\]")
_BARE_VALUE = re.compile(r"[^,\]]*")


def references(text: str) -> list[Reference]:
    """The entries of an `action` (or `filter`) value: whitespace- or newline-separated names,
    each with optional `[key=value, ...]` groups ("..." or '...' quote commas and brackets)."""
    entries, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return entries
        name = _NAME.match(text, position)
        if name is None:
            raise ValueError(f"expected a name at {text[position:position + 25]!r}")
        options: dict[str, str] = {}
        position = name.end()
        while (after := len(text) - len(text[position:].lstrip())) < len(text) and text[after] == "[":
            position = _options(text, after + 1, options)
        entries.append(Reference(name[0], options))


def _options(text: str, position: int, options: dict[str, str]) -> int:
    """Read `key=value, ...]` from `position` into `options`; returns the index after `]`."""
    while True:
        closing = _CLOSING.match(text, position)
        if closing:
            return closing.end()
        option = _OPTION.match(text, position)
        if option is None:
            raise ValueError(f"expected key=value at {text[position:position + 25]!r}")
        position = option.end()
        quote = text[position:position + 1]
        if quote in ('"', "'"):
            end = text.find(quote, position + 1)
            if end < 0:
                raise ValueError(f"unterminated {quote} in {text[option.start():option.start() + 25]!r}")
            value, position = text[position + 1:end], end + 1
        else:
            end = _BARE_VALUE.match(text, position).end()
            value, position = text[position:end], end
        options[option[1]] = value.strip()


def split_words(text: str) -> list[str]:
    """Fail2Ban's list splitting: commas, spaces and newlines separate items."""
    return [word for word in re.split(r"[\s,]+", text) if word]


# Used where this host's services database lacks a name (a minimal container).
_SERVICES = {"ssh": 22, "http": 80, "https": 443, "smtp": 25, "submission": 587, "submissions": 465,
             "imap": 143, "imap2": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "ftp": 21,
             "ftp-data": 20, "ftps": 990, "ftps-data": 989, "domain": 53, "ldap": 389, "ldaps": 636,
             "sieve": 4190, "ssmtp": 465, "smtps": 465, "socks": 1080}
MAX_RANGE = 100  # a wider range is left as "all ports" rather than listed


def ports(text: str, protocol: str) -> tuple[int, ...]:
    """Ports from a Fail2Ban `port` value ("ssh", "http,https", "8000:8010"); () means every
    port. Names are looked up in this host's services database."""
    found: dict[int, None] = {}
    for word in split_words(text):
        bounds = _RANGE.fullmatch(word)
        if bounds is None:
            found[_port(word, protocol)] = None
            continue
        first, last = _port(bounds[1] or bounds[3] or "0", protocol), _port(bounds[2] or bounds[4] or "65535", protocol)
        if first <= 1 and last == 65535:
            return ()
        if not 0 < last - first + 1 <= MAX_RANGE:
            raise ValueError(f"the range {word} is empty or wider than {MAX_RANGE} ports")
        found.update(dict.fromkeys(range(max(first, 1), last + 1)))
    return tuple(found)


_RANGE = re.compile(r"(\d*):(\d*)|(\d+)-(\d+)")


def _port(word: str, protocol: str) -> int:
    if word.isdigit():
        number = int(word)
        if not 0 <= number <= 65535:
            raise ValueError(f"port {word} is not from 0 to 65535")
        return number
    try:
        return socket.getservbyname(word, protocol if protocol in ("tcp", "udp") else "tcp")
    except OSError:
        if word.lower() in _SERVICES:
            return _SERVICES[word.lower()]
        raise ValueError(f"{word!r} is neither a port number nor a service name known on this host") from None


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.*[A-Za-z]){_LABEL}(?:\.{_LABEL})*\.?")


def ignore_entry(word: str) -> Network:
    """A network from one ignoreip entry. Fail2Ban reads "127.0.0.1/8" as the network it lies in,
    and accepts dotted netmasks; a host name raises ValueError starting with "host name"."""
    if word.lower() == "localhost":
        return parse_network("127.0.0.0/8")
    if _HOST_NAME.fullmatch(word):
        raise ValueError(f"host name {word!r}: jailwarden does not resolve names (add its addresses instead)")
    try:
        return parse_network(str(ipaddress.ip_network(word, strict=False)))
    except ValueError:
        raise ValueError(f"{word!r} is not an address, a network or a host name") from None


# Fail2Ban's documented formulas, spaces removed: the default one, and the "more aggressive" one.
_DOUBLING = "ban.Time*(1<<(ban.Countifban.Count<20else20))*banFactor"
_EXPONENTIAL = "ban.Time*math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)"


@dataclass(slots=True, frozen=True)
class Increment:
    """jailwarden's `bantime_increment` for Fail2Ban's bantime.* settings; `notes` say what
    differs (each one is also a warning)."""

    factor: float
    max: float  # math.inf: no cap
    notes: tuple[str, ...] = ()
    capped_by_formula: bool = False  # max is Fail2Ban's 2**20 limit, not a maxtime


def increment(bantime: float, factor_text: str | None, formula: str | None, multipliers: str | None,
              maxtime: float | None) -> Increment:
    """Fail2Ban's n-th ban (n >= 2) lasts bantime * factor * 2**(n-1) (default formula, at most
    2**20), bantime * factor * multipliers[n-1] (the last one repeating), or the formula's value,
    capped at maxtime; jailwarden's lasts bantime * f**(n-1), capped at max."""
    notes = []
    k = _factor(factor_text) if factor_text else 1.0
    formula_key = "".join((formula or "").split())
    try:
        steps = [int(word) for word in split_words(multipliers or "")]
    except ValueError:
        raise ValueError(f"bantime.multipliers {multipliers!r}: expected whole numbers") from None
    capped = False
    if steps:
        scaled = [k * step for step in steps[1:]] or [k * steps[0]]
        f, top = max(scaled[0], 1.0), scaled[-1]
        if any(not math.isclose(min(f ** i, top), s, rel_tol=1e-6) for i, s in enumerate(scaled, 1)):
            f = max(top ** (1 / len(scaled)), 1.0)
            notes.append(f"bantime.multipliers {' '.join(map(str, steps))} is not a geometric series: "
                         f"written as factor {_number(f)}, reaching the same longest ban after as many bans")
        cap = bantime * max(top, 1.0)
    elif formula_key != _EXPONENTIAL:
        if formula_key not in ("", _DOUBLING):
            notes.append(f"bantime.formula {' '.join(formula.split())!r} is not converted (jailwarden evaluates "
                         "no expressions): written as Fail2Ban's default doubling")
        if k != 1:
            notes.append(f"bantime.factor {factor_text.strip()}: Fail2Ban's n-th ban lasts {_number(k)} x bantime x "
                         "2^(n-1); jailwarden has no such multiplier: written as bantime x 2^(n-1)")
        f, cap, capped = 2.0, bantime * max(k, 1.0) * 2**20, True
    else:
        f, cap = max(math.exp(k), 1.0), math.inf
    if maxtime is not None and maxtime < cap:
        cap, capped = maxtime, False
    if cap < bantime:
        notes.append(f"bantime.maxtime ({maxtime:g}s) is shorter than bantime: jailwarden's max cannot be, "
                     "written as bantime")
        cap = bantime
    return Increment(float(_number(f)), cap, tuple(notes), capped)


def _factor(text: str) -> float:
    """A number, or a number divided by a number ("2.0 / 2.885385", as Fail2Ban's examples write)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:/\s*(\d+(?:\.\d*)?)\s*)?", text)
    if found is None or (found[2] is not None and float(found[2]) == 0):
        raise ValueError(f"{text!r} is not a number (or a number / a number)")
    return float(found[1]) / (float(found[2]) if found[2] else 1.0)


def _number(value: float) -> str:
    return f"{value:.6g}"
