"""Another node's fleet events applied to this agent's jails: its bans (for the time they have
left, never on an address this node protects) and unbans, and bans earned by the fleet's count.

Times. Each node writes its own clock into its events, and clocks differ; the stream entry's ID
carries Redis's clock. So an event's times are moved onto this node's clock by how long ago Redis
took it (its age), not read as they are: a node running ahead does not see every ban as ended.

Replays. Someone with write access to Redis but without the key cannot make an event, but could
copy a validly signed one back into the stream (a ban since lifted, or the newest ban again, to
stretch it). A node's events carry strictly increasing times and are published in order, so
only an event newer than the newest applied from the same node is applied; the newest per node
is kept in the store. (A node whose clock steps back has its events refused until its clock has
caught up; each refusal is logged.)
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from agent.addresses import Address
from agent.bans import BanPolicy
from agent.fleet_events import FleetEvent

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("jailwarden.fleet")

class FleetApplier:
    def __init__(self, agent: Agent, node: str) -> None:
        self.agent = agent
        self.node = node
        self.seen: dict[str, float] = {}  # node -> the time of its newest event applied here

    def apply(self, event: FleetEvent, now: float, age: float) -> str:
        """Apply an event Redis took `age` seconds ago; returns the counter it adds to."""
        if event.node == self.node:
            return "own"
        newest = self.seen.get(event.node, -math.inf)
        if event.time == newest:
            return "duplicate"  # delivered twice
        if event.time < newest:
            log.warning("fleet: refused a %s of %s in jail %s from node %s: older than that node's newest event "
                        "(copied back into the stream, or that node's clock stepped back)", event.kind,
                        event.address, event.jail, event.node)
            return "replayed"
        self.seen[event.node] = event.time
        shift = now - max(0.0, age) - event.time  # the sender's clock onto ours
        agent = self.agent
        setup, config = agent.pipeline.jails.get(event.jail), agent.config.jails.get(event.jail)
        if setup is None or config is None or not config.accept:
            return "not_accepted"
        book = agent.pipeline.book
        current = book.current(event.jail, event.address)
        if event.kind == "unban":
            if current is None or current.start > event.time + shift:  # not banned, or banned again since
                return "duplicate"
            book.unban(event.jail, event.address, now)
            setup.jail.forget(event.address)
            agent.lift(current, now, f"unbanned on node {event.node}")
            return "applied"
        end = event.end + shift
        if end <= now:
            return "expired"
        refusal = agent.protection(event.jail, event.address)
        if refusal is not None:
            log.warning("jail %s: not applying node %s's ban of %s: %s", event.jail, event.node, event.address,
                        refusal)
            return "protected"
        if current is not None and current.end >= end:
            return "duplicate"
        start = min(now, event.start + shift)
        ban = book.ban((event.jail, event.address), start, BanPolicy(end - start),
                       reason=f"node {event.node}: {event.reason}")
        if current is None:
            agent.banned(ban, share=False)
        else:
            agent.enforce(ban)
        return "applied"

    def count_reached(self, jail: str, address: Address, total: int, now: float) -> bool:
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
