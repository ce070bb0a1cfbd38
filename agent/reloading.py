"""Reload (SIGHUP, `jailwarden reload`): the configuration read again and applied to the
running agent, or refused as a whole, leaving the agent exactly as it was.

- A jail whose settings and filter file are unchanged keeps its counters and bans.
- A changed jail gets its new filter and settings and keeps its failure windows and bans; when
  its firewall backend or the backend's options changed, the old backend is torn down and its
  bans are put into the new one.
- A removed (or disabled) jail's bans are lifted and its backend torn down; a new jail starts.
- The journal source restarts from its position when the jails' journal matches changed; a
  source whose own settings changed restarts. `[agent]` paths, the report endpoints' settings,
  history_window and reconcile_interval, `[metrics]` and `[fleet]` take effect at the next start
  (the reload says so); a jail's share, accept, fleet_count and aggregate apply at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agent.config import ConfigErrors
from agent.control import ControlError
from agent.enforcement import backend_settings, build_backends
from agent.jails import build_jails
from agent.permissions import load_trusted_config
from agent.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("jailwarden")
_RESTART_ONLY = ("state_dir", "socket", "report_socket", "report_group", "report_rate", "report_burst", "report_http",
                 "report_token_file", "history_window", "reconcile_interval", "protect_sessions", "utmp")


async def reload(agent: Agent) -> list[str]:
    """Apply the configuration file again; the changes made, in words. ControlError if refused."""
    if agent.config_path is None:
        raise ControlError("the agent was started without a configuration file to read again")
    try:
        config = await asyncio.to_thread(load_trusted_config, agent.config_path)
    except ConfigErrors as errors:
        raise ControlError("configuration not reloaded, the running one is kept: "
                           + "; ".join(str(error) for error in errors.errors)) from None
    setups, problems = await asyncio.to_thread(build_jails, config, agent.filter_dir)
    new = {setup.name: setup for setup in setups}
    failed = [problem for problem in problems if ": not started: " in problem]
    if failed:
        raise ControlError("configuration not reloaded, the running one is kept: " + "; ".join(failed))
    old, old_config = agent.pipeline.jails, agent.config
    rebuilt = [name for name in new if name in old and _backend_changed(old_config, config, name)]
    backends = {}
    if agent.enforcer is not None:
        wanted = [name for name in new if name not in old] + rebuilt
        backends, unusable = build_backends(config, wanted)
        if unusable:
            raise ControlError("configuration not reloaded, the running one is kept: " + "; ".join(unusable))
    # From here on nothing is refused: apply. First everything the event path sees, with no
    # await in between, so no event reaches a jail half removed or half replaced.
    changes: list[str] = []
    now, book = time.time(), agent.pipeline.book
    removed = [name for name in old if name not in new]
    for name in removed:
        for ban in book.active(name):
            book.unban(name, ban.address, now)
            agent.recorder.lifted(ban, now)
        agent.recorder.drop_jail(name)
        agent.counters.pop(name, None)
        agent.evidence.forget(name)
        changes.append(f"jail {name} removed, its bans lifted")
    for name, setup in new.items():
        if name not in old:
            changes.append(f"jail {name} added")
            agent.counters[name] = {"failures": 0, "bans": 0, "untrusted": 0}
        elif setup.fingerprint == old[name].fingerprint and old_config.jails[name] == config.jails[name]:
            new[name] = old[name]  # unchanged: counters and all
        else:
            setup.jail.take_over(old[name].jail, now)
            if setup.prefixes is not None and old[name].prefixes is not None \
                    and setup.prefixes.rule == old[name].prefixes.rule:
                setup.prefixes = old[name].prefixes  # the addresses banned per prefix so far
            changes.append(f"jail {name} changed")
    protected = agent.pipeline.protected
    agent.pipeline = Pipeline(new.values(), book)
    agent.pipeline.protected = protected
    agent.config = config
    # Then the firewall. Bans decided meanwhile in a jail whose backend is being replaced are put
    # into the new backend with the jail's others.
    if agent.enforcer is not None:
        for name in removed + rebuilt:
            await agent.enforcer.remove(name)
        changes += [f"jail {name}: firewall backend {config.jails[name].backend} set up anew" for name in rebuilt]
        for name, backend in backends.items():
            agent.recorder.backend(name, *backend_settings(config, name))
            await agent.enforcer.add(name, backend)
            for ban in book.active(name):
                agent.enforcer.ban(name, ban.address, ban.end)
    changes += [f"[agent] {key} changed: takes effect at the next start" for key in _RESTART_ONLY
                if getattr(old_config.agent, key) != getattr(config.agent, key)]
    if not agent.dry_run:  # which jail sets off which action applies at once
        agent.actions.jail_actions = {name: config.jails[name].actions for name in new}
    running = set(agent.actions.lanes)
    missing = sorted({action for name in new for action in config.jails[name].actions} - running)
    if missing and not agent.dry_run:
        changes.append(f"actions {', '.join(missing)} not running: they start at the next start")
    for table in ("metrics", "fleet", "actions"):
        if getattr(old_config, table) != getattr(config, table):
            changes.append(f"[{table}] changed: takes effect at the next start")
    changes += await _restart_sources(agent, old_config, old)
    log.warning("reloaded %s: %s", agent.config_path, "; ".join(changes) or "nothing changed")
    return changes


def _backend_changed(old, new, name: str) -> bool:
    before, after = old.jails[name], new.jails[name]
    return ((before.backend, before.ports, before.protocol) != (after.backend, after.ports, after.protocol)
            or old.firewall.get(before.backend) != new.firewall.get(after.backend))


async def _restart_sources(agent: Agent, old_config, old_jails) -> list[str]:
    """Stop the sources whose settings (or, for the journal, the jails' matches) changed, then
    start every enabled source not running (also one that could not start before)."""
    from agent.router import Router

    sources = agent.config.sources
    old_matches = Router(setup.filter for setup in old_jails.values()).journal_matches()
    changed = {"journal": (old_config.sources.journal != sources.journal
                           or old_matches != agent.pipeline.router.journal_matches()),
               "syslog": old_config.sources.syslog != sources.syslog}
    changes = []
    for source in list(agent.sources):
        if changed[source.name]:
            await agent.stop_source(source)
            changes.append(f"{source.name} source stopped")
    before = {source.name for source in agent.sources}
    await agent.start_sources(time.time(), skip=before)
    changes += [f"{source.name} source started" for source in agent.sources if source.name not in before]
    return changes
