"""The attackers of the syslog flood (tests/integration/syslog_flood.py), each a process of its own:

    python -m tests.integration.flood_senders udp PORT COUNT MAX_MESSAGE SEED
    python -m tests.integration.flood_senders tcp PORT COUNT HOLD SEED MAX_MESSAGE

`udp` sends COUNT datagrams of random content to 127.0.0.1:PORT as fast as it can: random
bytes, random printable junk, well-formed syslog lines of other programs, sshd failures forged
from 198.51.100.0/24 (a local UDP sender is never trusted, so they must not count), and a few
over MAX_MESSAGE.

`tcp` opens COUNT connections to 127.0.0.1:PORT (from 127.0.1.1-127.0.1.8, for ports enough),
256 in flight at once (those whose SYN a full accept queue dropped are tried again by the
kernel while the others go on), keeps the newest HOLD open and abandons
the older ones: a third send nothing, the rest the start of an octet-counted frame that never
ends (a tenth of those nearly max_message long). Abandoned means gone without a FIN or a reset
(TCP_REPAIR before close, as root), as when a host drops off the network, so the receiver only
learns of it from its idle timeout.

Each prints one JSON line when it starts sending and one with its counts when done.
"""

from __future__ import annotations

import collections
import errno
import json
import random
import resource
import selectors
import socket
import string
import sys
import time

TCP_REPAIR = 19  # linux/tcp.h: a socket closed in repair mode vanishes without FIN or RST
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the source port at connect, by the whole 4-tuple
POOL = 16_384  # distinct datagrams, sent in rotation
BATCH = 256  # connects in flight at once
CONNECT_TIMEOUT = 3.0  # a SYN dropped on a full accept queue is sent again after 1 s
SOURCES = [f"127.0.1.{n}" for n in range(1, 9)]
PROGRAMS = ("CRON", "nginx", "postfix/smtpd", "systemd", "kernel", "dovecot", "named", "su")
PRINTABLE = (string.ascii_letters + string.digits + string.punctuation + " ").encode()


def datagrams(max_message: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    """The pool the udp sender rotates through, and how many of each kind it holds."""
    rng = random.Random(seed)
    pool, kinds = [], collections.Counter()
    for n in range(POOL):
        roll = rng.random()
        if roll < 0.35:
            kind, data = "random_bytes", rng.randbytes(rng.randint(1, 1500))
        elif roll < 0.65:
            kind, data = "printable_junk", bytes(rng.choices(PRINTABLE, k=rng.randint(1, 1500)))
        elif roll < 0.98:
            kind, data = "other_programs", _other_program_line(rng, n)
        elif roll < 0.99:
            kind = "forged_sshd"
            data = (f"<38>Nov 24 15:09:08 web1 sshd[{n}]: Failed password for root from 198.51.100.{n % 256} "
                    f"port {1024 + n} ssh2").encode()
        else:
            kind, data = "oversized", bytes(rng.choices(PRINTABLE, k=rng.randint(max_message + 1, 4 * max_message)))
        pool.append(data)
        kinds[kind] += 1
    return pool, dict(kinds)


def _other_program_line(rng: random.Random, n: int) -> bytes:
    program = rng.choice(PROGRAMS)
    text = " ".join(rng.choice(("session", "opened", "for", "user", "connect", "from", "status=sent", "GET",
                                "/index.html", "timeout", "client", "query:", "example.org"))
                    for _ in range(rng.randint(1, 30)))
    pri = rng.randint(0, 191)
    if n % 2:
        return f"<{pri}>Nov {rng.randint(1, 28)} 12:{n % 60:02d}:07 host {program}[{n}]: {text}".encode()
    return f"<{pri}>1 2026-11-24T12:00:{n % 60:02d}.{n:06d}Z host {program} {n} - - {text}".encode()


def send_udp(port: int, count: int, max_message: int, seed: int) -> dict:
    pool, kinds = datagrams(max_message, seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    sent = errors = 0
    started = time.time()
    print(json.dumps({"started": started}), flush=True)
    for n in range(count):
        try:
            send(pool[n % POOL])
            sent += 1
        except OSError:  # ECONNREFUSED: the receiver is gone (an ICMP port unreachable came back)
            errors += 1
    return {"sent": sent, "errors": errors, "started": started, "finished": time.time(), "pool": kinds}


def _abandon(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # not root: a reset instead
    sock.close()


def _partial_frame(n: int, max_message: int) -> bytes:
    """The start of an octet-counted frame that announces more than it will ever send."""
    body = b"<38>1 2026-11-24T15:09:08Z attacker sshd 1 - - Failed password for root from 198.51.100.1 "
    length = max_message - 1
    if n % 10 == 0:  # nearly max_message held by the receiver until the idle timeout
        return b"%d %s" % (length, body + b"x" * (length - len(body) - 1))
    return b"%d %s" % (length, body)


def open_tcp(port: int, count: int, hold: int, seed: int, max_message: int = 4096) -> dict:
    limit = hold + BATCH + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))  # raising hard: root
    counts = collections.Counter()
    held: collections.deque[socket.socket] = collections.deque()
    pending: dict[socket.socket, tuple[int, float]] = {}  # connecting: (number, give up at)
    selector = selectors.DefaultSelector()
    started = time.time()
    print(json.dumps({"started": started}), flush=True)
    made = 0
    while made < count or pending:
        while made < count and len(pending) < BATCH:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((SOURCES[made % len(SOURCES)], 0))
            sock.setblocking(False)
            if sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
                pending[sock] = (made, time.monotonic() + CONNECT_TIMEOUT)
                selector.register(sock, selectors.EVENT_WRITE)
            else:
                counts["connect_failed"] += 1
                sock.close()
            made += 1
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            selector.unregister(sock)
            number, _ = pending.pop(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                counts["connect_failed"] += 1
                sock.close()
                continue
            counts["opened"] += 1
            if number % 3:
                try:
                    sock.send(_partial_frame(number, max_message))
                    counts["sent_partial_frame"] += 1
                except OSError:  # refused by the receiver already (reset)
                    counts["reset_before_sending"] += 1
            held.append(sock)
        now = time.monotonic()
        for sock in [sock for sock, (_, give_up) in pending.items() if give_up < now]:
            del pending[sock]  # its SYNs dropped on a full accept queue all along
            selector.unregister(sock)
            counts["connect_timed_out"] += 1
            _abandon(sock)
        while len(held) > hold:
            _abandon(held.popleft())
            counts["abandoned"] += 1
    while held:
        _abandon(held.popleft())
        counts["abandoned"] += 1
    return {"started": started, "finished": time.time(), **counts}


def main(argv: list[str]) -> None:
    mode, port, count, setting, seed = argv[0], *map(int, argv[1:5])
    max_message = int(argv[5]) if len(argv) > 5 else 4096
    report = (send_udp(port, count, setting, seed) if mode == "udp"
              else open_tcp(port, count, setting, seed, max_message))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
