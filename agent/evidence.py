"""Evidence: the log lines that led to a ban, kept per address for the jails that have actions
(a mail shows them; AbuseIPDB and blocklist.de get them as proof), and the version of a line fit
to leave the host: no user name, no address but the banned one, no host name of ours, no query
string, no e-mail address. Sans-IO: times are passed in.

Memory is bounded: at most LINES lines of at most MAX_LINE characters for each of at most
MAX_ADDRESSES addresses; beyond, the address that failed least recently is forgotten (its ban
then carries only the line that set it off).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.addresses import Address, normalise
from parsers.filter import Failure

LINES = 5  # lines kept per address: the last ones before the ban
MAX_LINE = 1000  # characters of a line kept
MAX_ADDRESSES = 4096
PUBLIC_LINE = 300  # characters of a line sent away

# Named groups of a filter that hold what the client chose or what names a local thing. A URL's
# path stays (it is what a scanner asked for: the evidence), its query string does not.
_PRIVATE_CAPTURES = ("user", "helo", "agent", "jail", "filter")

# Addresses, also glued to words ("MGLNDD_192.0.2.1_80", a scanner's probe naming its target).
_ADDRESS = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?!\d|\.\d)"
                      r"|(?<![0-9A-Fa-f.:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}"
                      r"(?::\d{1,3}(?:\.\d{1,3}){3})?(?![0-9A-Fa-f]|:[0-9A-Fa-f]|\.\d)")
_EMAIL = re.compile(r"[^\s<>()\[\]\"',;:=@]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
# Where services write the user's name: "user bob", "user: bob", "user=<bob>", "for bob from".
_USER = re.compile(r"(?i)((?<![\w-])(?:(?:invalid |illegal |unknown )?user:? |(?:r?user|login|account|username|"
                   r"sasl_username|logname|authid)(?:=|: )))(<[^<>]*>|\"[^\"]*\"|'[^']*'|[^\s,;)\]]+)")
_FOR_FROM = re.compile(r"(?i)(\bfor )(?!invalid |illegal )(\S+)(?= from )")
_QUERY = re.compile(r"\?[^\s\"']*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True, frozen=True)
class Line:
    """One matched line: its time, its text and the filter's named groups."""

    time: float
    message: str
    captures: Mapping[str, str]

    def text(self) -> str:
        return f"{_iso(self.time)} {_CONTROL.sub(' ', self.message)[:MAX_LINE]}"


class Evidence:
    """The last few matched lines of each address, per jail."""

    def __init__(self, lines: int = LINES, max_addresses: int = MAX_ADDRESSES) -> None:
        self.lines, self.max_addresses = lines, max_addresses
        self._kept: dict[tuple[str, Address], list[Line]] = {}

    def add(self, jail: str, failure: Failure) -> None:
        key = (jail, normalise(failure.address))
        kept = self._kept.pop(key, None) or []  # re-inserted: the dict's order is the order of last failure
        kept.append(Line(failure.time, failure.message[:MAX_LINE], failure.captures))
        del kept[:-self.lines]
        self._kept[key] = kept
        if len(self._kept) > self.max_addresses:
            del self._kept[next(iter(self._kept))]

    def take(self, jail: str, failure: Failure) -> tuple[Line, ...]:
        """The address's lines up to and with `failure` (the one that set off the ban); forgotten here."""
        kept = self._kept.pop((jail, normalise(failure.address)), [])
        kept.append(Line(failure.time, failure.message[:MAX_LINE], failure.captures))
        return tuple(kept[-self.lines:])

    def forget(self, jail: str, address: Address) -> None:
        self._kept.pop((jail, normalise(address)), None)

    def __len__(self) -> int:
        return len(self._kept)


def public(line: Line, address: Address, hostnames: Iterable[str] = ()) -> str:
    """`line` as it may leave the host in a report about `address`: its time, and its text with
    every other address, the user name and other client-chosen words the filter captured, words
    that follow "user" and the like, e-mail addresses, query strings and this host's names
    replaced by placeholders."""
    text = _USER.sub(lambda m: m.group(1) + "<user>", line.message)
    for name in _PRIVATE_CAPTURES:
        value = line.captures.get(name)
        if value and value.strip() and value != str(address):
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", f"<{name}>", text)
    text = _EMAIL.sub("<email>", text)
    text = _FOR_FROM.sub(lambda m: m.group(1) + "<user>", text)
    text = _QUERY.sub("?<query>", text)
    for hostname in sorted(hostnames, key=len, reverse=True):  # the full name before its first label
        if hostname and hostname.lower() != "localhost":
            text = re.sub(rf"(?<![\w-]){re.escape(hostname)}(?![\w-])", "<host>", text, flags=re.IGNORECASE)
    text = _ADDRESS.sub(lambda m: _keep_if(m.group(0), address), text)
    return f"{_iso(line.time)} {_CONTROL.sub(' ', text)}"[:PUBLIC_LINE]


def _keep_if(text: str, address: Address) -> str:
    try:
        found = normalise(ipaddress.ip_address(text))
    except ValueError:
        return text  # a time of day, a MAC address, 999.1.1.1: not an address
    if found.version == 6 and found.version != address.version and int(found) == int(address):
        return text  # ::192.0.2.1, the IPv4-compatible form some services write
    return text if found == address else "<address>"


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")
