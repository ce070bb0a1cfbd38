"""`jailwarden teardown`: remove what the agent made in the firewall (sets, chains, tables, hook
rules; bans included), through each backend's own `teardown()`. Run by the packages when the
package is removed, with the agent stopped.

What is torn down: every jail of the configuration, with its backend ("auto" decided as the agent
decides it), and every jail the store remembers with the backend it was built with (a jail
removed from the config, or moved to another backend, since the agent last ran).
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import TextIO

from firewall import BackendError, backend_class

STORE_FILE = "jailwarden.db"  # agent/daemon.py's, not imported: the daemon pulls in every source


def stored_backends(state_dir: Path) -> dict[str, tuple[str, str]]:
    """{jail: (backend, options JSON)} as the agent last recorded them; empty without a store."""
    path = state_dir / STORE_FILE
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return {jail: (backend, options) for jail, backend, options
                    in db.execute("SELECT jail, backend, options FROM backends")}
    except sqlite3.Error:  # a store from before backends were recorded, or unreadable
        return {}


def agent_running(path: Path) -> bool:
    """Whether a daemon answers on the control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def teardown(config_path: Path, out: TextIO, err: TextIO) -> int:
    """0 when everything found was removed (or nothing was there), 1 when something could not be."""
    from agent.config import ConfigErrors, load_config
    from agent.enforcement import backend_options, backend_settings

    wanted: dict[tuple[str, str, str], dict] = {}  # (jail, backend, options JSON) -> options
    state_dir, control = Path("/var/lib/jailwarden"), Path("/run/jailwarden/control.sock")
    try:
        config = load_config(config_path)
    except ConfigErrors as errors:
        err.write(f"jailwarden: {config_path} has problems ({len(errors.errors)}); tearing down only what the "
                  f"store at {state_dir} names\n")
    else:
        state_dir, control = config.agent.state_dir, config.agent.socket
        for jail in config.jails:
            wanted[(jail, *backend_settings(config, jail))] = backend_options(config, jail)
    if agent_running(control):
        err.write(f"jailwarden: the agent is running (it answers on {control}): stop it first, or it puts "
                  "its bans back\n")
        return 1
    for jail, (name, options) in stored_backends(state_dir).items():
        wanted.setdefault((jail, name, options), json.loads(options))
    status = 0
    for (jail, name, _), options in wanted.items():
        try:
            backend_class(name)(jail, **options).teardown()
        except (BackendError, ImportError, OSError, ValueError) as error:
            err.write(f"jailwarden: jail {jail}: firewall backend {name}: not removed: {error}\n")
            status = 1
        else:
            out.write(f"jail {jail}: firewall backend {name}: removed\n")
    return status
