"""The agent process: config -> sources -> pipeline -> firewall backends and the store, on one
asyncio loop, with the control socket and systemd's notifications. In dry-run mode each failure
and each ban decision is logged and nothing touches the kernel."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from agent import restore
from agent.actions.runner import ActionRunner, build_actions
from agent.addresses import Address
from agent.bans import Ban, BanBook
from agent.commands import Commands
from agent.config import Config
from agent.config_values import format_duration
from agent.control import ControlError, ControlServer, ControlSocketError
from agent.enforcement import Enforcer, build_backends
from agent.events import LogEvent
from agent.evidence import Evidence, Line
from agent.fleet import Fleet, FleetError
from agent.handcontrol import HandControl
from agent.host import host_names
from agent.jails import build_jails
from agent.metrics import MetricsServer
from agent.notify import Notifier
from agent.pipeline import Outcome, Pipeline
from agent.recording import Recorder
from agent.reporting import ReportEndpoints
from agent.sessions import Sessions
from agent.store import STORE_FILE
from agent.stream_server import Throttle
from agent.sources import SourceError, source_class
from agent.sources.journal import Position

log = logging.getLogger("jailwarden")

DRY_RUN_STORE_FILE = "dry-run.db"
LEGACY_CHECKPOINT = "checkpoint.json"  # what versions before the store kept; imported once


class Agent(HandControl):
    def __init__(self, config: Config, *, filter_dir: Path, dry_run: bool = True,
                 config_path: Path | None = None) -> None:
        self.config = config
        self.filter_dir = filter_dir
        self.config_path = config_path
        self.dry_run = dry_run
        self._failure_level = logging.INFO if dry_run else logging.DEBUG
        setups, self.problems = build_jails(config, filter_dir)
        self.pipeline = Pipeline(setups, BanBook(history_window=config.agent.history_window))
        self.counters = {name: {"failures": 0, "bans": 0, "untrusted": 0} for name in self.pipeline.jails}
        self._untrusted_log = Throttle(log, "", interval=60.0, burst=10)
        self.sources: list = []
        self.journal = None
        self.saved_position: Position | None = None  # kept while no journal source runs
        self.started = time.time()
        self.own: frozenset[Address] = frozenset()  # this host's addresses, never banned
        # Where users are logged in from now: never banned while the session lasts.
        self.sessions = Sessions(config.agent.utmp) if config.agent.protect_sessions else None
        # A dry run keeps a state of its own: its bans never reached the firewall, and the position
        # it read to must not make the next real run skip those entries.
        self.recorder = Recorder(config.agent.state_dir / (DRY_RUN_STORE_FILE if dry_run else STORE_FILE),
                                 self._snapshot,
                                 config.agent.history_window, self._longest_findtime)
        self.notifier = Notifier()
        self.control: ControlServer | None = None
        self.reporting: ReportEndpoints | None = None  # where applications report failures
        self.metrics: MetricsServer | None = None
        self.enforcer: Enforcer | None = None
        self.fleet: Fleet | None = None
        self.fleet_state: dict[str, str] = {}  # what the store kept of the fleet (stream position, ...)
        self._stopping: asyncio.Event | None = None
        self._running = False  # set once bans are restored and sources started
        self._exit_status = 0
        self._reloading = asyncio.Lock()
        self._signal_tasks: set[asyncio.Task] = set()
        self.actions = ActionRunner({}, {})  # none: a dry run must not send anything anywhere
        self.evidence = Evidence()  # the lines leading to bans, for the jails that have actions
        wanted = {name for jail in self.pipeline.jails for name in config.jails[jail].actions}
        if wanted and dry_run:
            log.info("dry run: actions %s are not run", ", ".join(sorted(wanted)))
        if wanted and not dry_run:
            actions, problems = build_actions(config.actions, wanted)
            self.problems += problems
            self.actions = ActionRunner(actions, {name: config.jails[name].actions for name in self.pipeline.jails})
            self.evidence = Evidence(host_names())  # this host's names kept out of what leaves it
        if not dry_run:
            backends, problems = build_backends(config, list(self.pipeline.jails))
            self.problems += problems
            self.enforcer = Enforcer(backends, wanted=self._wanted,
                                     reconcile_interval=config.agent.reconcile_interval)

    # -- events in

    def handle(self, event: LogEvent) -> None:
        """The sink every source delivers to."""
        outcomes = self.pipeline.handle(event, time.time())
        if outcomes:
            for outcome in outcomes:
                self._report(outcome, event)

    def _report(self, outcome: Outcome, event: LogEvent) -> None:
        failure = outcome.failure
        where = f"jail {outcome.jail}:"
        if outcome.kind in ("banned", "counted", "extended", "held"):
            self.counters[outcome.jail]["failures"] += 1
        if outcome.kind == "banned":
            evidence = (self.evidence.take(outcome.jail, failure, self.pipeline.jails[outcome.jail].jail.findtime)
                        if self.actions.wanted_by(outcome.jail) else ())
            self.banned(outcome.ban, failures=outcome.decision.failures, evidence=evidence)
        elif outcome.kind == "extended":
            # The same ban ending later, not a new one: worded apart from "ban ADDR", which the
            # recidive filter counts.
            ban = outcome.ban
            self.enforce(ban)
            until = "permanent" if ban.permanent else f"{format_duration(ban.end - outcome.decision.time)} from now"
            log.warning("%s ban of %s extended: %s (offence %d)", where, ban.address, until, ban.offence)
        elif outcome.kind == "counted":
            if self.actions.wanted_by(outcome.jail):
                self.evidence.add(outcome.jail, failure)
            if self.fleet is not None and self.config.jails[outcome.jail].fleet_count:
                self.fleet.count(outcome.jail, failure.address, failure.time)
            # At debug level when enforcing: under a flood, a line per failure would add most of
            # the attack's own volume to the journal again (bans are logged at warning).
            log.log(self._failure_level, "%s failure from %s (%s)", where, failure.address, outcome.failure.filter)
        elif outcome.kind == "untrusted":
            self.counters[outcome.jail]["untrusted"] += 1
            why = ("its sender is not trusted (over UDP never; over TCP, a local process whose socket is not owned "
                   "by one of [sources.syslog] trusted_uids; or trust = false)" if event.source == "syslog"
                   else "the fields that identify its program can be written by any local user")
            # Throttled: whoever can write forged lines could otherwise write the journal full with these.
            self._untrusted_log.warning(outcome.jail, "%s not counting a failure from %s: %s", where,
                                        failure.address, why)
        elif outcome.kind == "ignored":
            why = self.protection(outcome.jail, failure.address) or "it is on the ignore list"
            log.info("%s failure from %s not counted: %s", where, failure.address, why)
        else:
            why = {"evidence": "it restates an attempt another line counts", "stale": "older than findtime",
                   "covered": "it is older than the address's current ban"}
            log.debug("%s line naming %s not counted: %s", where, failure.address, why.get(outcome.kind, outcome.kind))

    def banned(self, ban: Ban, share: bool = True, failures: int = 0, evidence: tuple[Line, ...] = ()) -> None:
        """A new ban: counted, into the firewall and the store, logged, (`share`) told to the
        fleet, and to the jail's actions with its `failures` and the lines that led to it."""
        self.counters[ban.jail]["bans"] += 1
        self.enforce(ban)
        now = time.time()
        if share and self.fleet is not None:
            self.fleet.publish("ban", ban, now)
        self.actions.notify("ban", ban, failures, evidence)
        length = "permanently" if ban.permanent else f"for {format_duration(round(ban.end - ban.start))}"
        mode = " [dry run: no firewall change]" if self.dry_run else ""
        log.warning("jail %s: ban %s %s (offence %d; reason: %s)%s", ban.jail, ban.address, length, ban.offence,
                    ban.reason, mode)
        prefix = self.pipeline.aggregate(ban, now)  # after the line above: the address's ban is logged first
        if isinstance(prefix, str):
            log.warning("jail %s: not banning the prefix of %s: %s", ban.jail, ban.address, prefix)
        elif prefix is not None:
            self.banned(prefix, share)

    def enforce(self, ban: Ban) -> None:
        """The ban into the firewall and the store (as new, or with its new end)."""
        if self.enforcer is not None:
            self.enforcer.ban(ban.jail, ban.address, ban.end)
        self.recorder.ban(ban)

    def lift(self, ban: Ban, now: float, why: str) -> None:
        if self.enforcer is not None:
            self.enforcer.unban(ban.jail, ban.address)
        self.recorder.lifted(ban, now)
        self.actions.notify("unban", ban)
        log.warning("jail %s: unban %s (%s)%s", ban.jail, ban.address, why, " [dry run]" if self.dry_run else "")

    def _longest_findtime(self) -> float:
        return max((setup.jail.findtime for setup in self.pipeline.jails.values()), default=0.0)

    def _wanted(self, jail: str) -> dict[Address, float]:
        return {ban.address: ban.end for ban in self.pipeline.book.active(jail)}

    async def reload(self) -> list[str]:
        """Apply the configuration file again (one reload at a time, and only once running)."""
        from agent.reloading import reload

        if not self._running:
            raise ControlError("the agent is still starting; reload once it runs")
        async with self._reloading:
            return await reload(self)

    def lag(self, source) -> float | None:
        """Seconds between the newest entry a source applied and now (the journal's), else None."""
        position = getattr(source, "position", None)
        return max(0.0, time.time() - position.time) if position is not None else None

    # -- running

    async def run(self) -> int:
        for problem in self.problems:
            log.error("%s", problem)
        if not self.pipeline.jails:
            log.error("no jail can run; exiting")
            return 1
        commands = Commands(self)
        self.control = ControlServer(self.config.agent.socket, commands)
        try:
            await self.control.start()
        except ControlSocketError as error:
            log.error("%s; exiting", error)
            return 1
        self.reporting = ReportEndpoints(self.config.agent, commands)
        await self.reporting.start()
        if self.config.metrics.listen is not None:
            self.metrics = MetricsServer(self.config.metrics.listen, commands.status)
            try:
                await self.metrics.start()
            except OSError as error:
                log.error("%s; running without metrics", error.strerror)
                self.metrics = None
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self._protect_own_addresses()
        now = time.time()
        legacy = None if self.dry_run else self.config.agent.state_dir / LEGACY_CHECKPOINT
        await restore.restore(self, now, legacy)
        if self.config.fleet is not None:
            try:
                self.fleet = Fleet(self.config.fleet, self)
                await self.fleet.start(self.fleet_state, self._task_ended)
            except FleetError as error:
                log.error("%s; running without the fleet", error)
                self.fleet = None
        self.actions.start()
        await self.start_sources(now)
        if not self.sources and not self.reporting.running:  # applications' reports alone can feed jails
            enabled = self.config.sources.journal.enabled or self.config.sources.syslog.enabled
            log.error("%s; exiting", "no source could start" if enabled else "no source is enabled")
            await self._shut_down([])
            return 1
        log.info("running%s with jails: %s", " (dry run)" if self.dry_run else "", ", ".join(self.pipeline.jails))
        self._running = True
        self.notifier.ready(self._status_line())
        jobs = (self.recorder.run, self._expire_periodically, self._refresh_own_addresses, self._keep_systemd_informed)
        tasks = [asyncio.create_task(job(), name=job.__name__) for job in jobs]
        for task in tasks:
            task.add_done_callback(self._task_ended)
        await self._stopping.wait()
        await self._shut_down(tasks)
        return self._exit_status

    def _task_ended(self, task: asyncio.Task) -> None:
        """A background task that ends by itself is a bug: without it bans are not ended, or not
        stored. Stop with an error so the service manager starts the agent afresh."""
        if task.cancelled() or self._stopping.is_set():
            return
        log.critical("%s stopped unexpectedly: %r; stopping so that the agent is restarted", task.get_name(),
                     task.exception())
        self._exit_status = 1
        self._stopping.set()

    async def _shut_down(self, tasks: list[asyncio.Task]) -> None:
        log.info("stopping")
        self.notifier.stopping()
        for task in tasks:
            task.cancel()
        for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                log.error("%s had failed: %r", task.get_name(), result)
        for source in self.sources:
            await source.stop()
        if self.fleet is not None:
            await self.fleet.stop()
        await self.actions.stop()
        if self.control is not None:
            await self.control.stop()
        if self.reporting is not None:
            await self.reporting.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.enforcer is not None:
            await self.enforcer.stop(teardown=not self.config.agent.keep_bans_on_stop)
        await self.recorder.close()
        self.notifier.close()

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self._reload_on_signal())
        self._signal_tasks.add(task)  # referenced until done, so it is not collected half-way
        task.add_done_callback(self._signal_tasks.discard)

    async def _reload_on_signal(self) -> None:
        try:
            changes = await self.reload()
        except Exception as error:  # noqa: BLE001 - a reload that fails leaves the agent as it was
            log.error("reload (SIGHUP) refused: %s", error)
            return
        log.warning("reloaded (SIGHUP): %s", "; ".join(changes) or "nothing changed")

    async def start_sources(self, now: float, skip: frozenset[str] | set[str] = frozenset()) -> None:
        """Start each enabled source not named in `skip`; one that fails is logged and left out."""
        sources = self.config.sources
        if sources.journal.enabled and "journal" not in skip:
            history = max((s.jail.findtime for s in self.pipeline.jails.values()), default=0.0)
            await self._start(source_class("journal")(sources.journal, self.handle,
                                                      matches=self.pipeline.router.journal_matches(),
                                                      resume=self.saved_position,
                                                      history=history, now=now))
        if sources.syslog.enabled and "syslog" not in skip:
            await self._start(source_class("syslog")(sources.syslog, self.handle))

    async def stop_source(self, source) -> None:
        if source is self.journal:
            if source.position is not None:  # resumed from here when it starts again
                self.saved_position = source.position
            self.journal = None
        await source.stop()
        self.sources.remove(source)

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
            self.journal = source
        elif source.name == "syslog":
            source.local_senders.own = self.own

    def _snapshot(self, everything: set[str]) -> tuple[dict[str, str], dict[str, dict], set[str]]:
        """The journal position and the failure windows changed since the last snapshot (all
        of them for the jails in `everything`), as of now (on the loop): what the store needs to
        resume exactly here; and the jails whose windows are all listed."""
        position = self.journal.position if self.journal is not None else None
        if position is not None:
            self.saved_position = position
        positions = {"journal": self.saved_position.text()} if self.saved_position else {}
        if self.fleet is not None:
            positions |= self.fleet.state()
        windows, complete = {}, set()
        for name, setup in self.pipeline.jails.items():
            windows[name], whole = setup.jail.changed_windows(name in everything)
            if whole:
                complete.add(name)
        return positions, windows, complete

    def _status_line(self) -> str:
        bans = len(self.pipeline.book)
        failing = [name for name in self.pipeline.jails if self.enforcer and self.enforcer.problem(name)]
        line = f"{len(self.pipeline.jails)} jails, {bans} active bans" + (" (dry run)" if self.dry_run else "")
        if failing:
            line += f"; firewall failing for {', '.join(failing)}"
        if self.recorder.error:
            line += "; store failing"
        return line

    async def _keep_systemd_informed(self) -> None:
        await self.notifier.keep_informed(self._status_line)

    async def _expire_periodically(self) -> None:
        book = self.pipeline.book
        while True:
            await asyncio.sleep(1.0)
            for ban in book.expire(time.time()):
                self.lift(ban, ban.end, "ban ended")

