"""Login sessions from utmp: the remote address of each live session (what `who` shows), in
either family or only in ut_host, never a local login, a dead session or loopback."""

from __future__ import annotations

import ipaddress
import socket
import struct

from agent.sessions import USER_PROCESS, Sessions, session_addresses

_RECORD = struct.Struct("hi32s4s32s256shhiii4i20s")
DEAD_PROCESS, LOGIN_PROCESS = 8, 6


def record(kind: int, host: str = "", address: str | None = None, user: str = "admin") -> bytes:
    words = (0, 0, 0, 0)
    if address is not None:
        parsed = ipaddress.ip_address(address)
        raw = socket.inet_pton(socket.AF_INET if parsed.version == 4 else socket.AF_INET6, address).ljust(16, b"\0")
        words = struct.unpack("=4i", raw)
    return _RECORD.pack(kind, 4242, b"pts/1", b"ts/1", user.encode(), host.encode(), 0, 0, 0, 1_796_000_000, 0,
                        *words, b"")


def test_live_remote_sessions_give_their_addresses_and_nothing_else_does() -> None:
    data = b"".join([
        record(USER_PROCESS, "203.0.113.5", "203.0.113.5"),
        record(USER_PROCESS, "2001:db8::5", "2001:db8::5"),
        record(USER_PROCESS, "::ffff:198.51.100.5", "::ffff:198.51.100.5"),  # mapped: as IPv4
        record(USER_PROCESS, "198.51.100.6:0"),  # an X display, no address field
        record(USER_PROCESS, "gw.example.net"),  # a name: not resolved
        record(USER_PROCESS, ""),  # a console login
        record(USER_PROCESS, "127.0.0.1", "127.0.0.1"),
        record(DEAD_PROCESS, "203.0.113.9", "203.0.113.9"),  # logged out
        record(LOGIN_PROCESS, "203.0.113.10", "203.0.113.10"),
        b"\x07" * 100,  # a torn last record is ignored
    ])
    assert session_addresses(data) == {ipaddress.ip_address(text) for text in
                                       ("203.0.113.5", "2001:db8::5", "198.51.100.5", "198.51.100.6")}


def test_sessions_are_read_again_when_utmp_changes_and_a_missing_file_means_none(tmp_path) -> None:
    utmp = tmp_path / "utmp"
    sessions = Sessions(utmp)
    assert sessions.refresh() is False and sessions.addresses == frozenset()
    utmp.write_bytes(record(USER_PROCESS, "203.0.113.5", "203.0.113.5"))
    assert sessions.refresh() is True and sessions.addresses == {ipaddress.ip_address("203.0.113.5")}
    assert sessions.refresh() is False  # unchanged file: not parsed again
    utmp.write_bytes(record(DEAD_PROCESS, "203.0.113.5", "203.0.113.5") + b"")
    assert sessions.refresh() is True and sessions.addresses == frozenset()
    utmp.unlink()
    assert sessions.refresh() is False and sessions.addresses == frozenset()
