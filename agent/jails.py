"""The configured jails built for running: each enabled jail with its filter (compiled for its
mode), its failure counter and its ban policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import Config
from agent.host import account_uid
from agent.jail import Jail
from agent.pipeline import JailSetup
from parsers.fail2ban import is_fail2ban_reference, load_fail2ban_filter
from parsers.filter import Filter, FilterError, is_trusted_match
from parsers.filterfile import SHIPPED_DIR, files_read, find_filter, load_filter


def _fingerprint(reference: str, mode: str | None, files: list[Path]) -> str:
    # Of every file read (includes, .local): a reload then sees a change in any of them.
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{reference}:{mode}:{digest.hexdigest()}"


def build_jails(config: Config, filter_dir: Path) -> tuple[list[JailSetup], list[str]]:
    """The enabled jails with their filters; a jail whose filter cannot be loaded is left out
    and its problem returned, so the others still run."""
    setups, problems = [], []
    filters: dict[tuple[object, str | None], Filter] = {}
    fingerprints: dict[tuple[object, str | None], str] = {}
    for name, jail in config.jails.items():
        if not jail.enabled:
            continue
        try:
            fail2ban = is_fail2ban_reference(jail.filter)
            if fail2ban:
                key = ((jail.fail2ban_dir, jail.filter), jail.mode)
                if key not in filters:
                    filters[key] = load_fail2ban_filter(jail.filter, jail.fail2ban_dir, mode=jail.mode)
                    fingerprints[key] = _fingerprint(jail.filter, jail.mode, files_read(filters[key]))
            else:
                path = find_filter(jail.filter, [filter_dir, SHIPPED_DIR])
                key = (path, jail.mode)
                if key not in filters:
                    filters[key] = load_filter(path, mode=jail.mode, accounts=account_uid)
                    fingerprints[key] = f"{path}:{jail.mode}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        except (FilterError, OSError) as error:
            problems.append(f"jail {name}: not started: {error}")
            continue
        flt = filters[key]
        if fail2ban:
            problems += _fail2ban_warnings(name, jail, flt, config.sources.journal.enabled)
        counter = Jail(name, maxretry=jail.maxretry, findtime=jail.findtime, ignore=jail.ignore,
                       require_trusted=jail.require_trusted)
        setups.append(JailSetup(name, flt, counter, jail.policy, fingerprints[key]))
        if not flt.journal_routes and config.sources.journal.enabled:
            problems.append(f"jail {name}: filter {flt.name!r} names journal identities whose accounts do not exist "
                            f"on this host (is the service installed?): no journal entry is read for it")
        elif jail.require_trusted and not flt.journal and config.sources.journal.enabled:
            problems.append(f"jail {name}: filter {flt.name!r} names no journal fields, so journal entries are "
                            f"known only by SYSLOG_IDENTIFIER, which any local user can write; with "
                            f"require_trusted = true none of them count (syslog from allowed senders still does)")
    return setups, problems


def _fail2ban_warnings(name: str, jail, flt: Filter, journal_source: bool) -> list[str]:
    """What the jail should know about its Fail2Ban filter: the filter's own notes, and whether
    its journalmatch can identify entries under require_trusted."""
    warnings = [f"jail {name}: Fail2Ban filter {jail.filter!r}: {note}" for note in getattr(flt, "notes", ())]
    if jail.require_trusted and journal_source and flt.journal and not any(map(is_trusted_match, flt.journal)):
        matches = " + ".join(" ".join(f"{field}={value}" for field, values in sorted(group.items())
                                      for value in sorted(values)) for group in flt.journal)
        warnings.append(f"jail {name}: the journalmatch of Fail2Ban filter {jail.filter!r} ({matches}) does not "
                        f"prove which program wrote an entry (only _UID with fields journald takes from the kernel "
                        f"does), so with require_trusted = true none of its journal entries count: add _UID=0 to "
                        f"its journalmatch (in {flt.name}.local, or fail2ban:{flt.name}[journalmatch=\"...\"]), or "
                        f"set require_trusted = false for this jail")
    return warnings
