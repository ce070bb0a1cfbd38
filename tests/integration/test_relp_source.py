"""The RELP listener's sessions over real sockets: each message acknowledged, and sessions that
end (the client's close, a protocol error) release their connection."""

from __future__ import annotations

import socket

from .conftest import require_root
from .polling import wait_until
from .rsyslog import RunningSource, free_port, syslog_config

OPEN = b"relp_version=0\nrelp_software=test\ncommands=syslog"


def frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data) if data else b"%d %s 0\n" % (
        txnr, command.encode())


def session(port: int, *frames: bytes) -> bytes:
    """Send `frames` on a new connection and return what the listener answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"".join(frames))
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
        return reply


def test_sessions_that_end_release_their_connections_and_messages_are_acknowledged():
    require_root()  # trusted only when the kernel says the peer's socket is root's
    port = free_port()
    with RunningSource(syslog_config(f"relp://127.0.0.1:{port}", max_connections=3)) as receiver:
        for n in range(20):  # more than max_connections, one after the other
            reply = session(port, frame(1, "open", OPEN), frame(2, "syslog", b"<38>1 - h sshd 1 - - line %d" % n),
                            frame(3, "close"))
            assert b"2 rsp 6 200 OK\n" in reply and reply.endswith(b"3 rsp 0\n"), reply
        for _ in range(5):
            assert b"" == session(port, b"x broken\n")  # a protocol error: closed at once
        wait_until(lambda: not receiver.source.draining and receiver.stats()["connections_open"] == 0,
                   "every session released")
        assert receiver.stats()["connections_refused"] == 0
        receiver.wait_for_message("line 19")
        assert receiver.stats()["framing_errors"] == 5
