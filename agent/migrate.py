"""`jailwarden import-fail2ban`: Fail2Ban's jail configuration written as a jailwarden config.

Files are read as Fail2Ban reads them (agent/migrate_ini.py over parsers/fail2ban_ini.py), values
converted by agent/migrate_values.py and agent/migrate_actions.py. What cannot be converted becomes
a "# fail2ban:" comment in the output and a warning on stderr. Fail2Ban's actions are shell
templates: they are listed, never run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TextIO

from agent.migrate_actions import ban_actions, firewall_backend
from agent.migrate_ini import JailConfig, Location
from agent.migrate_toml import Document, duration
from agent.migrate_values import Reference, increment, ignore_entry, references, seconds, split_words
from parsers.errors import FilterError
from parsers.filterfile import SHIPPED_DIR, load_filter

_DEFAULT = "DEFAULT"
_LOOPBACK = ("127.0.0.0/8", "::1")
# Fail2Ban's own values for a jail whose configuration does not set them.
_FAIL2BAN_DEFAULTS = {"maxretry": 3, "findtime": 600.0, "bantime": 600.0}
# Jail keys that tune Fail2Ban's filter: jailwarden keeps those in its own filter files.
_FILTER_KEYS = ("failregex", "ignoreregex", "prefregex", "datepattern", "maxlines", "journalmatch")
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no", "")
_NOT_IN_JAIL_NAME = re.compile(r"[^A-Za-z0-9_-]")
_LOCAL_FILTER = "write a local filter in /etc/jailwarden/filter.d/ instead"


def import_fail2ban(directory: Path, out: TextIO, err: TextIO) -> int:
    """Write `directory`'s enabled jails as jailwarden TOML to `out`, problems to `err`.
    Returns 0 (all converted), 1 (something needed a warning) or 2 (no jail.conf)."""
    if not (directory / "jail.conf").is_file():
        err.write(f"jailwarden: {directory}: no jail.conf here (is this Fail2Ban's configuration directory?)\n")
        return 2
    converter = _Converter(JailConfig(directory), err)
    converter.convert()
    out.write(converter.output.text())
    count, warnings = len(converter.jails), converter.warnings
    err.write(f"jailwarden: {count} enabled jail{'s' * (count != 1)} converted"
              f"{': ' + ', '.join(converter.jails) if count else ''}; {warnings} warning{'s' * (warnings != 1)}\n")
    return 1 if warnings else 0


class _Converter:
    """Builds the output one table at a time; every warning is also a comment in the current table."""

    def __init__(self, config: JailConfig, err: TextIO) -> None:
        self.config = config
        self.err = err
        self.output = Document()
        self.warnings = 0
        self.jails: list[str] = []
        self.agent_backend = "ipset"
        self.agent_ignore: list[str] = list(_LOOPBACK)
        self.reported_banaction = ""  # [DEFAULT] banaction's name, once warned about there

    def note(self, text: str) -> None:
        self.output.comment(text, "# fail2ban: ")

    def warn(self, where: Location | str, reason: str) -> None:
        self.err.write(f"{where}: {reason}\n")
        self.warnings += 1
        self.note(f"{where.key}: {reason}" if isinstance(where, Location) else f"{where}: {reason}")

    def value(self, section: str, key: str) -> str | None:
        try:
            return self.config.get(section, key)
        except FilterError as error:  # a %(name)s reference that cannot be resolved
            self.warn(self.config.location(section, key), f"{error.reason}; the value is ignored")
            return None

    def convert(self) -> None:
        directory = self.config.directory
        read = ", ".join(str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)
                         for path in self.config.files)
        self.output.comment(f"jailwarden configuration converted from Fail2Ban's {directory} by "
                            f"`jailwarden import-fail2ban`. Read, in this order: {read}.")
        self.output.comment("Only the jails Fail2Ban had enabled are here. \"# fail2ban:\" comments say what was "
                            "not converted or works differently: review them, then run "
                            "`jailwarden check-config --config THIS-FILE`.")
        for problem in self.config.problems:
            self.err.write(problem + "\n")
            self.warnings += 1
            self.note(problem)
        self.agent()
        names: set[str] = set()
        for name in self.config.section_names():
            self.jail(name, names)

    def agent(self) -> None:
        self.output.table("[agent]")
        spec = _first(self.value(_DEFAULT, "banaction") or "")
        backend = firewall_backend(spec.name) if spec else None
        if backend:
            self.agent_backend = backend
            self.output.set("backend", backend, f"banaction = {spec.name}")
        elif spec:
            self.reported_banaction = spec.name
            self.warn(self.config.location(_DEFAULT, "banaction"),
                      f"{spec.name} has no jailwarden backend: the default (ipset) is used; where firewalld or "
                      "another tool owns nftables, prefer backend = \"nftables\" (README: Firewall backends)")
        self.agent_ignore += [n for n in self.ignore_list(_DEFAULT) if n not in self.agent_ignore]
        self.output.set("ignore", self.agent_ignore)
        self.ignoreself(_DEFAULT)
        chain = self.value(_DEFAULT, "chain")
        if chain and not chain.startswith("<") and chain != "INPUT":
            if self.agent_backend in ("ipset", "iptables"):
                self.output.table(f"[firewall.{self.agent_backend}]")
                self.output.set("chain", chain, "Fail2Ban's chain")
            else:
                self.warn(self.config.location(_DEFAULT, "chain"),
                          f"{chain!r} is not converted: the {self.agent_backend} backend has its own chain")

    def ignore_list(self, section: str) -> list[str]:
        found = []
        for word in split_words(self.value(section, "ignoreip") or ""):
            try:
                network = ignore_entry(word)
            except ValueError as error:
                self.warn(self.config.location(section, "ignoreip"), str(error))
                continue
            found.append(str(network.network_address if network.prefixlen == network.max_prefixlen else network))
        return list(dict.fromkeys(found))

    def ignoreself(self, section: str) -> None:
        text = self.value(section, "ignoreself") if section == _DEFAULT or self.config.has_own(
            section, "ignoreself") else None
        if text is not None and text.strip().lower() in _FALSE:
            self.warn(self.config.location(section, "ignoreself"),
                      "false is not converted: jailwarden never bans loopback or this host's own addresses")

    def jail(self, name: str, names: set[str]) -> None:
        enabled = (self.value(name, "enabled") or "").strip().lower()
        if enabled not in _TRUE:
            if enabled not in _FALSE:
                self.output.table("")
                self.warn(self.config.location(name, "enabled"), f"{enabled!r} is neither true nor false; "
                          f"Fail2Ban reads it as false, so jail {name} is not converted")
            return
        where = self.config.location(name, "filter")
        spec = _first(self.value(name, "filter") or "", lambda reason: self.warn(where, reason))
        if spec is None:
            self.output.table("")
            self.warn(where, f"jail {name} is not converted: no filter")
            return
        toml_name = _NOT_IN_JAIL_NAME.sub("-", name)[:32].lstrip("-_") or "jail"
        while toml_name in names:
            toml_name = f"{toml_name[:29]}-{len(names)}"
        names.add(toml_name)
        self.jails.append(toml_name)
        self.output.table(f"[jails.{toml_name}]")
        if toml_name != name:
            self.warn(f"{where.file}: [{name}]", f"a jailwarden jail name is 1 to 32 letters, digits, '-' or "
                      f"'_': written as {toml_name}")
        self.filter(spec, where)
        self.limits(name)
        self.ignore(name)
        self.ignoreself(name)
        self.actions(name)
        self.logs(name, spec.name)
        self.unconverted(name)

    def filter(self, spec: Reference, where: Location) -> None:
        options = dict(spec.options)
        mode = options.pop("mode", None)
        shipped = SHIPPED_DIR / f"{spec.name}.toml"
        if shipped.is_file():
            self.output.set("filter", spec.name)
            if mode and mode != "normal":
                try:
                    load_filter(shipped, mode=mode)
                    self.output.set("mode", mode)
                except FilterError as error:
                    self.warn(where, f"mode {mode!r} is not converted ({error}): written without one (normal)")
        else:
            self.output.set("filter", f"fail2ban:{spec.name}", f"Fail2Ban's filter.d/{spec.name}.conf")
            if mode:
                self.output.set("mode", mode)
            directory = self.config.directory / "filter.d"
            if not any((directory / f"{spec.name}{suffix}").is_file() for suffix in (".conf", ".local")):
                self.warn(where, f"Fail2Ban has no filter {directory / spec.name}.conf")
        if options:
            self.warn(where, f"filter options {Reference('', options).describe()} are not converted: {_LOCAL_FILTER}")

    def limits(self, jail: str) -> None:
        self.output.set("maxretry", self.number(jail, "maxretry", lambda text: int(text.strip()), lambda n: n >= 1))
        self.output.set("findtime", duration(self.number(jail, "findtime", seconds, lambda s: s > 0)))
        bantime = self.number(jail, "bantime", seconds, lambda s: s != 0)
        bantime = math.inf if bantime < 0 else bantime  # Fail2Ban: a negative bantime is permanent
        self.output.set("bantime", duration(bantime))
        if (self.value(jail, "bantime.increment") or "").strip().lower() not in _TRUE:
            self.output.set("bantime_increment", False)
            return
        if bantime == math.inf:
            self.output.set("bantime_increment", False, "bans are permanent: nothing to lengthen")
            return
        where = self.config.location(jail, "bantime.increment")
        try:
            maxtime = self.value(jail, "bantime.maxtime")
            result = increment(bantime, self.value(jail, "bantime.factor"), self.value(jail, "bantime.formula"),
                               self.value(jail, "bantime.multipliers"), seconds(maxtime) if maxtime else None)
        except ValueError as error:
            self.warn(where, f"{error}: the increment is not converted")
            self.output.set("bantime_increment", False)
            return
        comment = "no bantime.maxtime: Fail2Ban stops doubling after 20 bans" if result.capped_by_formula else ""
        self.output.set("bantime_increment", {"factor": result.factor, "max": duration(result.max)}, comment)
        for text in result.notes:
            self.warn(where, text)
        if (self.value(jail, "bantime.rndtime") or "").strip():
            self.warn(self.config.location(jail, "bantime.rndtime"), "a random extra time is not converted")
        if (self.value(jail, "bantime.overalljails") or "").strip().lower() in _TRUE:
            self.warn(self.config.location(jail, "bantime.overalljails"),
                      "not converted: jailwarden counts a repeat offender's earlier bans per jail")

    def number(self, jail: str, key: str, parse, valid) -> float:
        text = self.value(jail, key)
        if text is not None:
            try:
                if valid(number := parse(text)):
                    return number
            except ValueError:
                pass
        default = _FAIL2BAN_DEFAULTS[key]
        if text is not None:
            shown = default if key == "maxretry" else duration(default)
            self.warn(self.config.location(jail, key), f"{text.strip()!r} is not a valid {key}: written as "
                      f"Fail2Ban's default, {shown}")
        return default

    def ignore(self, jail: str) -> None:
        """A jail's own ignoreip replaces [DEFAULT]'s in Fail2Ban; a jail's ignore adds to [agent] ignore."""
        if not self.config.has_own(jail, "ignoreip"):
            return
        listed = self.ignore_list(jail)
        if own := [n for n in listed if n not in self.agent_ignore]:
            self.output.set("ignore", own)
        if dropped := [n for n in self.agent_ignore if n not in listed and n not in _LOOPBACK]:
            self.warn(self.config.location(jail, "ignoreip"), f"leaves out {', '.join(dropped)}, which [agent] "
                      "ignore lists: jailwarden adds a jail's ignore to it, so this jail ignores them too")

    def actions(self, jail: str) -> None:
        names = {spec.name for key in ("banaction", "banaction_allports")
                 if (spec := _first(self.value(jail, key) or "")) is not None}
        try:
            entries = references(self.value(jail, "action") or "")
        except ValueError as error:
            self.warn(self.config.location(jail, "action"), f"cannot be read ({error}): the jail bans with "
                      "[agent] backend")
            return
        result = ban_actions(entries, names, self.agent_backend, lambda key: self.value(jail, key))
        if result.backend != self.agent_backend:
            self.output.set("backend", result.backend, result.source)
        if result.ports:
            self.output.set("ports", list(result.ports))
            self.output.set("protocol", result.protocol)
        for name, key, reason in result.problems:
            if not (name and name == self.reported_banaction and key == "banaction"):
                self.warn(self.config.location(jail, key), reason)

    def logs(self, jail: str, filter_name: str) -> None:
        if filter_name == "recidive":
            # Fail2Ban's recidive reads Fail2Ban's own log; jailwarden's filter of that name reads the agent's.
            self.note("this jail counts jailwarden's own bans by the other jails (the agent's \"jail NAME: ban "
                      "ADDR ...\" lines in the journal or syslog; dry-run and manual bans are not counted), where "
                      "Fail2Ban's recidive counted Fail2Ban's")
            return
        backend = " ".join((self.value(jail, "backend") or "auto").split())
        if backend.startswith("systemd"):
            self.note(f"Fail2Ban read the systemd journal (backend = {backend}); so does jailwarden, choosing "
                      "entries by the journal fields its filter names")
            return
        files = [line.strip() for line in (self.value(jail, "logpath") or "").splitlines() if line.strip()]
        if files:
            self.note(f"Fail2Ban read {', '.join(files)} (backend = {backend}). jailwarden reads the journal and "
                      "syslog, not files: a service that logs only to files needs rsyslog to forward them to "
                      "[sources.syslog] (README: Migrating from Fail2Ban)")

    def unconverted(self, jail: str) -> None:
        if command := (self.value(jail, "ignorecommand") or "").strip():
            self.warn(self.config.location(jail, "ignorecommand"),
                      f"{command!r} is not converted: jailwarden runs no shell commands")
        for key in _FILTER_KEYS:
            if self.config.has_own(jail, key):
                self.warn(self.config.location(jail, key), f"not converted: {_LOCAL_FILTER}")
        if self.config.has_own(jail, "chain") and (chain := self.value(jail, "chain")) != self.value(
                _DEFAULT, "chain"):
            self.warn(self.config.location(jail, "chain"),
                      f"{chain!r} is not converted: the chain is set per backend in [firewall.NAME], not per jail")


def _first(text: str, report=None) -> Reference | None:
    """The first `name[options]` entry of `text`, None if there is none or it cannot be read."""
    try:
        entries = references(text)
    except ValueError as error:
        if report is not None:
            report(str(error))
        return None
    return entries[0] if entries else None
