"""The syslog receiver's sockets: bound to UDP, TCP and unix datagram addresses, with errors that
name the address and the OS's reason, and a unix socket that is private from the moment it exists;
and what the kernel dropped on the UDP ones because their receive buffer was full.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Collection

from agent.config_values import ListenAddress
from agent.sources import SourceError

_RECEIVE_BUFFER = 4 * 1024 * 1024  # kernel buffer per datagram socket: absorbs bursts while the loop matches
_BACKLOG = 128


def bound_socket(listen: ListenAddress) -> socket.socket:
    """A non-blocking socket bound to `listen` (and listening, for TCP); SourceError if it cannot be."""
    if listen.transport == "unix":
        return _unix_socket(listen)
    family = socket.AF_INET6 if listen.host.version == 6 else socket.AF_INET
    tcp = listen.transport in ("tcp", "relp")
    sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # [::] means IPv6 only; list 0.0.0.0 too
        if tcp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart despite TIME_WAIT connections
        else:
            _enlarge_receive_buffer(sock)
        sock.bind((str(listen.host), listen.port))
        if tcp:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise SourceError(f"cannot listen on {listen}: {error.strerror or error}") from error
    return sock


def _unix_socket(listen: ListenAddress) -> socket.socket:
    path = listen.path
    _remove_stale_socket(listen)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # Created 0600 from the start: a chmod after bind would leave a moment in which anyone could write.
    umask = os.umask(0o177)
    try:
        sock.bind(path)
        _enlarge_receive_buffer(sock)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise SourceError(f"cannot listen on {listen}: {error.strerror or error}") from error
    finally:
        os.umask(umask)
    return sock


def _remove_stale_socket(listen: ListenAddress) -> None:
    """Remove a socket file left by an agent that is gone; refuse one that is alive or not a socket."""
    try:
        if not stat.S_ISSOCK(os.lstat(listen.path).st_mode):
            raise SourceError(f"cannot listen on {listen}: the path exists and is not a socket")
    except FileNotFoundError:
        return
    except OSError as error:
        raise SourceError(f"cannot listen on {listen}: {error.strerror}") from error
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(listen.path)
    except ConnectionRefusedError:
        os.unlink(listen.path)  # nobody receives on it
        return
    except OSError as error:
        raise SourceError(f"cannot listen on {listen}: {error.strerror}") from error
    finally:
        probe.close()
    raise SourceError(f"cannot listen on {listen}: another process is receiving on that socket")


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    # SO_RCVBUFFORCE passes net.core.rmem_max (root only); SO_RCVBUF is capped by it.
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _RECEIVE_BUFFER)
            return
        except OSError:
            continue


def udp_drops(inodes: Collection[int], root: str = "/proc/net") -> int:
    """Datagrams the kernel dropped, since they were made, on the UDP sockets with these inodes
    (`os.fstat(fd).st_ino`): the `drops` column of /proc/net/udp and udp6 (the socket's
    sk_drops), mostly datagrams that arrived while its receive buffer was full. The agent never
    sees those, so only the kernel can count them. Read when asked (a status request, a
    metrics scrape), not per datagram: the table has a line per UDP socket of the namespace."""
    if not inodes:
        return 0
    wanted = {str(inode) for inode in inodes}
    drops = 0
    for name in ("udp", "udp6"):
        try:
            with open(f"{root}/{name}", encoding="ascii") as table:
                next(table, None)  # the header
                for line in table:
                    # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                    columns = line.split()
                    if len(columns) > 12 and columns[9] in wanted:
                        drops += int(columns[12])
        except (OSError, ValueError):
            continue
    return drops
