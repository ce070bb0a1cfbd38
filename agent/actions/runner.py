"""Runs the jails' actions off the ban path: each action has its own bounded queue and one worker
task, so a slow or failing action delays nothing but itself, never a ban.

A notice that fails is tried again after 1, 2, 4 ... seconds (or what the far end asked for with
ActionFailed.retry_after), up to `retries` times; one that still fails, or fails permanently, is
counted and logged. When the queue is full, the oldest waiting notice is dropped and counted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from agent.actions import ActionError, ActionFailed, BanNotice, action_class
from agent.bans import Ban
from agent.evidence import Line

log = logging.getLogger("jailwarden.actions")

QUEUE = 1000  # notices waiting per action
RETRIES = 3  # tries after the first
TIMEOUT = 30.0  # seconds one delivery may take
_BACKOFF_MAX = 300.0
_COUNTERS = ("queued", "done", "retried", "failed", "dropped")


@dataclass(slots=True)
class _Lane:
    name: str
    action: object
    queue: deque = field(default_factory=lambda: deque(maxlen=QUEUE))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    counts: dict = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    last_error: str | None = None
    task: asyncio.Task | None = None


def build_actions(tables: dict[str, dict], wanted: set[str]) -> tuple[dict[str, object], list[str]]:
    """The actions named by some jail, built from their [actions.NAME] tables (`type` chooses the
    implementation, NAME by default); those that cannot be built are left out, with the reason."""
    actions, problems = {}, []
    for name in sorted(wanted):
        options = dict(tables.get(name, {}))
        reference = options.pop("type", name)
        try:
            actions[name] = action_class(reference)(**options)
        except (ActionError, TypeError, ValueError, OSError) as error:
            problems.append(f"action {name}: not started: {error}")
    return actions, problems


class ActionRunner:
    def __init__(self, actions: dict[str, object], jail_actions: dict[str, tuple[str, ...]],
                 retries: int = RETRIES, backoff: float = 1.0, timeout: float = TIMEOUT) -> None:
        self.lanes = {name: _Lane(name, action) for name, action in actions.items()}
        self.jail_actions = jail_actions
        self.retries, self.backoff, self.timeout = retries, backoff, timeout

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.task = asyncio.create_task(self._work(lane), name=f"action {lane.name}")

    async def stop(self, grace: float = 2.0) -> None:
        """Give waiting notices `grace` seconds, then stop; what is left is logged."""
        deadline = time.monotonic() + grace
        while any(lane.queue for lane in self.lanes.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for lane in self.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self.lanes.values() if lane.task), return_exceptions=True)
        for lane in self.lanes.values():
            if lane.queue:
                log.warning("action %s: %d notices not delivered at stop", lane.name, len(lane.queue))
            close = getattr(lane.action, "close", None)  # an action that holds notices sends them now
            if close is None:
                continue
            try:
                result = close() if inspect.iscoroutinefunction(close) else asyncio.to_thread(close)
                await asyncio.wait_for(result, self.timeout)
            except Exception as error:  # noqa: BLE001
                log.error("action %s: closing failed: %s", lane.name, str(error) or repr(error))

    def wanted_by(self, jail: str) -> bool:
        """Does `jail` have actions (so that the lines leading to its bans are worth keeping)?"""
        return bool(self.jail_actions.get(jail))

    def notify(self, kind: str, ban: Ban, failures: int = 0, evidence: tuple[Line, ...] = ()) -> None:
        """Queue `kind` ("ban" or "unban") of `ban` for each action of its jail; never waits.
        A jail's ban comes with its failure count and the lines that led to it."""
        names = self.jail_actions.get(ban.jail, ())
        if not names:
            return
        notice = BanNotice.of(kind, ban, failures, evidence)
        for name in names:
            lane = self.lanes.get(name)
            if lane is None:
                continue
            if len(lane.queue) == lane.queue.maxlen:
                lane.counts["dropped"] += 1
            lane.queue.append(notice)
            lane.counts["queued"] += 1
            lane.wake.set()

    def stats(self) -> dict[str, dict]:
        return {name: lane.counts | {"waiting": len(lane.queue), "last_error": lane.last_error}
                for name, lane in self.lanes.items()}

    async def _work(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                lane.wake.clear()
                await lane.wake.wait()
            notice = lane.queue.popleft()
            await self._deliver(lane, notice)

    async def _deliver(self, lane: _Lane, notice: BanNotice) -> None:
        method = getattr(lane.action, "on_ban" if notice.kind == "ban" else "on_unban", None)
        if method is None:
            return
        for attempt in range(self.retries + 1):
            try:
                if inspect.iscoroutinefunction(method):
                    await asyncio.wait_for(method(notice), self.timeout)
                else:
                    await asyncio.wait_for(asyncio.to_thread(method, notice), self.timeout)
                lane.counts["done"] += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a plug-in may fail any way; it must not end the lane
                reason = "timed out" if isinstance(error, TimeoutError) else str(error) or repr(error)
                lane.last_error = f"{notice.kind} {notice.address} in {notice.jail}: {reason}"
                permanent = isinstance(error, ActionFailed) and error.permanent
                if permanent or attempt == self.retries:
                    lane.counts["failed"] += 1
                    log.error("action %s: %s of %s in jail %s failed%s: %s", lane.name, notice.kind,
                              notice.address, notice.jail, "" if permanent else f" {attempt + 1} times", reason)
                    return
                lane.counts["retried"] += 1
                wait = self.backoff * 2 ** attempt
                if isinstance(error, ActionFailed) and error.retry_after is not None:
                    wait = max(wait, error.retry_after)
                await asyncio.sleep(min(wait, _BACKOFF_MAX))
