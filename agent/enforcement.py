"""Enforcement: the ban book's decisions applied to each jail's firewall backend.

Backend calls run in a worker thread (netlink and libxtables calls block), one jail at a time
per backend instance, so the event loop never waits on the kernel. Operations are queued per
jail with the last one per address winning (a ban then an unban before either ran is just an
unban). A backend that fails keeps its queue and is retried with exponential backoff (1 s up
to 5 min) while the other jails go on; its setup is retried first if that is what failed. A
ban's end is absolute, so a ban applied late is not made longer: its ttl is what is left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.addresses import Address
from agent.config import Config
from firewall import Backend, BackendError, Target, backend_class
from firewall.detect import detect_backend

log = logging.getLogger("jailwarden.firewall")

_FIRST_RETRY = 1.0
_LAST_RETRY = 300.0
_SCOPED = ("ipset", "nftables", "iptables")  # the backends that can ban only some ports
AUTO = "auto"
_detected: tuple[str, str] | None = None  # what "auto" means on this host: (backend, why)


def auto_backend() -> str:
    """The backend `backend = "auto"` stands for, probed once per process (the host's firewall
    does not change kind while the agent runs) and logged once."""
    global _detected
    if _detected is None:
        _detected = detect_backend()
        log.info('backend = "auto": using %s: %s', *_detected)
    return _detected[0]


def backend_name(config: Config, jail: str) -> str:
    """The jail's firewall backend, "auto" resolved."""
    name = config.jails[jail].backend
    return auto_backend() if name == AUTO else name


def backend_options(config: Config, jail: str) -> dict:
    """What the jail's backend is built with: [firewall.NAME] and the jail's port scoping."""
    settings, name = config.jails[jail], backend_name(config, jail)
    options = dict(config.firewall.get(name, {}))
    if settings.ports and name in _SCOPED:
        options |= {"ports": settings.ports, "protocol": settings.protocol}
    return options


def backend_settings(config: Config, jail: str) -> tuple[str, str]:
    """(backend name, options as JSON) of the jail, as the store keeps them: "auto" resolved, so a
    host whose firewall changed kind has the old backend's objects removed at start; paths as
    text, which every backend accepts."""
    return backend_name(config, jail), json.dumps(backend_options(config, jail), sort_keys=True, default=str)


def rebuilt_backend(jail: str, name: str, options: str) -> Backend:
    """The backend `backend_settings` described, built again from the store's (name, options JSON)
    to tear down what it made; raises what building a backend raises (TypeError for options
    that backend no longer takes)."""
    return backend_class(name)(jail, **json.loads(options))


def build_backends(config: Config, jails: list[str]) -> tuple[dict[str, Backend], list[str]]:
    """One backend instance per jail, with [firewall.NAME] options and the jail's port scoping
    (backend "auto" decided by what the host's firewall uses); a jail whose backend cannot be
    built (a library missing) is reported and left out."""
    backends, problems = {}, []
    for jail in jails:
        settings, name = config.jails[jail], backend_name(config, jail)
        if settings.ports and name not in _SCOPED:
            problems.append(f"jail {jail}: backend {name} cannot ban single ports; "
                            f"ports = {list(settings.ports)} is ignored and all traffic is banned")
        try:
            backends[jail] = backend_class(name)(jail, **backend_options(config, jail))
        except (BackendError, ImportError, OSError, ValueError) as error:
            problems.append(f"jail {jail}: firewall backend {name} unusable: {error}")
    return backends, problems


@dataclass(slots=True)
class _Lane:
    """One jail's backend, its pending operations and its health."""

    jail: str
    backend: Backend
    ready: bool = False  # setup() succeeded
    pending: dict[Target, float | None] = field(default_factory=dict)  # target -> ban end (inf: permanent), None: unban
    applying: int = 0  # operations taken from `pending` and not yet done
    failing_since: float | None = None
    problem: str | None = None  # the error while failing, for status
    retry_in: float = field(default_factory=lambda: _FIRST_RETRY)  # read when the lane is made
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # One backend call at a time, held until the call's thread has finished, also when the task
    # that made it is cancelled: a teardown never runs beside a ban still being written.
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)


class Enforcer:
    """`wanted(jail)` is what the jail's firewall should hold, {address: end}: every
    `reconcile_interval` seconds, and whenever a failing backend works again (its setup is run
    again first, which repairs sets, chains and hooks), what it lacks is put back."""

    def __init__(self, backends: dict[str, Backend], clock: Callable[[], float] = time.time,
                 wanted: Callable[[str], dict[Target, float]] | None = None,
                 reconcile_interval: float = 60.0) -> None:
        self._lanes = {jail: _Lane(jail, backend) for jail, backend in backends.items()}
        self._clock = clock
        self._wanted = wanted
        self._reconcile_interval = reconcile_interval
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> dict[str, dict[Target, float | None]]:
        """Set every backend up and return what each already holds (`list()`), for the caller to
        adopt; a backend that cannot be set up is left out, and retried in the background."""
        found = {}
        for lane in list(self._lanes.values()):
            held = await self._start_lane(lane)
            if held is not None:
                found[lane.jail] = held
        return found

    async def stop(self, teardown: bool = False) -> None:
        """Stop after applying what is queued. Bans stay in the kernel (they outlive the agent)
        unless `teardown`: then each backend removes what it created, bans included."""
        for lane in self._lanes.values():
            if lane.pending and lane.ready:
                try:
                    await self._apply(lane)
                except BackendError as error:
                    log.error("jail %s: at stop: %s; %d operations not applied", lane.jail, error, len(lane.pending))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if teardown:
            for lane in self._lanes.values():
                try:
                    await self._call(lane, "teardown", lane.backend.teardown)
                    log.warning("jail %s: firewall bans lifted at stop (keep_bans_on_stop = false)", lane.jail)
                except BackendError as error:
                    log.error("jail %s: at stop: %s", lane.jail, error)

    async def add(self, jail: str, backend: Backend) -> dict[Target, float | None]:
        """A jail added by a reload: set up, started, and what its backend already holds returned."""
        lane = self._lanes[jail] = _Lane(jail, backend)
        return await self._start_lane(lane) or {}

    async def _start_lane(self, lane: _Lane) -> dict[Target, float | None] | None:
        """Set the lane's backend up and start its worker; what the backend holds, or None when
        setup failed (the worker retries it)."""
        held = None
        try:
            await self._call(lane, "setup", lane.backend.setup)
            lane.ready = True
            held = await self._call(lane, "list", lane.backend.list)
        except BackendError as error:
            self._failed(lane, error)
        self._tasks.append(asyncio.create_task(self._work(lane), name=f"firewall {lane.jail}"))
        return held

    async def remove(self, jail: str) -> None:
        """A jail gone with a reload: its worker stopped and its backend torn down, which lifts
        every ban it held and removes what it created."""
        lane = self._lanes.pop(jail, None)
        if lane is None:
            return
        for task in [task for task in self._tasks if task.get_name() == f"firewall {jail}"]:
            task.cancel()
            self._tasks.remove(task)
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self._call(lane, "teardown", lane.backend.teardown)
        except BackendError as error:
            log.error("jail %s is removed, but not what its firewall backend made: %s; its bans stay in the "
                      "firewall until removed by hand", jail, error)

    def jails(self) -> list[str]:
        """The jails with a backend."""
        return list(self._lanes)

    def ban(self, jail: str, address: Address, end: float) -> None:
        self._queue(jail, address, end)

    def unban(self, jail: str, address: Address) -> None:
        self._queue(jail, address, None)

    def pending(self) -> int:
        """Operations queued or under way, not yet in the kernel."""
        return sum(len(lane.pending) + lane.applying for lane in self._lanes.values())

    def _queue(self, jail: str, target: Target, end: float | None) -> None:
        lane = self._lanes.get(jail)
        if lane is None:
            return
        lane.pending[target] = end
        lane.wakeup.set()

    async def _work(self, lane: _Lane) -> None:
        while True:
            check = lane.failing_since is not None
            if check:
                await asyncio.sleep(lane.retry_in)
            else:
                try:
                    await asyncio.wait_for(lane.wakeup.wait(), self._reconcile_interval)
                except TimeoutError:
                    check = True
            lane.wakeup.clear()
            try:
                if not lane.ready:
                    await self._call(lane, "setup", lane.backend.setup)
                    lane.ready = True
                if check:
                    await self._reconcile(lane)
                await self._apply(lane)
            except BackendError as error:
                # Set up again before the next try: what failed may be a set or chain deleted by hand.
                lane.ready = False
                self._failed(lane, error)
                continue
            if lane.failing_since is not None:
                log.warning("jail %s: firewall backend %s works again after %.0f s", lane.jail, lane.backend.name,
                            self._clock() - lane.failing_since)
                lane.failing_since, lane.retry_in, lane.problem = None, _FIRST_RETRY, None

    async def _reconcile(self, lane: _Lane) -> None:
        """Queue the bans the firewall should hold and does not (not those already queued)."""
        if self._wanted is None:
            return
        held = await self._call(lane, "list", lane.backend.list)
        now = self._clock()
        missing = {target: end for target, end in self._wanted(lane.jail).items()
                   if target not in held and target not in lane.pending and end > now}
        if missing:
            log.warning("jail %s: %d bans were missing from the firewall (removed by hand, or the firewall was "
                        "reloaded); putting them back", lane.jail, len(missing))
            lane.pending.update(missing)

    async def _apply(self, lane: _Lane) -> None:
        """Bans in one batch, then each unban; what failed goes back into the queue (unless newer
        orders for it came meanwhile) and the first error is raised. Unbans do not wait for bans
        that fail. Items `ban_many` refused for good (a partial BackendError) are reported, not retried."""
        batch, lane.pending = lane.pending, {}
        now = self._clock()
        bans = [(target, None if end == math.inf else end - now)
                for target, end in batch.items() if end is not None and end > now]
        unbans = [target for target, end in batch.items() if end is None]
        lane.applying = len(batch)
        failed: dict[Target, float | None] = {}
        first_error: BackendError | None = None
        try:
            if bans:
                try:
                    await self._call(lane, "ban", lane.backend.ban_many, bans)
                except BackendError as error:
                    if error.partial:
                        log.error("jail %s: %s; the rest is banned, these are not retried", lane.jail, error)
                    else:
                        failed.update((target, batch[target]) for target, _ in bans)
                        first_error = error
            for index, target in enumerate(unbans):
                try:
                    await self._call(lane, f"unban {target}", lane.backend.unban, target)
                except BackendError as error:
                    failed.update((later, None) for later in unbans[index:])
                    first_error = first_error or error
                    break
        finally:
            lane.applying = 0
            lane.pending = failed | lane.pending
        if first_error is not None:
            raise first_error

    @staticmethod
    async def _call(lane: _Lane, action: str, function: Callable, *args) -> object:
        """`function(*args)` in a worker thread; an exception a backend did not foresee (a bug, or
        a library raising what it does not document) becomes a BackendError, so it is retried and
        reported like any other instead of ending the jail's worker."""
        async with lane.busy:
            call = asyncio.ensure_future(asyncio.to_thread(function, *args))
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                await asyncio.wait([call])  # a thread cannot be stopped: let it finish first
                raise
            except BackendError:
                raise
            except Exception as error:  # noqa: BLE001 - reported with its traceback, then retried
                log.error("jail %s: firewall backend %s: %s failed unexpectedly", lane.jail, lane.backend.name,
                          action, exc_info=True)
                raise BackendError(lane.backend.name, f"{action} in jail {lane.jail}",
                                   f"unexpected {type(error).__name__}: {error}") from error

    def problem(self, jail: str) -> str | None:
        """Why the jail's backend is failing now, or None when it works (or the jail has none)."""
        lane = self._lanes.get(jail)
        return lane.problem if lane is not None else None

    def _failed(self, lane: _Lane, error: BackendError) -> None:
        lane.problem = str(error)
        if lane.failing_since is None:
            lane.failing_since = self._clock()
            log.error("jail %s: %s; retrying, the other jails go on", lane.jail, error)
        else:
            log.debug("jail %s: still failing: %s", lane.jail, error)
            lane.retry_in = min(lane.retry_in * 2, _LAST_RETRY)
