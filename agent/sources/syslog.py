"""The syslog receiver: RFC 3164 and RFC 5424 messages over UDP, TCP (RFC 6587 framing) and a
local unix datagram socket, turned into `LogEvent`s.

Trust. Syslog cannot prove which program wrote a line the way the journal's underscore fields
(`_EXE`, `_UID`, set by journald from the kernel) can: the tag "sshd" is whatever the writer
put there, and any user of the host that logged the line can choose it. A line from a sender
on the allow list is marked trusted (`trust`, on by default) because that sender is the
administrator's own forwarder, which is the best syslog can offer; on hosts that have a
journal, the journal source is the stronger path. A sender on loopback or on one of the
host's own addresses is some local process, and any local user may send there: its messages
are trusted only when the kernel says its socket belongs to a uid in `trusted_uids` (root by
default; see syslog_peers). The unix socket is created 0600, so only processes running as the
agent's user (root) can write to it; it is trusted the same way.

Bounds. Datagrams and connections from outside `allow` are dropped before a byte is parsed.
A datagram longer than `max_message` is truncated; a TCP frame longer is dropped. At most
`max_connections` TCP connections are open; one that completes no message in `idle_timeout`
is closed. Parsed messages wait in a queue of at most `queue_size` events (and
`_QUEUE_BYTES` of text); beyond, new messages are dropped and counted. The queue has two
lanes, handed to the sink in turn. TCP, RELP and the unix socket share the held lane: their
reading pauses while it holds `_TCP_PAUSE_AT` events (or a quarter of the bytes) and resumes
at half that, so their senders are slowed rather than lost (a unix sender waits in the
kernel). UDP has no such brake: it fills the lossy lane, which may take only what the held
lane does not need before it pauses, so a UDP flood loses UDP messages but never the room of
the other senders. Everything dropped is counted in `stats()` and logged, at most a line per
sender (or for the queue) a minute; so are the datagrams the kernel dropped because a UDP
socket's receive buffer was full (read from /proc/net/udp{,6}).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque

from agent.config import SyslogConfig
from agent.config_values import ListenAddress
from agent.events import LogEvent
from agent.host import own_addresses
from agent.sources import Sink, SourceError
from agent.sources.syslog_limits import ProblemLog, SenderCheck
from agent.sources.syslog_peers import LocalSenders, peer_address
from agent.sources.syslog_sockets import bound_socket, udp_drops
from agent.sources.syslog_relp import DRAIN_TIMEOUT, RelpConnection
from agent.sources.syslog_tcp import SyslogConnection
from parsers.framing import FramingError
from parsers.syslog import SyslogError, parse_message

_LOG = logging.getLogger("jailwarden.syslog")

_BATCH = 256  # events handed to the sink before the loop gets a turn
_DATAGRAMS_PER_WAKEUP = 256  # datagrams read from one socket before the loop gets a turn
_QUEUE_BYTES = 64 * 1024 * 1024  # message text queued at most, whatever queue_size allows
_TCP_READ_SIZE = 64 * 1024  # bytes read from a TCP connection at once: at most ~20k tiny frames to parse
_TCP_PAUSE_AT = 10_000  # queued events at which TCP reading pauses (resuming at half)
_FLUSH_INTERVAL = 10.0  # how often held-back problem lines are summed up
_COUNTERS = (
    "received", "delivered", "malformed", "truncated", "oversize", "framing_errors", "dropped_not_allowed",
    "dropped_queue_full", "connections_accepted", "connections_refused", "connections_timed_out", "tcp_paused",
    "errors",
)  # fmt: skip
_NUMBERS = tuple(str(number) for number in range(24))  # facility and severity as text, made once


class SyslogSource:
    """Receives syslog on the configured addresses and hands each message to `sink` as a LogEvent.

    `stats()` counts: received (messages from allowed senders), delivered (to the sink),
    malformed (unparsable), truncated (UDP, over max_message), oversize (TCP frames over
    max_message, dropped), framing_errors (other TCP framing faults, such as a stream ending
    inside a frame), dropped_not_allowed (datagrams and connections), dropped_queue_full,
    connections_accepted / _refused (over max_connections) / _timed_out, tcp_paused (times
    TCP and unix-socket reading paused for the queue to drain), errors (internal); and, as
    they are now, queued, connections_open and dropped_kernel (datagrams the kernel dropped on
    the UDP sockets, their receive buffer full: never received, so not in `received`).
    """

    name = "syslog"

    def __init__(self, config: SyslogConfig, sink: Sink) -> None:
        self.config = config
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.check_sender = SenderCheck(config.allow)
        self.problems = ProblemLog(_LOG)
        self.connections: set[SyslogConnection] = set()
        self.draining: set[RelpConnection] = set()  # closed by us, waiting for the client's end
        self.paused = False  # TCP and unix-socket reading paused while the held lane drains
        self._sink = sink
        self._held: deque[LogEvent] = deque()  # TCP, RELP, unix: read only while there is room
        self._lossy: deque[LogEvent] = deque()  # UDP: its senders cannot be slowed down
        self._held_bytes = self._lossy_bytes = 0  # message text in each lane
        self._queue_size, self._trust = config.queue_size, config.trust  # read for every message
        self.local_senders = LocalSenders((), config.trusted_uids)
        # Held reading pauses well before the queue is full: the frames of one read (up to
        # 256 KiB) must still fit, and a short queue is enough to keep the sink busy.
        self._high_water = max(1, min(config.queue_size * 3 // 4, _TCP_PAUSE_AT))
        self._low_water = self._high_water // 2
        # UDP may fill only what the held lane does not take before it pauses.
        self._lossy_size = max(1, config.queue_size - self._high_water)
        self._wakeup = asyncio.Event()
        self._buffer = bytearray(config.max_message)
        self.read_buffer = memoryview(bytearray(_TCP_READ_SIZE))  # shared by the TCP connections
        self._datagram_sockets: list[socket.socket] = []
        self._unix_readers: list[tuple[socket.socket, ListenAddress]] = []  # paused with the held lane
        self._udp_inodes: list[int] = []  # of the UDP sockets, to find their drops in /proc/net/udp{,6}
        self._dropped_kernel = 0  # by UDP sockets already closed
        self._unix_files: list[tuple[str, int]] = []  # (path, inode) of the sockets we made
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Listen on every configured address that can be bound; one that cannot (port in use,
        address not on this host) is logged with the OS's reason and left out, so that a taken
        port costs that listener only. Raises SourceError, naming each address and reason, when
        none can be bound."""
        loop = asyncio.get_running_loop()
        try:
            # In a thread: pyroute2 0.9 runs an event loop of its own, which cannot nest in ours.
            self.local_senders.own = frozenset(await asyncio.to_thread(own_addresses))
        except OSError as error:  # loopback is still known as local
            _LOG.error("syslog: cannot list this host's addresses, so a local process sending from one of them "
                       "would count as remote: %s", error)
        listening, failures = [], []
        try:
            for listen in self.config.listen:
                try:
                    await self._listen(loop, listen)
                    listening.append(str(listen))
                except SourceError as error:
                    failures.append(str(error))
        except BaseException:
            await self._close_inputs()
            raise
        if not listening:
            await self._close_inputs()
            raise SourceError("; ".join(failures))
        for failure in failures:
            _LOG.error("syslog: %s; listening on the other addresses", failure)
        self._tasks = [loop.create_task(self._deliver(), name="syslog delivery"),
                       loop.create_task(self._flush_problems(), name="syslog problem log")]
        _LOG.info("syslog: listening on %s", ", ".join(listening))

    async def _listen(self, loop: asyncio.AbstractEventLoop, listen: ListenAddress) -> None:
        sock = bound_socket(listen)
        if listen.transport in ("tcp", "relp"):
            connection = RelpConnection if listen.transport == "relp" else SyslogConnection
            try:
                self._servers.append(await loop.create_server(
                    lambda: connection(self, listen), sock=sock))
            except BaseException:
                sock.close()
                raise
            return
        self._datagram_sockets.append(sock)
        if listen.transport == "unix":
            self._unix_files.append((listen.path, os.stat(listen.path).st_ino))
            self._unix_readers.append((sock, listen))
        else:
            self._udp_inodes.append(os.fstat(sock.fileno()).st_ino)
        loop.add_reader(sock.fileno(), self._read_datagrams, sock, listen)

    async def stop(self) -> None:
        """Stop receiving, hand what was already received to the sink, and close everything."""
        await self._close_inputs()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._held or self._lossy:
            self._deliver_batch()
            await asyncio.sleep(0)
        self.problems.flush(everything=True)

    def stats(self) -> dict[str, int]:
        return self.counts | {"queued": len(self._held) + len(self._lossy), "connections_open": len(self.connections),
                              "dropped_kernel": self._dropped_kernel + udp_drops(self._udp_inodes)}

    def is_trusted(self, transport: str, peer: tuple | None, sockname: tuple | None = None) -> bool:
        """Are messages from this allowed UDP/TCP peer trusted? Remote forwarders on the allow
        list are, with `trust`; local processes only when their socket's owner is trusted."""
        if not self._trust:
            return False
        sender = peer_address(peer) if peer else None
        if sender is None:
            return False
        if not self.local_senders.is_local(sender[0]):
            return True
        listener = peer_address(sockname) if sockname else None
        return self.local_senders.trusted(transport, sender, listener)

    def accept(self, data: bytes, address: str | None, sender: str | None, now: float, trusted: bool,
               lossy: bool = False) -> None:
        """One message from an allowed sender: parsed, made an event and queued, or counted.

        `address` is the sender's for `_SOURCE_ADDRESS` (None on the unix socket); `sender`
        names it in the log, None for "sender ADDRESS". `lossy`: it came by UDP.
        """
        counts = self.counts
        counts["received"] += 1
        if lossy:
            if len(self._lossy) >= self._lossy_size or self._lossy_bytes >= _QUEUE_BYTES // 2:
                self._drop_queue_full()
                return
        elif (len(self._held) + len(self._lossy) >= self._queue_size
              or self._held_bytes + self._lossy_bytes >= _QUEUE_BYTES):
            self._drop_queue_full()
            return
        message = parse_message(data, now)
        if type(message) is SyslogError:
            counts["malformed"] += 1
            self.problems.report(sender or f"sender {address}",
                                 f"malformed message: {message.reason}: '{message.excerpt}'")
            return
        _, text, facility, severity, _, hostname, app_name, procid, _, _ = message
        fields = {}
        if app_name is not None:
            fields["SYSLOG_IDENTIFIER"] = app_name
        if procid is not None:
            fields["SYSLOG_PID"] = procid
        if facility is not None:
            fields["SYSLOG_FACILITY"] = _NUMBERS[facility]
            fields["PRIORITY"] = _NUMBERS[severity]
        if hostname is not None:
            fields["_HOSTNAME"] = hostname
        if address is not None:
            fields["_SOURCE_ADDRESS"] = address
        self._wakeup.set()
        if lossy:
            self._lossy.append(LogEvent(now, "syslog", text, fields, trusted))
            self._lossy_bytes += len(text)
        else:
            self._held.append(LogEvent(now, "syslog", text, fields, trusted))
            self._held_bytes += len(text)

    def accept_frames(self, items: list[bytes | FramingError], address: str, sender: str, trusted: bool) -> None:
        """What a TCP connection's decoder gave: frames to accept, framing faults to count."""
        now = time.time()
        accept = self.accept
        for item in items:
            if type(item) is bytes:
                accept(item, address, sender, now, trusted)
            elif "exceeds max_" in item.reason:  # max_frame (TCP) or max_message (RELP)
                self.counts["oversize"] += 1
                self.problems.report(sender, f"frame dropped: {item.reason}: '{item.excerpt}'")
            else:
                self.counts["framing_errors"] += 1
                self.problems.report(sender, f"TCP framing: {item.reason}: '{item.excerpt}'")
        self._pause_if_full()

    def _pause_if_full(self) -> None:
        """Stop reading TCP connections and unix sockets while the held lane drains."""
        if self.paused or (len(self._held) < self._high_water and self._held_bytes < _QUEUE_BYTES // 4):
            return
        self.paused = True
        self.counts["tcp_paused"] += 1
        for connection in self.connections:
            connection.pause()
        loop = asyncio.get_running_loop()
        for sock, _ in self._unix_readers:
            loop.remove_reader(sock.fileno())

    def _resume(self) -> None:
        self.paused = False
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            connection.resume(now)
        for sock, listen in self._unix_readers:
            loop.add_reader(sock.fileno(), self._read_datagrams, sock, listen)

    def _read_datagrams(self, sock: socket.socket, listen: ListenAddress) -> None:
        buffer = self._buffer
        limit = len(buffer)
        local = listen.transport == "unix"
        sender = f"local sender on {listen}" if local else None
        address = None
        trusted = self._trust  # the unix socket: mode 0600, only root writes to it
        now = time.time()
        for _ in range(_DATAGRAMS_PER_WAKEUP):
            if local and self.paused:  # the rest waits in the kernel, its senders with it
                return
            try:
                size, peer = sock.recvfrom_into(buffer, 0, socket.MSG_TRUNC)
                if not local:
                    allowed, address = self.check_sender(peer[0])
                    if not allowed:
                        self.counts["dropped_not_allowed"] += 1
                        self.problems.report(f"sender {address}",
                                             f"datagram to {listen} dropped: not in the allow list")
                        continue
                    trusted = self.is_trusted("udp", peer)
                if size > limit:  # MSG_TRUNC: the datagram's real size, beyond what the buffer took
                    self.counts["truncated"] += 1
                    self.problems.report(sender or f"sender {address}",
                                         f"datagram of {size} bytes truncated to max_message {limit}")
                    size = limit
                self.accept(bytes(buffer[:size]), address, sender, now, trusted, not local)
                if local:
                    self._pause_if_full()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.problems.report(f"socket {listen}", f"receive failed: {error.strerror or error}")
                return
            except Exception as error:  # nothing a sender does may take the reader down
                self.counts["errors"] += 1
                who = sender or (f"sender {address}" if address else f"socket {listen}")
                self.problems.report(who, f"internal error on a datagram: {error!r}", error)

    def _drop_queue_full(self) -> None:
        self.counts["dropped_queue_full"] += 1
        # Through the problem log: under a flood the queue fills and drains many times a second.
        self.problems.report("queue", f"full, new messages dropped until the pipeline catches up (queue_size "
                                      f"{self._queue_size}, of which UDP may fill {self._lossy_size})")

    async def _deliver(self) -> None:
        while True:
            if not self._held and not self._lossy:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._deliver_batch()
            await asyncio.sleep(0)  # let the other sources and the sockets have the loop

    def _deliver_batch(self) -> None:
        held, lossy = self._held, self._lossy
        # Half a batch each while both lanes wait: a UDP flood cannot hold up the other senders.
        from_held = min(len(held), max(_BATCH // 2, _BATCH - len(lossy)))
        from_lossy = min(len(lossy), _BATCH - from_held)
        self._held_bytes -= self._hand_on(held, from_held)
        self._lossy_bytes -= self._hand_on(lossy, from_lossy)
        self.counts["delivered"] += from_held + from_lossy
        if self.paused and len(held) <= self._low_water and self._held_bytes <= _QUEUE_BYTES // 8:
            self._resume()

    def _hand_on(self, lane: deque[LogEvent], count: int) -> int:
        """The first `count` events of `lane` to the sink; the length of their text."""
        sink = self._sink
        size = 0
        for _ in range(count):
            event = lane.popleft()
            size += len(event.message)
            try:
                sink(event)
            except Exception as error:  # a bug downstream: log it, keep receiving
                self.counts["errors"] += 1
                self.problems.report("pipeline", f"failed on a message from syslog: {error!r}", error)
        return size

    async def _flush_problems(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL)
            self.problems.flush()

    async def _close_inputs(self) -> None:
        loop = asyncio.get_running_loop()
        self._dropped_kernel += udp_drops(self._udp_inodes)  # the kernel forgets them with the socket
        self._udp_inodes = []
        for sock in self._datagram_sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._datagram_sockets, self._unix_readers = [], []
        for path, inode in self._unix_files:
            try:
                if os.lstat(path).st_ino == inode:  # not a socket another process has made since
                    os.unlink(path)
            except OSError:
                pass
        self._unix_files = []
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        if self.draining:
            await asyncio.wait([connection.drained for connection in self.draining], timeout=DRAIN_TIMEOUT + 0.1)
            for connection in self.draining:
                connection.abort()
            self.draining.clear()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
