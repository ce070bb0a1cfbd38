"""`jailwarden teardown`: remove what the agent made in the firewall (sets, chains, tables, hook
rules; bans included), through each backend's own `teardown()`. Run by the packages when the
package is removed, with the agent stopped.

What is torn down: every jail of the configuration, with its backend ("auto" decided as the agent
decides it), and every jail the store remembers with the backend it was built with (a jail
removed from the config, or moved to another backend, since the agent last ran).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TextIO

from firewall import BackendError


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
    from agent.enforcement import backend_settings, rebuilt_backend
    from agent.store import STORE_FILE, read_backends

    wanted: dict[tuple[str, str, str], None] = {}  # (jail, backend, options JSON), configured ones first
    state_dir, control = Path("/var/lib/jailwarden"), Path("/run/jailwarden/control.sock")
    try:
        config = load_config(config_path)
    except ConfigErrors as errors:
        err.write(f"jailwarden: {config_path} has problems ({len(errors.errors)}); tearing down only what the "
                  f"store at {state_dir} names\n")
    else:
        state_dir, control = config.agent.state_dir, config.agent.socket
        wanted.update(((jail, *backend_settings(config, jail)), None) for jail in config.jails)
    if agent_running(control):
        err.write(f"jailwarden: the agent is running (it answers on {control}): stop it first, or it puts "
                  "its bans back\n")
        return 1
    wanted.update(((jail, *settings), None) for jail, settings in read_backends(state_dir / STORE_FILE).items())
    status = 0
    for jail, name, options in wanted:
        try:
            rebuilt_backend(jail, name, options).teardown()
        except (BackendError, ImportError, OSError, ValueError, TypeError) as error:
            err.write(f"jailwarden: jail {jail}: firewall backend {name}: not removed: {error}\n")
            status = 1
        else:
            out.write(f"jail {jail}: firewall backend {name}: removed\n")
    return status
