"""What the control socket may ask of the running agent: status, bans, a manual ban or unban,
reload. Arguments arrive as JSON values from `jailwarden` (agent/control.py calls these methods
by name); results go back as JSON. A request the agent refuses raises ControlError with why."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.addresses import parse_address, parse_network
from agent.bans import Ban
from agent.config_values import parse_duration
from agent.control import ControlError, UnknownJail
from agent.enforcement import backend_name

if TYPE_CHECKING:
    from agent.daemon import Agent

VERSION = "0.1.0"


def ban_record(ban: Ban, now: float) -> dict:
    return {"jail": ban.jail, "address": str(ban.address), "start": ban.start,
            "end": None if ban.permanent else ban.end,
            "remaining": None if ban.permanent else max(0.0, ban.end - now),
            "offence": ban.offence, "reason": ban.reason}


class Commands:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def status(self, jail: str | None = None) -> dict:
        agent, now = self.agent, time.time()
        if jail is not None:
            return {"jail": self._jail(jail), **self._jail_status(jail),
                    "banned": [ban_record(ban, now) for ban in agent.pipeline.book.active(jail)]}
        sources = {}
        for source in agent.sources:
            stats = source.stats()
            sources[source.name] = {"running": True, "lag": agent.lag(source),
                                    "events": stats.get("delivered", stats.get("received", 0)),
                                    "dropped": sum(value for key, value in stats.items() if key.startswith("dropped")),
                                    "counts": stats}
        return {"version": VERSION, "dry_run": agent.dry_run, "uptime": now - agent.started,
                "store_error": agent.recorder.error,
                "jails": {name: self._jail_status(name) for name in agent.pipeline.jails},
                "sources": sources, "fleet": agent.fleet.stats() if agent.fleet is not None else None,
                "actions": agent.actions.stats(),
                "reports": agent.reporting.stats() if agent.reporting is not None else {}}

    def bans(self, jail: str | None = None) -> list[dict]:
        now = time.time()
        return [ban_record(ban, now) for ban in self.agent.pipeline.book.active(
            self._jail(jail) if jail is not None else None)]

    def ban(self, jail: str, address: str, duration: str | None = None) -> dict:
        self._jail(jail)
        target = self._address(address)
        seconds = None
        if duration is not None:
            try:
                seconds = parse_duration(duration, permanent=True)
            except (TypeError, ValueError) as error:
                raise ControlError(f"duration {duration!r}: {error}") from None
        refusal = self.agent.protection(jail, target)
        if refusal is not None:
            raise ControlError(f"{target} is not banned: {refusal}")
        return ban_record(self.agent.manual_ban(jail, target, seconds), time.time())

    def report(self, jail: str, address: str, reason: str | None = None) -> dict:
        """An application's report of one failure from `address`, counted in `jail` as a log line's is."""
        self._jail(jail)
        try:
            target = parse_address(address)
        except ValueError as error:
            raise ControlError(f"{address!r}: {error}") from None
        outcome = self.agent.report_failure(jail, target, (reason or "reported by an application")[:1024])
        answer = {"jail": jail, "address": str(target), "outcome": outcome.kind}
        if outcome.ban is not None:
            answer["ban"] = ban_record(outcome.ban, time.time())
        return answer

    def unban(self, address: str | None = None, jail: str | None = None, all: bool = False) -> dict:  # noqa: A002
        if jail is not None:
            self._jail(jail)
        if all == (address is not None):
            raise ControlError("give an address or all = true, not both")
        target = self._address(address) if address is not None else None
        lifted = self.agent.manual_unban(jail, target)
        if target is not None and not lifted:
            where = f"jail {jail}" if jail is not None else "any jail"
            raise ControlError(f"{target} is not banned in {where}")
        now = time.time()
        return {"lifted": [ban_record(ban, now) for ban in lifted]}

    async def reload(self) -> dict:
        return {"changes": await self.agent.reload()}

    def _jail_status(self, name: str) -> dict:
        agent = self.agent
        setup = agent.pipeline.jails[name]
        problem = agent.enforcer.problem(name) if agent.enforcer is not None else None
        counters = agent.counters.get(name, {})
        backend = "dry run" if agent.dry_run else backend_name(agent.config, name)
        return {"filter": setup.filter.name, "backend": backend,
                "backend_ok": problem is None, "backend_error": problem,
                "active_bans": agent.pipeline.book.count(name), "tracked": setup.jail.tracked(),
                "failures": counters.get("failures", 0), "bans": counters.get("bans", 0),
                "untrusted": counters.get("untrusted", 0),
                "lines_too_long": setup.filter.lines_too_long}

    def _jail(self, name: object) -> str:
        if not isinstance(name, str) or name not in self.agent.pipeline.jails:
            running = ", ".join(self.agent.pipeline.jails) or "none"
            raise UnknownJail(f"no running jail {name!r} (running: {running})")
        return name

    @staticmethod
    def _address(text: object):
        """An address, or a network in CIDR notation (a prefix ban)."""
        try:
            if "/" in str(text):
                network = parse_network(str(text))
                if network.prefixlen == 0:
                    raise ValueError("a /0 network would ban everyone")
                return network
            return parse_address(str(text))
        except ValueError as error:
            raise ControlError(f"{text!r} is not an IP address or network: {error}") from None
