"""The agent process: config -> sources -> pipeline -> firewall backends on one asyncio loop,
with the checkpoint saved as it goes. In dry-run mode each failure and each ban decision is
logged and nothing touches the kernel."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import time
from pathlib import Path

from agent import state
from agent.addresses import AddressSet
from agent.host import own_addresses
from agent.bans import Ban, BanBook
from agent.config import Config
from agent.enforcement import Enforcer, build_backends
from agent.events import LogEvent
from agent.jail import Jail
from agent.pipeline import JailSetup, Outcome, Pipeline
from agent.sources import SourceError, source_class
from parsers.filter import Filter, FilterError
from parsers.filterfile import SHIPPED_DIR, find_filter, load_filter

log = logging.getLogger("jailwarden")

# How often the checkpoint is written while entries are being applied. A crash loses nothing
# read from the journal (it is read again from the saved position); syslog failures received
# since the last save are lost with the process's memory.
CHECKPOINT_INTERVAL = 1.0
STATE_FILE = "checkpoint.json"


def build_jails(config: Config, filter_dir: Path) -> tuple[list[JailSetup], list[str]]:
    """The enabled jails with their filters; a jail whose filter cannot be loaded is left out
    and its problem returned, so the others still run."""
    setups, problems = [], []
    filters: dict[tuple[Path, str | None], Filter] = {}
    for name, jail in config.jails.items():
        if not jail.enabled:
            continue
        try:
            if jail.filter.startswith("fail2ban:"):
                raise FilterError(jail.filter, "", "Fail2Ban filters are not supported by this version")
            path = find_filter(jail.filter, [filter_dir, SHIPPED_DIR])
            key = (path, jail.mode)
            if key not in filters:
                filters[key] = load_filter(path, mode=jail.mode)
        except FilterError as error:
            problems.append(f"jail {name}: not started: {error}")
            continue
        flt = filters[key]
        counter = Jail(name, maxretry=jail.maxretry, findtime=jail.findtime, ignore=jail.ignore,
                       require_trusted=jail.require_trusted)
        setups.append(JailSetup(name, flt, counter, jail.policy))
        if jail.require_trusted and not flt.journal and config.sources.journal.enabled:
            problems.append(f"jail {name}: filter {flt.name!r} names no journal fields, so journal entries are "
                            f"known only by SYSLOG_IDENTIFIER, which any local user can write; with "
                            f"require_trusted = true none of them count (syslog from allowed senders still does)")
    return setups, problems


class Agent:
    def __init__(self, config: Config, *, filter_dir: Path, dry_run: bool = True) -> None:
        self.config = config
        self.dry_run = dry_run
        setups, self.problems = build_jails(config, filter_dir)
        self.pipeline = Pipeline(setups, BanBook(history_window=config.agent.history_window))
        self.state_path = config.agent.state_dir / STATE_FILE
        self.sources: list = []
        self._journal = None
        # The journal position of the loaded checkpoint, kept while no journal source runs so a
        # source that failed to start does not make the next start read history twice.
        self._saved_position = None
        self._dirty = False
        self._saving: asyncio.Future | None = None  # the periodic save running in a thread
        self._stopping: asyncio.Event | None = None
        self.enforcer: Enforcer | None = None
        if not dry_run:
            backends, problems = build_backends(config, list(self.pipeline.jails))
            self.problems += problems
            self.enforcer = Enforcer(backends)

    async def _protect_own_addresses(self) -> None:
        try:
            addresses = await asyncio.to_thread(own_addresses)
        except Exception as error:  # netlink refused (a locked-down container): loopback stays protected
            log.error("cannot list this host's addresses to protect them from bans: %s", error)
            return
        self.pipeline.protected = AddressSet(addresses)
        for source in self.sources:
            if source.name == "syslog":  # its senders from these addresses are local processes
                source.local_senders.own = frozenset(addresses)

    def handle(self, event: LogEvent) -> None:
        """The sink every source delivers to."""
        outcomes = self.pipeline.handle(event, time.time())
        if outcomes:
            self._dirty = True
            for outcome in outcomes:
                self._report(outcome, event)

    def _report(self, outcome: Outcome, event: LogEvent) -> None:
        failure = outcome.failure
        where = f"jail {outcome.jail}:"
        if outcome.kind == "banned":
            ban = outcome.ban
            if self.enforcer is not None:
                self.enforcer.ban(ban.jail, ban.address, ban.end)
            length = "permanently" if ban.permanent else f"for {_duration(ban.end - ban.start)}"
            mode = " [dry run: no firewall change]" if self.dry_run else ""
            log.warning("%s ban %s %s (offence %d; reason: %s)%s", where, ban.address, length, ban.offence,
                        ban.reason, mode)
        elif outcome.kind == "counted":
            log.info("%s failure from %s (%s)", where, failure.address, outcome.failure.filter)
        elif outcome.kind == "untrusted":
            why = ("its sender is not trusted (a local process whose open TCP socket is not owned by one of "
                   "[sources.syslog] trusted_uids, or trust = false)" if event.source == "syslog"
                   else "the fields that identify its program can be written by any local user")
            log.warning("%s not counting a failure from %s: %s", where, failure.address, why)
        elif outcome.kind == "ignored":
            log.info("%s failure from %s not counted: on the ignore list", where, failure.address)
        else:
            why = {"evidence": "it restates an attempt another line counts", "stale": "older than findtime",
                   "covered": "it is older than the address's current ban"}
            log.debug("%s line naming %s not counted: %s", where, failure.address, why.get(outcome.kind, outcome.kind))

    async def run(self) -> int:
        for problem in self.problems:
            log.error("%s", problem)
        if not self.pipeline.jails:
            log.error("no jail can run; exiting")
            return 1
        loop = asyncio.get_running_loop()
        await self._protect_own_addresses()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        now = time.time()
        try:
            checkpoint = state.load(self.state_path)
        except state.StateError as error:
            log.error("%s; starting without it (the journal history window is read again)", error)
            checkpoint = None
        if checkpoint is not None:
            self._saved_position = checkpoint.journal
            restored = checkpoint.restore({name: s.jail for name, s in self.pipeline.jails.items()}, now)
            log.info("restored %d failure windows from %s", restored, self.state_path)
        if self.enforcer is not None:
            self._adopt(await self.enforcer.start(), now)
        await self._start_sources(checkpoint, now)
        if not self.sources:
            enabled = self.config.sources.journal.enabled or self.config.sources.syslog.enabled
            log.error("%s; exiting", "no source could start" if enabled else "no source is enabled")
            return 1
        log.info("running%s with jails: %s", " (dry run)" if self.dry_run else "", ", ".join(self.pipeline.jails))
        tasks = [asyncio.create_task(job()) for job in
                 (self._save_periodically, self._expire_periodically, self._refresh_own_addresses)]
        await self._stopping.wait()
        log.info("stopping")
        for task in tasks:
            task.cancel()
        for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                log.error("%s had failed: %r", task.get_coro().__name__, result)
        if self._saving is not None:  # a save in its thread outlives its cancelled task: let it finish first
            await asyncio.gather(self._saving, return_exceptions=True)
        for source in self.sources:
            await source.stop()
        if self.enforcer is not None:
            await self.enforcer.stop()
        self._save(self._checkpoint())
        return 0

    def _adopt(self, found: dict[str, dict], now: float) -> None:
        """Bans the firewall already holds (an earlier run's) go back into the ban book, so they
        are unbanned on time and not banned twice. Without a ttl from the kernel, the ban is
        taken to last one more bantime."""
        book = self.pipeline.book
        for jail, targets in found.items():
            policy = self.pipeline.jails[jail].policy
            for target, ttl in targets.items():
                if not isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                    continue  # a network banned by hand: the agent neither owns nor ends it
                end = now + ttl if ttl is not None else now + policy.duration(1)
                book.restore(Ban(jail, target, now, end, 1, "found in the firewall at start"))
            if targets:
                log.info("jail %s: %d bans found in the firewall, adopted", jail, len(targets))

    async def _start_sources(self, checkpoint: state.Checkpoint | None, now: float) -> None:
        sources = self.config.sources
        if sources.journal.enabled:
            history = max((s.jail.findtime for s in self.pipeline.jails.values()), default=0.0)
            resume = checkpoint.journal if checkpoint is not None else None
            await self._start(source_class("journal")(sources.journal, self.handle,
                                                      matches=self.pipeline.router.journal_matches(),
                                                      resume=resume, history=history, now=now))
        if sources.syslog.enabled:
            await self._start(source_class("syslog")(sources.syslog, self.handle))

    async def _start(self, source) -> None:
        try:
            await source.start()
        except SourceError as error:
            log.error("%s", error)
            return
        except (OSError, ImportError) as error:  # not foreseen by the source: still say which one
            log.error("%s source: cannot start: %s", source.name, error)
            return
        self.sources.append(source)
        if source.name == "journal":
            self._journal = source

    def _checkpoint(self) -> state.Checkpoint:
        position = self._journal.position if self._journal is not None else self._saved_position
        return state.Checkpoint.of(position, {name: s.jail for name, s in self.pipeline.jails.items()})

    def _save(self, checkpoint: state.Checkpoint) -> bool:
        try:
            state.save(self.state_path, checkpoint)
        except OSError as error:
            log.error("cannot save the checkpoint to %s: %s", self.state_path, error.strerror or error)
            return False
        return True

    async def _save_periodically(self) -> None:
        last_position = None
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            position = self._journal.position if self._journal is not None else None
            if self._dirty or position != last_position:
                # The snapshot is taken on the loop (consistent with the position); encoding and
                # fsync, which take long with many windows, run in a thread.
                checkpoint = self._checkpoint()
                self._dirty = False
                self._saving = asyncio.ensure_future(asyncio.to_thread(self._save, checkpoint))
                if await asyncio.shield(self._saving):
                    last_position = position
                else:
                    self._dirty = True

    async def _refresh_own_addresses(self) -> None:
        while True:  # addresses come and go (DHCP, VPNs); a minute's lag is the cost of no netlink watch
            await asyncio.sleep(60)
            await self._protect_own_addresses()

    async def _expire_periodically(self) -> None:
        book = self.pipeline.book
        while True:
            await asyncio.sleep(1.0)
            for ban in book.expire(time.time()):
                if self.enforcer is not None:
                    self.enforcer.unban(ban.jail, ban.address)
                log.warning("jail %s: unban %s (ban ended)%s", ban.jail, ban.address,
                            " [dry run]" if self.dry_run else "")


def _duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
