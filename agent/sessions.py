"""Login sessions: the remote addresses users are logged in from right now, read from utmp (what
`who` shows), so that an admin who mistypes a password in a second terminal is not locked out of
the host while still logged in. Protected like the host's own addresses while the session lasts.

utmp is a file of fixed-size `struct utmp` records (glibc's layout on Linux, 384 bytes: the same
on x86_64 and aarch64); a record of type USER_PROCESS is a session, its `ut_addr_v6` the remote
address (an IPv4 address in the first word alone), else its `ut_host` may name it. sshd, login
and terminal emulators write it. A host without utmp (some containers) has no sessions here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
from pathlib import Path

from agent.addresses import Address, normalise

log = logging.getLogger("jailwarden")

UTMP = Path("/run/utmp")
USER_PROCESS = 7
# type, pid, line, id, user, host, exit (2 shorts), session, tv_sec, tv_usec, addr_v6 (4 words), unused
_RECORD = struct.Struct("hi32s4s32s256shhiii4i20s")
MAX_SIZE = 1 << 20  # bytes read at most: 2,730 records


def session_addresses(data: bytes) -> set[Address]:
    """The remote addresses of the live sessions in utmp contents `data` (loopback and local
    logins left out)."""
    addresses = set()
    for offset in range(0, len(data) - _RECORD.size + 1, _RECORD.size):
        record = _RECORD.unpack_from(data, offset)
        if record[0] != USER_PROCESS:
            continue
        words, host = record[11:15], record[5].split(b"\0", 1)[0].decode("ascii", "replace")
        address = _from_words(words) if any(words) else _from_host(host)
        if address is not None and not (address.is_loopback or address.is_unspecified):
            addresses.add(address)
    return addresses


def _from_words(words: tuple[int, ...]) -> Address:
    raw = struct.pack("=4i", *words)
    return ipaddress.IPv4Address(raw[:4]) if not any(words[1:]) else normalise(ipaddress.IPv6Address(raw))


def _from_host(host: str) -> Address | None:
    # "203.0.113.5", "2001:db8::5", or an X display such as "203.0.113.5:0"; a name is not resolved.
    for text in (host, host.rsplit(":", 1)[0]):
        try:
            return normalise(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


class Sessions:
    """The addresses of `path`'s sessions, read again when the file changes."""

    def __init__(self, path: Path = UTMP) -> None:
        self.path = path
        self.addresses: frozenset[Address] = frozenset()
        self._seen: tuple[int, int, int] | None = None
        self._failed = False

    def refresh(self) -> bool:
        """Read the file if it changed; whether the addresses did."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._seen:
                return False
            with open(self.path, "rb") as stream:
                data = stream.read(MAX_SIZE)
        except FileNotFoundError:
            stamp, data = None, b""
        except OSError as error:
            if not self._failed:
                log.error("cannot read login sessions from %s (their addresses are not protected): %s", self.path,
                          error.strerror or error)
                self._failed = True
            return False
        self._seen, self._failed = stamp, False
        addresses = frozenset(session_addresses(data))
        if addresses == self.addresses:
            return False
        for address in sorted(addresses - self.addresses, key=str):
            log.info("protecting %s from bans: a user is logged in from it", address)
        for address in sorted(self.addresses - addresses, key=str):
            log.info("no longer protecting %s: its last session ended", address)
        self.addresses = addresses
        return True
