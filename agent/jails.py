"""The configured jails built for running: each enabled jail with its filter (compiled for its
mode), its failure counter and its ban policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import Config
from agent.jail import Jail
from agent.pipeline import JailSetup
from parsers.filter import Filter, FilterError
from parsers.filterfile import SHIPPED_DIR, find_filter, load_filter


def build_jails(config: Config, filter_dir: Path) -> tuple[list[JailSetup], list[str]]:
    """The enabled jails with their filters; a jail whose filter cannot be loaded is left out
    and its problem returned, so the others still run."""
    setups, problems = [], []
    filters: dict[tuple[Path, str | None], Filter] = {}
    fingerprints: dict[tuple[Path, str | None], str] = {}
    for name, jail in config.jails.items():
        if not jail.enabled:
            continue
        try:
            if jail.filter.startswith("fail2ban:"):
                raise FilterError(jail.filter, "", "Fail2Ban filters are not supported by this version")
            path = find_filter(jail.filter, [filter_dir, SHIPPED_DIR])
            key = (path, jail.mode)
            if key not in filters:
                filters[key] = load_filter(path, mode=jail.mode)
                fingerprints[key] = f"{path}:{jail.mode}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        except (FilterError, OSError) as error:
            problems.append(f"jail {name}: not started: {error}")
            continue
        flt = filters[key]
        counter = Jail(name, maxretry=jail.maxretry, findtime=jail.findtime, ignore=jail.ignore,
                       require_trusted=jail.require_trusted)
        setups.append(JailSetup(name, flt, counter, jail.policy, fingerprints[key]))
        if jail.require_trusted and not flt.journal and config.sources.journal.enabled:
            problems.append(f"jail {name}: filter {flt.name!r} names no journal fields, so journal entries are "
                            f"known only by SYSLOG_IDENTIFIER, which any local user can write; with "
                            f"require_trusted = true none of them count (syslog from allowed senders still does)")
    return setups, problems


