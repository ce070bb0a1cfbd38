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
import json
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent import secrets
from agent.addresses import Address
from agent.bans import Ban
from agent.fleet_config import FleetConfig
from agent.fleet_apply import FleetApplier
from agent.fleet_events import (COUNT_SCRIPT, FleetEvent, RejectedEvent, count_member, decode, encode, entry_order,
                                entry_time, failures_key, signed_members)

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("jailwarden.fleet")

_READ_BATCH = 500  # stream entries read at once
_BLOCK_MS = 1000  # how long a read waits for new entries
_COUNT_BATCH = 256  # failures sent to Redis in one round trip
_COUNT_QUEUE = 10_000  # failures waiting to be counted in Redis; beyond, dropped (counted locally still)
_CHECK_INTERVAL = 60.0  # seconds between checks of Redis's clock and the stream's newest entry
_RETRY_MIN, _RETRY_MAX = 0.5, 30.0  # seconds between attempts while Redis is unreachable
_COUNTERS = ("published", "publish_dropped", "received", "applied", "own", "not_accepted", "protected", "expired",
             "duplicate", "replayed", "rejected_signature", "rejected_malformed", "counted", "count_dropped",
             "fleet_bans", "outages", "errors", "position_reset")


class FleetError(Exception):
    """Fleet mode cannot start: a key file that is missing or readable by others, no redis client."""


def read_secret(path: Path, what: str) -> bytes:
    try:
        return secrets.read_secret(path, f"[fleet] {what}")
    except secrets.SecretError as error:
        raise FleetError(str(error)) from None


class Fleet:
    def __init__(self, config: FleetConfig, agent: Agent) -> None:
        self.config = config
        self.agent = agent
        self.node = config.node or socket.gethostname()
        self.key = read_secret(config.key_file, "key_file")
        self.password = read_secret(config.password_file, "password_file").decode() if config.password_file else None
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.position = "0"  # the last stream entry applied; "0": the whole stream
        self.applier = FleetApplier(agent, self.node)
        self.offset = 0.0  # Redis's clock minus ours, measured at each (re)connection
        self._checked = False  # position and clock checked since the last (re)connection
        self._next_check = 0.0  # and again every _CHECK_INTERVAL
        self.connected = False
        self._outbox: deque[FleetEvent] = deque(maxlen=config.buffer)
        self._to_count: deque[tuple[str, Address, float]] = deque()
        self._sequence = 0  # with the start time, makes each failure's member of a count unique
        self._started_ns = f"{time.time_ns():x}"
        self._last_time = 0.0  # of the last event published
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
        # Strictly increasing per node: the others refuse an event not newer than the last (a replay).
        self._last_time = max(now, self._last_time + 1e-6)
        self._outbox.append(FleetEvent(kind, ban.jail, ban.address, ban.start, ban.end, ban.reason, self.node,
                                       self._last_time))
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

    def state(self) -> dict[str, str]:
        """What the store keeps: the stream position and the newest event seen per node."""
        return {"fleet": self.position, "fleet_seen": json.dumps(self.applier.seen, sort_keys=True)}

    async def start(self, stored: dict[str, str], supervise: Callable[[asyncio.Task], None]) -> None:
        """Connect (in the background) and read on from the stored position; `supervise` is
        called when a task of the fleet ends by itself, which is a bug."""
        try:
            import redis.asyncio as redis_asyncio
        except ImportError as error:
            raise FleetError(f"[fleet] is configured but the python redis client cannot be imported ({error}; "
                             f"Debian: apt install python3-redis)") from None
        self.position = stored.get("fleet") or "0"
        try:
            seen = json.loads(stored.get("fleet_seen", "{}"))
            self.applier.seen = {str(node): float(when) for node, when in seen.items()}
        except (ValueError, TypeError, AttributeError):
            log.error("fleet: the stored newest events per node are unreadable; starting without them")
        self._client = self._connect(redis_asyncio)
        self._tasks = [asyncio.create_task(job(), name=f"fleet {job.__name__}")
                       for job in (self._consume, self._publish, self._count)]
        for task in self._tasks:
            task.add_done_callback(supervise)
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
                if not self._checked or time.monotonic() > self._next_check:
                    await self._check_position_and_clock()
                reply = await self._client.xread({stream: self.position}, count=_READ_BATCH, block=_BLOCK_MS)
            except Exception as error:  # noqa: BLE001 - any Redis failure: wait and try again
                await self._outage(error)
                continue
            self._up()
            for _, entries in reply or ():
                now = time.time()
                for entry_id, fields in entries:
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    try:
                        self._apply(fields, now, now + self.offset - entry_time(entry_id))
                    except Exception:  # a bug: the entry is skipped, the reader lives on
                        self.counts["errors"] += 1
                        log.exception("fleet: failed to apply stream entry %s; skipped", entry_id)
                    self.position = entry_id

    async def _check_position_and_clock(self) -> None:
        """After each (re)connection: Redis's clock against ours, and the stored position
        against the stream's newest entry. A position beyond it (Redis lost its data, another
        Redis, a forged entry ID) would make the reader wait for entries that never come: read
        the whole stream again instead, which applies nothing twice."""
        seconds, microseconds = _single(await self._client.time())
        self.offset = seconds + microseconds / 1e6 - time.time()
        try:
            newest = _single(await self._client.xinfo_stream(self.config.stream))["last-generated-id"]
        except Exception as error:  # noqa: BLE001 - no stream yet: nothing was published
            if "no such key" not in str(error).lower():
                raise
            newest = "0-0"
        newest = newest.decode() if isinstance(newest, bytes) else str(newest)
        if self.position != "0" and entry_order(self.position) > entry_order(newest):
            self.counts["position_reset"] += 1
            log.warning("fleet: the stored stream position %s is beyond the newest entry of %s (%s): Redis lost "
                        "its data or is another one; reading the stream from its start", self.position,
                        self.config.stream, newest)
            self.position = "0"
        if abs(self.offset) > 5:
            log.warning("fleet: Redis's clock is %+.1f s from this host's; fleet times are taken from Redis",
                        self.offset)
        self._checked = True
        self._next_check = time.monotonic() + _CHECK_INTERVAL

    async def _publish(self) -> None:
        while True:
            if not self._outbox:
                self._wake_publisher.clear()
                await self._wake_publisher.wait()
            event = self._outbox[0]
            try:
                await self._client.xadd(self.config.stream, encode(event, self.key, self.config.stream),
                                        maxlen=self.config.stream_maxlen, approximate=True)
            except Exception as error:  # noqa: BLE001
                await self._outage(error)
                continue
            self._up()
            if self._outbox and self._outbox[0] is event:
                self._outbox.popleft()
            self.counts["published"] += 1

    async def _count(self) -> None:
        while True:
            if not self._to_count:
                self._wake_counter.clear()
                await self._wake_counter.wait()
            jails = self.agent.config.jails  # read anew: a reload may change them
            # Up to _COUNT_BATCH failures in one round trip (a pipeline, not a transaction: each
            # script touches one key, so a cluster client can send each to its own node).
            batch = []
            pipe = self._client.pipeline(transaction=False)
            while self._to_count and len(batch) < _COUNT_BATCH:
                jail, address, _ = self._to_count.popleft()
                setup = jails.get(jail)
                if setup is None or not setup.fleet_count:
                    continue
                key = failures_key(self.config.prefix, jail, address)
                self._sequence += 1
                member = count_member(self.key, key, self.node, f"{self._started_ns}.{self._sequence}")
                pipe.eval(COUNT_SCRIPT, 1, key, member, setup.findtime, 4 * setup.maxretry,
                          math.ceil(setup.findtime) + 1)
                batch.append((setup, jail, address, key))
            if not batch:
                continue
            try:
                results = await pipe.execute()
            except Exception as error:  # noqa: BLE001
                self.counts["count_dropped"] += len(batch)
                await self._outage(error)
                continue
            self._up()
            self.counts["counted"] += len(batch)
            reached = []
            for (setup, jail, address, key), members in zip(batch, results, strict=True):
                total = signed_members(members, self.key, key)  # what someone wrote without the key does not count
                if total >= setup.maxretry and self.applier.count_reached(jail, address, total, time.time()):
                    reached.append(key)
            if reached:
                self.counts["fleet_bans"] += len(reached)
                await self._reset_counts(reached)

    async def _reset_counts(self, keys: list[str]) -> None:
        """The windows of banned addresses start again, as a local jail's do."""
        try:
            if self.config.cluster:
                await asyncio.gather(*(self._client.delete(key) for key in keys))
            else:
                await self._client.delete(*keys)
        except Exception as error:  # noqa: BLE001
            if not _is_refusal(error):
                await self._outage(error)
            elif not self._told_no_delete:  # the counts then simply expire after findtime
                self._told_no_delete = True
                log.warning("fleet: Redis refuses DEL (%s): a fleet count is not reset at its ban, it "
                            "expires after findtime instead", error)

    def _apply(self, fields: dict, now: float, age: float) -> None:
        counts = self.counts
        counts["received"] += 1
        try:
            event = decode(fields, self.key, self.config.stream)
        except RejectedEvent as error:
            name = "rejected_signature" if error.signature else "rejected_malformed"
            counts[name] += 1
            if counts[name] <= 10 or counts[name] % 1000 == 0:  # a flood of them must not flood the log
                log.warning("fleet: stream entry rejected (%d so far): %s", counts[name], error)
            return
        counts[self.applier.apply(event, now, age)] += 1

    async def _outage(self, error: Exception) -> None:
        """Redis failed a command: unreachable (wait, retry) or refusing us (say so; the
        administrator may fix the password or the ACL while we wait)."""
        refused = _is_refusal(error)
        self._checked = False
        if self.connected or self._down_since is None or refused != self._refused:
            self.connected = False
            self._down_since = self._down_since or time.monotonic()
            self.counts["outages"] += 1
            self._refused = refused
            if "equal or smaller than the target stream top item" in str(error):
                log.error("fleet: Redis refuses new entries in %s: its newest entry has an ID in the future (not "
                          "written by an agent?); delete the stream (DEL %s) to recover; banning locally meanwhile",
                          self.config.stream, self.config.stream)
            elif refused:
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


def _single(reply):
    """A cluster client may answer a command per node (a dict keyed by node): take one answer."""
    if isinstance(reply, dict) and reply and not isinstance(next(iter(reply)), (str, bytes)):
        return next(iter(reply.values()))
    return reply
