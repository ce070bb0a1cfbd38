"""What the kernel drops on a full UDP receive buffer, as `udp_drops` reads it from /proc/net/udp{,6}:
a real socket on loopback with the smallest buffer the kernel allows, sent more than it holds
while nothing reads it. Needs no root: the socket is this process's own."""

from __future__ import annotations

import os
import socket

import pytest

from agent.sources.syslog_sockets import udp_drops

BURST = 200
DATAGRAM = b"<38>Nov 24 15:09:08 web1 sshd[4711]: " + b"x" * 900


def receiver(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # raised to the kernel's minimum: a few datagrams
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def queued(sock: socket.socket) -> int:
    """Read what the buffer held; how many datagrams that was."""
    count = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["udp", "udp6"])
def test_datagrams_beyond_a_full_receive_buffer_are_counted_by_the_socket_inode(family, host):
    try:
        sock = receiver(family, host)
    except OSError as error:
        pytest.skip(f"no {host} here: {error}")
    with sock, socket.socket(family, socket.SOCK_DGRAM) as sender:
        inode = os.fstat(sock.fileno()).st_ino
        assert udp_drops([inode]) == 0
        for _ in range(BURST):  # loopback queues each datagram on the receiver within sendto
            sender.sendto(DATAGRAM, sock.getsockname()[:2])
        dropped = udp_drops([inode])
        held = queued(sock)
        assert dropped > 0 and held > 0
        assert dropped + held == BURST  # every datagram is either read or counted, none unaccounted


def test_other_sockets_drops_are_not_counted_and_no_socket_counts_nothing():
    with receiver(socket.AF_INET, "127.0.0.1") as full, receiver(socket.AF_INET, "127.0.0.1") as quiet, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(BURST):
            sender.sendto(DATAGRAM, full.getsockname())
        assert udp_drops([os.fstat(full.fileno()).st_ino]) > 0
        assert udp_drops([os.fstat(quiet.fileno()).st_ino]) == 0
    assert udp_drops([]) == 0


def test_a_missing_proc_table_counts_nothing(tmp_path):
    assert udp_drops([1234], root=str(tmp_path)) == 0
