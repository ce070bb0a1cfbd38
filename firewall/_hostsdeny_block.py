"""The part of a hosts.deny file that jailwarden owns: finding one jail's marked block in the
file's bytes, reading its entries and their end times back, and writing them in hosts_access(5)
syntax. Pure functions on bytes; the file itself is handled by `firewall.hostsdeny`.

A block looks like this (entries grouped under the time their ban ends, permanent ones last):

    # BEGIN jailwarden sshd
    # Written by jailwarden for jail sshd; edit outside BEGIN/END only.
    # until 1700003600.25 = 2023-11-14 23:13:20 UTC
    sshd: 192.0.2.1
    sshd: 198.51.100.0/255.255.255.0
    # permanent
    sshd: [2001:db8::]/32
    # END jailwarden sshd

The end time is a comment line of its own because libwrap does not strip trailing comments:
`sshd: 192.0.2.1 # ALL` denies everyone (tried with Debian 12's libwrap0 7.6.q-32).
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

Target = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network

JAIL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# Daemon patterns (names, ALL, daemon@host, EXCEPT ...) separated by blanks or commas; no ':' (it
# ends the daemon list), '#' (a comment) or backslash (a line continuation).
DAEMONS = re.compile(r"[A-Za-z0-9_.@*?/\[\]-]+(?:[ \t,]+[A-Za-z0-9_.@*?/\[\]-]+)*")

_FLAG = b" (newline above added by jailwarden)"
_MARKER = re.compile(rb"^[ \t]*#[ \t]*(BEGIN|END)[ \t]+jailwarden[ \t]+(\S+)((?:" + re.escape(_FLAG) + rb")?)[ \t\r]*$",
                     re.MULTILINE)
_UNTIL = re.compile(r"#\s*until\s+(\d+(?:\.\d+)?)(?:\s.*)?")
_PERMANENT = re.compile(r"#\s*permanent(?:\s.*)?")
_ENTRY = re.compile(r"(?P<daemons>[^:#]+?)\s*:\s*(?P<client>\S+)")
_DOTTED = r"\d{1,3}(?:\.\d{1,3}){3}"
# hosts_access(5): `n.n.n.n`, `n.n.n.n/m.m.m.m`, `n.n.n.n/mm`, `[v6]` and `[v6]/len`.
_IPV4 = re.compile(rf"(?P<net>{_DOTTED})(?:/(?P<mask>{_DOTTED}|\d{{1,2}}))?")
_IPV6 = re.compile(r"\[(?P<net>[0-9A-Fa-f:.]+)\](?:/(?P<length>\d{1,3}))?")


class BlockError(ValueError):
    """The file's jailwarden part is not what jailwarden writes; the message names the line."""


@dataclass(frozen=True, slots=True)
class Layout:
    """A file split around one jail's block; `before` and `after` are never changed."""

    before: bytes
    block: bytes | None  # None: the jail has no block in the file
    after: bytes
    line: int  # the BEGIN line's number (1-based), or where a new block would start
    newline_added: bool  # jailwarden ended the last line of `before` when it added the block

    def with_block(self, block: bytes | None) -> bytes:
        """The whole file with the block replaced (None: removed, with the newline it added)."""
        before = self.before
        if block is None:
            if self.newline_added and not self.after and before.endswith(b"\n"):
                before = before[:-1]
            return before + self.after
        return before + block + self.after


def find_block(data: bytes, jail: str) -> Layout:
    """Split `data` around `jail`'s block. A BEGIN without END, an END without BEGIN or a second
    block raises BlockError naming the lines; other jails' blocks are left alone as outside text."""
    name = jail.encode()
    begins, ends = [], []
    for marker in _MARKER.finditer(data):
        if marker[2] == name:
            (begins if marker[1] == b"BEGIN" else ends).append(marker)

    def line(match: re.Match) -> int:
        return data.count(b"\n", 0, match.start()) + 1

    if not begins and not ends:
        newline_added = bool(data) and not data.endswith(b"\n")
        return Layout(data + b"\n" if newline_added else data, None, b"", data.count(b"\n") + 1, newline_added)
    if len(begins) != 1 or len(ends) != 1 or ends[0].start() < begins[0].start():
        found = ", ".join(f"{m[1].decode()} at line {line(m)}" for m in sorted(begins + ends, key=lambda m: m.start()))
        raise BlockError(f"the block of jail {jail} is malformed: expected one '# BEGIN jailwarden {jail}' line "
                         f"followed by one '# END jailwarden {jail}' line, found {found}")
    begin, end = begins[0], ends[0]
    stop = end.end() + 1 if data[end.end():end.end() + 1] == b"\n" else end.end()
    return Layout(data[:begin.start()], data[begin.start():stop], data[stop:], line(begin), bool(begin[3]))


def parse_entries(block: bytes, first_line: int) -> dict[Target, float | None]:
    """The block's bans, `{target: end time (epoch seconds) or None for permanent}`. An entry
    without an `# until` line above it is permanent; a line that is not a comment, blank or an
    entry raises BlockError rather than being dropped at the next write."""
    entries: dict[Target, float | None] = {}
    until: float | None = None
    for number, raw in enumerate(block.split(b"\n"), start=first_line):
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        if text.startswith("#"):
            if timed := _UNTIL.fullmatch(text):
                until = float(timed[1])
            elif _PERMANENT.fullmatch(text):
                until = None
            continue
        entry = _ENTRY.fullmatch(text)
        target = parse_client(entry["client"]) if entry else None
        if target is None:
            raise BlockError(f"line {number} in jailwarden's block is not an entry it writes "
                             f"(DAEMONS: ADDRESS): {text!r}; move it outside the block or delete it")
        entries[target] = until
    return entries


def parse_client(text: str) -> Target | None:
    """One client pattern that names an address or network, as a target; None for anything else."""
    try:
        if v4 := _IPV4.fullmatch(text):
            if v4["mask"] is None:
                return ipaddress.IPv4Address(v4["net"])
            network = ipaddress.IPv4Network(f"{v4['net']}/{_prefix_length(v4['mask'])}", strict=False)
            return network.network_address if network.prefixlen == 32 else network
        if v6 := _IPV6.fullmatch(text):
            if v6["length"] is None:
                return normalise(ipaddress.IPv6Address(v6["net"]))
            return normalise(ipaddress.IPv6Network(f"{v6['net']}/{v6['length']}", strict=False))
    except ValueError:
        return None
    return None


def _prefix_length(mask: str) -> int:
    if "." not in mask:
        return int(mask)
    bits = int(ipaddress.IPv4Address(mask))
    length = bin(bits).count("1")
    if bits != (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF:
        raise ValueError(f"{mask} is not a contiguous netmask")
    return length


def normalise(target: object) -> Target:
    """An address or network in the form the block holds: IPv4-mapped IPv6 as IPv4, a /32 or
    /128 network as its address, no IPv6 scope. Anything else raises ValueError."""
    if isinstance(target, ipaddress.IPv6Address):
        if target.ipv4_mapped is not None:
            return target.ipv4_mapped
        return ipaddress.IPv6Address(int(target)) if target.scope_id else target
    if isinstance(target, ipaddress.IPv6Network):
        mapped = ipaddress.IPv6Network("::ffff:0:0/96")
        if target.prefixlen >= 96 and target.subnet_of(mapped):
            target = ipaddress.IPv4Network((int(target.network_address) & 0xFFFFFFFF, target.prefixlen - 96))
        elif target.prefixlen == 128:
            return ipaddress.IPv6Address(int(target.network_address))
    if isinstance(target, ipaddress.IPv4Network):
        return target.network_address if target.prefixlen == 32 else target
    if isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Network)):
        return target
    raise ValueError(f"{target!r} is not an ipaddress address or network")


def format_client(target: Target) -> str:
    """hosts_access(5) client pattern; IPv4 networks as net/mask, the form every tcp_wrappers
    build understands (`/mm` is a later extension, though Debian's has it)."""
    if isinstance(target, ipaddress.IPv4Network):
        return f"{target.network_address}/{target.netmask}"
    if isinstance(target, ipaddress.IPv6Network):
        return f"[{target.network_address}]/{target.prefixlen}"
    if isinstance(target, ipaddress.IPv6Address):
        return f"[{target}]"
    return str(target)


def render_block(jail: str, daemons: str, entries: dict[Target, float | None], newline_added: bool) -> bytes:
    """The block's bytes for `entries` ({target: end or None}), always ending with a newline so
    that a line an administrator appends with `echo >>` stays a line of its own."""
    lines = [f"# BEGIN jailwarden {jail}{_FLAG.decode() if newline_added else ''}",
             f"# Written by jailwarden for jail {jail}; edit outside BEGIN/END only."]
    current: object = ()  # no group yet
    for target, until in sorted(entries.items(), key=_order):
        if until != current:
            lines.append("# permanent" if until is None else f"# until {_epoch(until)} = "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(until))} UTC")
            current = until
        lines.append(f"{daemons}: {format_client(target)}")
    lines.append(f"# END jailwarden {jail}\n")
    return "\n".join(lines).encode()


def _order(item: tuple[Target, float | None]) -> tuple:
    target, until = item
    network = target if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else None
    address = network.network_address if network else target
    return (until is None, until or 0.0, address.version, int(address), network.prefixlen if network else 129)


def _epoch(until: float) -> str:
    return f"{until:.3f}".rstrip("0").rstrip(".")
