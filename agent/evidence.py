"""Evidence: the log lines that led to a ban, kept per address for the jails that have actions
(a mail shows them; AbuseIPDB and blocklist.de get them as proof), and the version of a line fit
to leave the host: no user name, no address but the banned one, no host name of ours, no query
string, no e-mail address. Sans-IO: times are passed in.

Memory is bounded: at most LINES lines of at most MAX_LINE characters (and the captured parts of
them) for each of at most MAX_ADDRESSES addresses (some 25 MB at worst); beyond, the address that
failed least recently is forgotten (its ban then carries only the line that set it off).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.addresses import Address, normalise
from parsers.filter import Failure

LINES = 5  # lines kept per address: the last ones before the ban
MAX_LINE = 500  # characters of a line kept as logged
MAX_ADDRESSES = 4096
PUBLIC_LINE = 300  # characters of a line sent away
REPORTED = "report"  # the filter name of a failure an application reported: its text is its own

# Named groups of a filter that hold what the client chose or what names a local thing. A URL's
# path stays (it is what a scanner asked for: the evidence), its query string does not.
_PRIVATE_CAPTURES = ("user", "helo", "agent", "jail", "filter")

# Addresses, also glued to words or digits ("MGLNDD_192.0.2.1_80", BIND's "\032192.0.2.1").
_ADDRESS = re.compile(r"(?<!\.)\d{1,3}(?:\.\d{1,3}){3}(?!\d|\.\d)"
                      r"|(?<![0-9A-Fa-f.:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}"
                      r"(?::\d{1,3}(?:\.\d{1,3}){3})?(?![0-9A-Fa-f]|\.\d)")
_EMAIL = re.compile(r"[^\s<>()\[\]\"',;:=@]+@[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*")
# Where services write the user's name: "user bob", "user: bob", "user=<bob>", "for bob from".
_USER = re.compile(r"(?i)((?<![\w-])(?:(?:invalid |illegal |unknown )?user:? |(?:r?user|login|account|username|"
                   r"sasl_username|logname|authid)(?:=|: )))(<[^<>]*>|\"[^\"]*\"|'[^']*'|[^\s,;)\]]+)")
_FOR_FROM = re.compile(r"(?i)(\bfor )(?!invalid |illegal )(\S+)(?= from )")
_ACCESS_LOG_USER = re.compile(r"^(\S+ \S+ )(?!-(?= ))([^\s\[]+)(?= \[)")  # common log format's %u
_QUERY = re.compile(r"\?[^\s\"']*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"(<\w+>)")
_TAIL = re.compile(r"[\w.:@%<>-]*$")  # what a cut may have left of an address, a name, a placeholder


@dataclass(slots=True, frozen=True)
class Line:
    """One matched line: its time, its text as logged (cut to MAX_LINE) and as it may leave the
    host (see public())."""

    time: float
    message: str
    public: str

    @classmethod
    def of(cls, failure: Failure, hostnames: Iterable[str] = ()) -> Line:
        kept = _trimmed(failure)  # the same text for both: the mail shows what the report was made of
        return cls(kept.time, kept.message, public(kept, hostnames))

    def text(self) -> str:
        return f"{_iso(self.time)} {_CONTROL.sub(' ', self.message)}"


class Evidence:
    """The last few matched lines of each address, per jail; `hostnames` are this host's names,
    kept out of the public version of each line. A line is kept as logged (cut to MAX_LINE, with
    the filter's captures that public() replaces) and made public only when a ban takes it: most
    failures never lead to a ban, and redacting costs some 30 us a line."""

    def __init__(self, hostnames: Iterable[str] = (), lines: int = LINES, max_addresses: int = MAX_ADDRESSES) -> None:
        self.hostnames = tuple(hostnames)
        self.lines, self.max_addresses = lines, max_addresses
        self._kept: dict[tuple[str, Address], list[Failure]] = {}

    def add(self, jail: str, failure: Failure) -> None:
        key = (jail, normalise(failure.address))
        kept = self._kept.pop(key, None) or []  # re-inserted: the dict's order is the order of last failure
        kept.append(_trimmed(failure))
        del kept[:-self.lines]
        self._kept[key] = kept
        if len(self._kept) > self.max_addresses:
            del self._kept[next(iter(self._kept))]

    def take(self, jail: str, failure: Failure, findtime: float) -> tuple[Line, ...]:
        """The address's lines of the last `findtime` up to and with `failure` (the one that set
        off the ban); forgotten here."""
        kept = [line for line in self._kept.pop((jail, normalise(failure.address)), [])
                if line.time > failure.time - findtime]
        kept.append(_trimmed(failure))
        return tuple(Line.of(line, self.hostnames) for line in kept[-self.lines:])

    def forget(self, jail: str | None, address: Address | None = None) -> None:
        """Drop the lines of `address` (None: of every address) in `jail` (None: in every jail)."""
        for key in [key for key in self._kept if jail in (None, key[0]) and address in (None, key[1])]:
            del self._kept[key]

    def __len__(self) -> int:
        return len(self._kept)


def public(failure: Failure, hostnames: Iterable[str] = ()) -> str:
    """The failure's line as it may leave the host in a report about its address: its time, and
    its text with every other address, e-mail addresses, user names (captured by the filter, or
    written after "user", "login=", "for ... from" and the like), other client-chosen words the
    filter captured, query strings and this host's names replaced by placeholders. An
    application's report is its own text, which nothing here can vouch for: it is left out."""
    if failure.filter == REPORTED:
        return f"{_iso(failure.time)} a failure reported by an application"
    address = normalise(failure.address)
    # In this order: a user name or HELO chosen to look like part of an address or an e-mail
    # address must not break their patterns before they are replaced.
    text = _CONTROL.sub(" ", failure.message)
    text = _ADDRESS.sub(lambda m: _keep_if(m.group(0), address), text)
    text = _EMAIL.sub("<email>", text)
    text = _USER.sub(lambda m: m.group(1) + "<user>", text)
    text = _FOR_FROM.sub(lambda m: m.group(1) + "<user>", text)
    text = _ACCESS_LOG_USER.sub(lambda m: m.group(1) + "<user>", text)
    text = _QUERY.sub("?<query>", text)
    words = [(rf"(?<!\w){re.escape(value)}(?!\w)", f"<{name}>") for name in _PRIVATE_CAPTURES
             if (value := failure.captures.get(name)) and value.strip() and value != str(address)]
    words += [(rf"(?<![\w./-]){re.escape(name)}(?![\w/-])", "<host>")
              for name in sorted(hostnames, key=len, reverse=True)  # the full name before its first label
              if name and name.lower() != "localhost"]
    for pattern, placeholder in words:
        # Never inside a placeholder: a user named "user" must not make "<user>" into "<<user>>".
        text = "".join(part if _PLACEHOLDER.fullmatch(part) else re.sub(pattern, placeholder, part, flags=re.I)
                       for part in _PLACEHOLDER.split(text))
    return _cut(f"{_iso(failure.time)} {text}", PUBLIC_LINE)


def _trimmed(failure: Failure) -> Failure:
    """The failure as kept: its message cut to MAX_LINE, and only the captures public() replaces.
    Memory stays that of the message: captures are parts of it, and one the cut would split is
    cut off whole (the message ends where it starts), so no part of it is left unreplaced."""
    captures = {name: value for name in _PRIVATE_CAPTURES if (value := failure.captures.get(name))}
    message = failure.message
    if len(message) > MAX_LINE:
        limit = MAX_LINE
        for value in captures.values():
            start = message.rfind(value, 0, limit + len(value) - 1)  # the last one starting before the cut
            if start >= 0 and start + len(value) > limit:
                limit = start
        message = _cut(message, limit)
        captures = {name: value for name, value in captures.items() if value in message}
    return Failure(failure.address, failure.filter, failure.time, message, captures)


def _keep_if(text: str, address: Address) -> str:
    try:
        found = normalise(ipaddress.ip_address(text))
    except ValueError:
        # 010.000.000.005 (leading zeros) is an address to many parsers; a time of day or a MAC
        # address is not.
        return "<address>" if "." in text and ":" not in text else text
    if found.version == 6 and found.version != address.version and int(found) == int(address):
        return text  # ::192.0.2.1, the IPv4-compatible form some services write
    return text if found == address else "<address>"


def _cut(text: str, limit: int) -> str:
    """`text` within `limit` characters; when cut, without the word the cut fell in (it may be
    part of an address or a name the rest of it would have given away)."""
    if len(text) <= limit:
        return text
    return _TAIL.sub("", text[:limit - 1]) + "…"


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")
