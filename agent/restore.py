"""Start-up: the agent's state back from the store, reconciled with what the firewall holds.

- Ban history, active bans and failure windows come back from the store; bans that ended while
  the agent was down are ended at the first expiry check (unbanned, moved to history).
- For each jail whose backend could be set up: a stored ban the firewall lacks (a crash before
  the backend call, an administrator's flush, a reboot) is banned again with the time it has
  left; a ban the firewall holds that the store lacks (a crash before the store's write) is
  adopted with the kernel's time left, or one more bantime where the firewall keeps none.
- A jail whose backend cannot be set up gets its stored bans queued; they go in once it works.
- A jail removed from the config while the agent was stopped has what its backend made torn down
  (bans included) and its stored state dropped; a jail whose backend changed has the old one's
  torn down, its bans going into the new one. If tearing down fails, a removed jail's state is
  kept and the next start tries again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.addresses import Address
from agent.bans import Ban
from agent.enforcement import backend_settings, rebuilt_backend
from agent.sources.journal import Position
from firewall import BackendError

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
    for jail in agent.enforcer.jails():
        agent.recorder.backend(jail, *backend_settings(agent.config, jail))
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
    await _forget_gone_jails(agent, gone, await _tear_down_old_backends(agent, loaded.backends))
    agent.fleet_state = {name: text for name, text in loaded.positions.items() if name.startswith("fleet")}
    text = loaded.positions.get("journal")
    if text is not None:
        try:
            agent.saved_position = Position.from_text(text)
        except ValueError as error:
            log.error("the stored journal position %r is unreadable (%s); reading back history instead", text, error)
    log.info("restored from %s: %d active bans, %d ended while stopped, %d failure windows, %d past bans",
             agent.recorder.path, len(loaded.bans), len(loaded.ended), restored, len(loaded.history))
    return active


async def _tear_down_old_backends(agent: Agent, stored: dict[str, tuple[str, str]]) -> dict[str, bool]:
    """Tear down the backends of stored jails no longer configured, or configured with another
    backend or other options; {jail: whether it worked}."""
    if agent.enforcer is None:  # a dry run never touches the firewall
        return {}
    done = {}
    for jail, (name, options) in stored.items():
        if jail in agent.pipeline.jails:
            if backend_settings(agent.config, jail) == (name, options):
                continue
            why = f"its firewall backend changed while the agent was stopped (was {name} with {options})"
        else:
            why = "it is no longer configured"
        try:
            await asyncio.to_thread(rebuilt_backend(jail, name, options).teardown)
        except (BackendError, ImportError, OSError, ValueError, TypeError) as error:
            log.error("jail %s: %s, but what backend %s made cannot be removed: %s; %s", jail, why, name, error,
                      "tried again at the next start" if jail not in agent.pipeline.jails else "remove it by hand")
            done[jail] = False
            continue
        log.warning("jail %s: %s: what backend %s made is removed, bans included", jail, why, name)
        done[jail] = True
    return done


async def _forget_gone_jails(agent: Agent, gone: dict[str, int], torn_down: dict[str, bool]) -> None:
    """Drop the stored state of jails no longer configured, unless their firewall entries are
    still to be removed (kept for the next start to try again)."""
    for name in set(gone) | {jail for jail in torn_down if jail not in agent.pipeline.jails}:
        count = gone.get(name, 0)
        if torn_down.get(name) is False:
            log.warning("jail %s is no longer configured: its %d stored bans are kept until its firewall entries "
                        "can be removed", name, count)
            continue
        if name in torn_down:
            log.warning("jail %s is no longer configured: its %d stored bans lifted and its failure windows "
                        "dropped", name, count)
        else:  # a store from before backends were recorded, or a dry run
            log.warning("jail %s is no longer configured: %d stored bans and its failure windows dropped (kernel "
                        "entries with a timeout end on their own; others stay until removed by hand)", name, count)
        agent.recorder.drop_jail(name)


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
