"""Start-up: the agent's state back from the store, reconciled with what the firewall holds.

- Ban history, active bans and failure windows come back from the store; bans that ended while
  the agent was down are ended at the first expiry check (unbanned, moved to history).
- For each jail whose backend could be set up: a stored ban the firewall lacks (a crash before
  the backend call, an administrator's flush, a reboot) is banned again with the time it has
  left; a ban the firewall holds that the store lacks (a crash before the store's write) is
  adopted with the kernel's time left, or one more bantime where the firewall keeps none.
- A jail whose backend cannot be set up gets its stored bans queued; they go in once it works.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.addresses import Address
from agent.bans import Ban
from agent.sources.journal import Position

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("jailwarden")


async def restore(agent: Agent, now: float, legacy_checkpoint: Path | None) -> None:
    stored = await _from_store(agent, now, legacy_checkpoint)
    # Bans that ended while the agent was stopped end now, before any source is read (a failure
    # read back must start a new, longer ban, not extend the old one) and before reconciling (a
    # firewall without expiry still holds them: they are lifted, not taken over).
    ended = agent.pipeline.book.expire(now)
    for ban in ended:
        agent.lift(ban, ban.end, "ended while the agent was stopped")
    if agent.enforcer is None:
        return
    ended_addresses = {(ban.jail, ban.address) for ban in ended}
    found = await agent.enforcer.start()
    for jail in agent.pipeline.jails:
        bans = stored.get(jail, {})
        if jail in found:
            held = {target: ttl for target, ttl in found[jail].items() if (jail, target) not in ended_addresses}
            _reconcile(agent, jail, bans, held, now)
        else:
            for ban in bans.values():
                agent.enforcer.ban(jail, ban.address, ban.end)


async def _from_store(agent: Agent, now: float, legacy_checkpoint: Path | None) -> dict[str, dict[Address, Ban]]:
    """Load the store into the agent; the active bans per jail."""
    loaded = await agent.recorder.open(now, legacy_checkpoint)
    if loaded is None:
        return {}
    book, jails = agent.pipeline.book, agent.pipeline.jails
    for jail, address, offence, released in loaded.history:
        book.restore_history(jail, address, offence, released)
    active: dict[str, dict[Address, Ban]] = {}
    gone: dict[str, int] = {}
    for ban in loaded.bans:
        if ban.jail in jails:
            book.restore(ban)
            active.setdefault(ban.jail, {})[ban.address] = ban
        else:
            gone[ban.jail] = gone.get(ban.jail, 0) + 1
    for ban in loaded.ended:
        if ban.jail in jails:
            book.restore(ban)  # over: the expiry right after loading lifts it and records it
        else:
            gone[ban.jail] = gone.get(ban.jail, 0) + 1
    restored = 0
    for name, windows in loaded.windows.items():
        if name in jails:
            for address, times in windows.items():
                jails[name].jail.restore(address, times, now)
                restored += 1
        else:
            gone.setdefault(name, 0)
    for name, count in gone.items():
        log.warning("jail %s is no longer configured: %d stored bans and its failure windows dropped (kernel "
                    "entries with a timeout end on their own; others stay until removed by hand)", name, count)
        agent.recorder.drop_jail(name)
    text = loaded.positions.get("journal")
    if text is not None:
        try:
            agent.saved_position = Position.from_text(text)
        except ValueError as error:
            log.error("the stored journal position %r is unreadable (%s); reading back history instead", text, error)
    log.info("restored from %s: %d active bans, %d ended while stopped, %d failure windows, %d past bans",
             agent.recorder.path, len(loaded.bans), len(loaded.ended), restored, len(loaded.history))
    return active


def _reconcile(agent: Agent, jail: str, stored: dict[Address, Ban], held: dict, now: float) -> None:
    book, policy = agent.pipeline.book, agent.pipeline.jails[jail].policy
    missing = [ban for address, ban in stored.items() if address not in held]
    for ban in missing:
        agent.enforcer.ban(jail, ban.address, ban.end)
    adopted = 0
    for target, ttl in held.items():
        if not isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address)) or target in stored:
            continue  # a network banned by hand is not the agent's to own or end
        offence = book.next_offence(jail, target, now)
        end = now + ttl if ttl is not None else now + policy.duration(offence)
        ban = Ban(jail, target, now, end, offence, "found in the firewall at start")
        book.restore(ban)
        agent.recorder.ban(ban)
        adopted += 1
    if stored or adopted:
        log.info("jail %s: %d bans restored (%d put back into the firewall), %d found in the firewall only, "
                 "adopted", jail, len(stored), len(missing), adopted)
