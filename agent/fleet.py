"""Fleet mode: the agents of several servers share bans and failure counts through Redis.

Bans and unbans decided here go into a Redis stream (XADD, capped), signed with the fleet's key;
every agent reads the stream from the position it stored and applies the other nodes' events
through its own jails and backends (a ban for the time it has left; never an address this node
protects). With `fleet_count`, each failure is also added to a per-address sorted set that all
nodes share, and the jail's maxretry applies to the fleet's total.

Redis is never in the way of banning: events to publish wait in a bounded buffer, failures to
count in a bounded queue, and both are worked off by tasks of their own; while Redis is
unreachable the agent goes on deciding alone, says so once, and catches up when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import stat
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from agent.addresses import Address
from agent.bans import Ban, BanPolicy
from agent.fleet_config import FleetConfig
from agent.fleet_events import FleetEvent, RejectedEvent, decode, encode, failures_key

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("jailwarden.fleet")

_READ_BATCH = 500  # stream entries read at once
_BLOCK_MS = 1000  # how long a read waits for new entries
_COUNT_BATCH = 256  # failures sent to Redis in one round trip
_COUNT_QUEUE = 10_000  # failures waiting to be counted in Redis; beyond, dropped (counted locally still)
_RETRY_MIN, _RETRY_MAX = 0.5, 30.0  # seconds between attempts while Redis is unreachable
# One failure into an address's sorted set, atomically and in one round trip (one key, so any
# Redis Cluster slot): add it, drop what is older than findtime and all but the newest maxretry,
# renew the expiry, return the fleet's count. ARGV: time, member, cutoff, maxretry, ttl.
_COUNT_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return redis.call('ZCARD', KEYS[1])
"""
_COUNTERS = ("published", "publish_dropped", "received", "applied", "own", "not_accepted", "protected", "expired",
             "duplicate", "rejected_signature", "rejected_malformed", "counted", "count_dropped", "fleet_bans",
             "outages")


class FleetError(Exception):
    """Fleet mode cannot start: a key file that is missing or readable by others, no redis client."""


def read_secret(path: Path, what: str) -> bytes:
    """The contents of a secret file, which only its owner (root) may read."""
    try:
        mode = os.stat(path).st_mode
        data = path.read_bytes().strip()
    except OSError as error:
        raise FleetError(f"[fleet] {what} {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FleetError(f"[fleet] {what} {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                         f"chmod 600 it")
    if not data:
        raise FleetError(f"[fleet] {what} {path} is empty")
    return data


class Fleet:
    def __init__(self, config: FleetConfig, agent: Agent) -> None:
        self.config = config
        self.agent = agent
        self.node = config.node or socket.gethostname()
        self.key = read_secret(config.key_file, "key_file")
        self.password = read_secret(config.password_file, "password_file").decode() if config.password_file else None
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.position = "0"  # the last stream entry applied; "0": the whole stream
        self.connected = False
        self._outbox: deque[FleetEvent] = deque(maxlen=config.buffer)
        self._to_count: deque[tuple[str, Address, float]] = deque()
        self._sequence = 0  # makes each failure's member of the sorted set unique
        self._wake_publisher = asyncio.Event()
        self._wake_counter = asyncio.Event()
        self._client = None
        self._tasks: list[asyncio.Task] = []
        self._down_since: float | None = None
        self._told_no_delete = False
        self._refused = False  # the last failure was Redis refusing us (auth, ACL), not being away
        # A dry run must not ban anywhere: it reads and applies the fleet's bans, and adds nothing.
        self.read_only = agent.dry_run
        self.where = config.url or f"the master of {config.service} ({len(config.sentinels)} sentinels)"

    # -- from the agent

    def publish(self, kind: str, ban: Ban, now: float) -> None:
        """Tell the fleet about a ban decided here, or a ban lifted here by hand."""
        setup = self.agent.config.jails.get(ban.jail)
        if setup is None or not setup.share or self.read_only:
            return
        if len(self._outbox) == self._outbox.maxlen:
            self.counts["publish_dropped"] += 1
        self._outbox.append(FleetEvent(kind, ban.jail, ban.address, ban.start, ban.end, ban.reason, self.node, now))
        self._wake_publisher.set()

    def count(self, jail: str, address: Address, when: float) -> None:
        """Add a failure to the fleet's count for `address` in `jail`."""
        if self.read_only:
            return
        if len(self._to_count) >= _COUNT_QUEUE or self._down_since is not None:  # full, or Redis known down
            self.counts["count_dropped"] += 1
            return
        self._to_count.append((jail, address, when))
        self._wake_counter.set()

    def stats(self) -> dict:
        return self.counts | {"node": self.node, "connected": self.connected, "buffered": len(self._outbox),
                              "position": self.position}

    # -- running

    async def start(self, position: str | None) -> None:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError as error:
            raise FleetError(f"[fleet] is configured but the python redis client cannot be imported ({error}; "
                             f"Debian: apt install python3-redis)") from None
        if position:
            self.position = position
        self._client = self._connect(redis_asyncio)
        self._tasks = [asyncio.create_task(job(), name=f"fleet {job.__name__}")
                       for job in (self._consume, self._publish, self._count)]
        log.info("fleet: node %s, Redis at %s, reading the stream from %s%s", self.node, self.where, self.position,
                 " (dry run: publishing nothing, counting nothing)" if self.read_only else "")

    def _connect(self, redis_asyncio):
        """A client for a standalone Redis (url), a Redis Cluster (url of any node, `cluster`),
        or the master that Sentinels name (`sentinels`, `service`), which follows a failover."""
        config = self.config
        options = {"username": config.username, "password": self.password, "socket_timeout": 10,
                   "socket_connect_timeout": 5}
        if config.ca_file is not None:
            options["ssl_ca_certs"] = str(config.ca_file)
        if config.sentinels:
            from redis.asyncio.sentinel import Sentinel

            if config.ca_file is not None:
                options["ssl"] = True
            sentinel = Sentinel(config.sentinels, sentinel_kwargs={key: options[key] for key in options
                                                                   if key.startswith(("ssl", "socket"))},
                                **options)
            return sentinel.master_for(config.service)
        if config.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(config.url, **options)
        return redis_asyncio.from_url(config.url, health_check_interval=30, **options)

    async def stop(self) -> None:
        """Publish what is waiting (briefly: Redis may be gone), then close."""
        if self._outbox and self.connected:
            self._wake_publisher.set()
            deadline = time.monotonic() + 2
            while self._outbox and self.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            close = getattr(self._client, "aclose", None) or self._client.close  # aclose from redis 5
            await close()
        if self._outbox:
            log.warning("fleet: %d bans/unbans were not published (Redis unreachable)", len(self._outbox))

    async def _consume(self) -> None:
        stream = self.config.stream
        while True:
            try:
                reply = await self._client.xread({stream: self.position}, count=_READ_BATCH, block=_BLOCK_MS)
            except Exception as error:  # noqa: BLE001 - any Redis failure: wait and try again
                await self._outage(error)
                continue
            self._up()
            for _, entries in reply or ():
                now = time.time()
                for entry_id, fields in entries:
                    self._apply(fields, now)
                    self.position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _publish(self) -> None:
        while True:
            if not self._outbox:
                self._wake_publisher.clear()
                await self._wake_publisher.wait()
            event = self._outbox[0]
            try:
                await self._client.xadd(self.config.stream, encode(event, self.key),
                                        maxlen=self.config.stream_maxlen, approximate=True)
            except Exception as error:  # noqa: BLE001
                await self._outage(error)
                continue
            self._up()
            if self._outbox and self._outbox[0] is event:
                self._outbox.popleft()
            self.counts["published"] += 1

    async def _count(self) -> None:
        jails = self.agent.config.jails
        while True:
            if not self._to_count:
                self._wake_counter.clear()
                await self._wake_counter.wait()
            # Up to _COUNT_BATCH failures in one round trip (a pipeline, not a transaction: each
            # script touches one key, so a cluster client can send each to its own node).
            batch = []
            pipe = self._client.pipeline(transaction=False)
            now = time.time()
            while self._to_count and len(batch) < _COUNT_BATCH:
                jail, address, when = self._to_count.popleft()
                setup = jails.get(jail)
                if setup is None:
                    continue
                key = failures_key(self.config.prefix, jail, address)
                member = f"{self.node}:{when!r}:{self._sequence}"
                self._sequence += 1
                pipe.eval(_COUNT_SCRIPT, 1, key, when, member, now - setup.findtime, setup.maxretry,
                          math.ceil(setup.findtime) + 1)
                batch.append((setup, jail, address, key))
            if not batch:
                continue
            try:
                totals = await pipe.execute()
            except Exception as error:  # noqa: BLE001
                self.counts["count_dropped"] += len(batch)
                await self._outage(error)
                continue
            self._up()
            self.counts["counted"] += len(batch)
            reached = [key for (setup, jail, address, key), total in zip(batch, totals, strict=True)
                       if total >= setup.maxretry and self._count_reached(jail, address, total, time.time())]
            if reached:
                self.counts["fleet_bans"] += len(reached)
                try:
                    await self._client.delete(*reached) if not self.config.cluster else \
                        await asyncio.gather(*(self._client.delete(key) for key in reached))
                except Exception as error:  # noqa: BLE001 - the window starts again, as a local jail's does
                    if not _is_refusal(error):
                        await self._outage(error)
                    elif not self._told_no_delete:  # the counts then simply expire after findtime
                        self._told_no_delete = True
                        log.warning("fleet: Redis refuses DEL (%s): a fleet count is not reset at its ban, it "
                                    "expires after findtime instead", error)

    def _apply(self, fields: dict, now: float) -> None:
        counts = self.counts
        counts["received"] += 1
        try:
            event = decode(fields, self.key)
        except RejectedEvent as error:
            counts["rejected_signature" if error.signature else "rejected_malformed"] += 1
            log.warning("fleet: stream entry rejected: %s", error)
            return
        if event.node == self.node:
            counts["own"] += 1
            return
        counts[self._apply_event(event, now)] += 1

    def _apply_event(self, event: FleetEvent, now: float) -> str:
        """Apply another node's ban or unban here; returns the counter it adds to."""
        agent = self.agent
        setup, config = agent.pipeline.jails.get(event.jail), agent.config.jails.get(event.jail)
        if setup is None or config is None or not config.accept:
            return "not_accepted"
        book = agent.pipeline.book
        current = book.current(event.jail, event.address)
        if event.kind == "unban":
            if current is None or current.start > event.time:  # not banned, or banned again since
                return "duplicate"
            book.unban(event.jail, event.address, now)
            setup.jail.forget(event.address)
            agent.lift(current, now, f"unbanned on node {event.node}")
            return "applied"
        if event.end <= now:
            return "expired"
        refusal = agent.protection(event.jail, event.address)
        if refusal is not None:
            log.warning("jail %s: not applying node %s's ban of %s: %s", event.jail, event.node, event.address,
                        refusal)
            return "protected"
        if current is not None and current.end >= event.end:
            return "duplicate"
        ban = book.ban((event.jail, event.address), now, BanPolicy(event.end - now),
                       reason=f"node {event.node}: {event.reason}")
        if current is None:
            agent.banned(ban, share=False)
        else:
            agent.enforce(ban)
        return "applied"

    def _count_reached(self, jail: str, address: Address, total: int, now: float) -> bool:
        """The fleet's total for `address` reached the jail's maxretry: ban it here (and so, shared,
        everywhere) unless it is protected or banned already."""
        agent = self.agent
        setup = agent.pipeline.jails.get(jail)
        if setup is None or agent.protection(jail, address) is not None or agent.pipeline.book.current(jail, address):
            return False
        ban = agent.pipeline.book.ban((jail, address), now, setup.policy, reason=f"{total} failures across the fleet")
        setup.jail.forget(address)
        agent.banned(ban)
        return True

    async def _outage(self, error: Exception) -> None:
        """Redis failed a command: unreachable (wait, retry) or refusing us (say so; the
        administrator may fix the password or the ACL while we wait)."""
        refused = _is_refusal(error)
        if self.connected or self._down_since is None or refused != self._refused:
            self.connected = False
            self._down_since = self._down_since or time.monotonic()
            self.counts["outages"] += 1
            self._refused = refused
            if refused:
                log.error("fleet: Redis at %s refuses this agent (%s): check [fleet] username and password_file, "
                          "and that the ACL user may run XADD, XREAD, EVAL and DEL on %s:*; banning locally "
                          "meanwhile", self.where, error, self.config.prefix)
            else:
                log.error("fleet: Redis at %s unreachable (%s); banning locally, holding up to %d events to publish",
                          self.where, error, self.config.buffer)
        waited = time.monotonic() - self._down_since
        await asyncio.sleep(min(_RETRY_MAX, max(_RETRY_MIN, waited / 4)))

    def _up(self) -> None:
        if self.connected:
            return
        if self._down_since is not None:
            log.warning("fleet: Redis at %s reachable again after %.0f s; %d events to publish", self.where,
                        time.monotonic() - self._down_since, len(self._outbox))
        self.connected = True
        self._down_since = None


def _is_refusal(error: Exception) -> bool:
    """A login or permission error (redis-py's AuthenticationError, NoPermissionError, or the
    server's WRONGPASS / NOPERM replies), which waiting alone will not cure."""
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error)
    return bool(names & {"AuthenticationError", "NoPermissionError", "AuthenticationWrongNumberOfArgsError"}) \
        or text.startswith(("WRONGPASS", "NOPERM")) or "invalid username-password" in text
