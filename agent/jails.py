"""The configured jails built for running: each enabled jail with its filter (compiled for its
mode), its failure counter and its ban policy, and what the jail should know about its filter
(the daemon logs it at start, check-config prints it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import Config, JailConfig
from agent.host import account_uid
from agent.jail import Jail
from agent.pipeline import JailSetup
from agent.prefixes import PrefixTracker
from agent.regexprobe import check_user_filter
from parsers.fail2ban_reference import is_fail2ban_reference
from parsers.errors import FilterError
from parsers.filter import Filter, is_trusted_match
from parsers.filterfile import SHIPPED_DIR, load_reference


def _fingerprint(reference: str, mode: str | None, files: list[Path]) -> str:
    # Of every file read (includes, .local): a reload then sees a change in any of them.
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{reference}:{mode}:{digest.hexdigest()}"


def load_jail_filter(jail: JailConfig, filter_dir: Path) -> Filter:
    """The jail's filter, of either kind: a shipped or local TOML filter, or a Fail2Ban filter
    (account names in `_UID` resolved on this host for both)."""
    return load_reference(jail.filter, mode=jail.mode, search=[filter_dir, SHIPPED_DIR],
                          fail2ban_dir=jail.fail2ban_dir, accounts=account_uid)


def build_jails(config: Config, filter_dir: Path) -> tuple[list[JailSetup], list[str]]:
    """The enabled jails with their filters; a jail whose filter cannot be loaded is left out
    and its problem returned, so the others still run."""
    setups, problems = [], []
    filters: dict[tuple[str, Path, str | None], tuple[Filter, str, str | None]] = {}
    for name, jail in config.jails.items():
        if not jail.enabled:
            continue
        key = (jail.filter, jail.fail2ban_dir, jail.mode)
        try:
            if key not in filters:
                flt = load_jail_filter(jail, filter_dir)
                # A user's filter whose regexes backtrack is probed here, before the pipeline is built,
                # so that its linear = False keeps entries a local user could write away from it.
                filters[key] = (flt, _fingerprint(jail.filter, jail.mode, flt.files), check_user_filter(flt))
        except (FilterError, OSError) as error:
            problems.append(f"jail {name}: not started: {error}")
            continue
        flt, fingerprint, slow = filters[key]
        problems += filter_warnings(jail, flt, config.sources.journal.enabled)
        if slow is not None:
            problems.append(f"jail {name}: {slow}")
        counter = Jail(name, maxretry=jail.maxretry, findtime=jail.findtime, ignore=jail.ignore,
                       require_trusted=jail.require_trusted)
        prefixes = PrefixTracker(jail.aggregate) if jail.aggregate is not None else None
        setups.append(JailSetup(name, flt, counter, jail.policy, fingerprint, prefixes))
    return setups, problems


def filter_warnings(jail: JailConfig, flt: Filter, journal_source: bool) -> list[str]:
    """What the jail should know about its filter: the filter's own notes, and which of its
    journal entries cannot be read or cannot count."""
    name = jail.name
    warnings = [f"jail {name}: Fail2Ban filter {jail.filter!r}: {note}" for note in flt.notes]
    if not journal_source:
        return warnings
    if not flt.journal_routes:
        warnings.append(f"jail {name}: filter {flt.name!r} names journal identities whose accounts do not exist "
                        f"on this host (is the service installed?): no journal entry is read for it")
    elif jail.require_trusted and not flt.journal:
        warnings.append(f"jail {name}: filter {flt.name!r} names no journal fields, so journal entries are "
                        f"known only by SYSLOG_IDENTIFIER, which any local user can write; with "
                        f"require_trusted = true none of them count (syslog from allowed senders still does)")
    elif jail.require_trusted and is_fail2ban_reference(jail.filter) and not any(map(is_trusted_match, flt.journal)):
        matches = " + ".join(" ".join(f"{field}={value}" for field, values in sorted(group.items())
                                      for value in sorted(values)) for group in flt.journal)
        warnings.append(f"jail {name}: the journalmatch of Fail2Ban filter {jail.filter!r} ({matches}) does not "
                        f"prove which program wrote an entry (only _UID with fields journald takes from the kernel "
                        f"does), so with require_trusted = true none of its journal entries count: add _UID=0 to "
                        f"its journalmatch (in {flt.name}.local, or fail2ban:{flt.name}[journalmatch=\"...\"]), or "
                        f"set require_trusted = false for this jail")
    return warnings
