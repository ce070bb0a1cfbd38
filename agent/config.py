"""Configuration: jailwarden.toml plus jail.d/*.toml, merged, checked and turned into typed records.

Every problem is reported, each with the file, the dotted key and the reason, so
`jailwarden check-config` can list them all at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.addresses import Network
from agent.bans import WEEK, BanPolicy, BantimeIncrement
from agent.actions import ACTIONS
from agent.prefixes import Aggregation
from agent.fleet_config import FLEET_KEYS, JAIL_FLEET_KEYS, FleetConfig, redis_url, sentinel
from agent.fleet_config import prefix as fleet_prefix
from agent.config_values import (
    ListenAddress,
    absolute_path,
    FIREWALL_OPTIONS,
    backend,
    boolean,
    byte_size,
    http_listen,
    describe,
    factor,
    filter_reference,
    listen,
    network,
    nonempty_text,
    parse_duration,
    per_second,
    choice,
    poll_interval,
    port,
    positive_int,
    uid,
)

DEFAULT_PATH = Path("/etc/jailwarden/jailwarden.toml")
_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))
_BANTIME = 3600.0


class ConfigError(Exception):
    """One problem: `file`, the dotted `key` (None for a file-level problem) and the `reason`."""

    def __init__(
        self, file: str | Path, key: str | None, reason: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(str(file), key, reason)
        self.file = str(file)
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = self.key or (f"line {self.line}, column {self.column}" if self.line is not None else None)
        return f"{self.file}: {where}: {self.reason}" if where else f"{self.file}: {self.reason}"


class ConfigErrors(Exception):
    """Every problem `load_config` found, in the order found; `str()` is one problem a line."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


@dataclass(slots=True, frozen=True)
class AgentConfig:
    state_dir: Path = Path("/var/lib/jailwarden")
    socket: Path = Path("/run/jailwarden/control.sock")
    # A socket on which applications may report failures (and do nothing else), writable by
    # root and `report_group`; None: off (root can report on the control socket).
    report_socket: Path | None = None
    report_group: str | None = None
    # Reports each caller (a uid on report_socket, the token on report_http) may make: `report_rate`
    # a second after a burst of `report_burst`. Root on the control socket is not limited.
    report_rate: float = 20.0
    report_burst: int = 100
    # HTTP on a loopback HOST:PORT: POST /v1/failures with the bearer token in report_token_file
    # (required with it); None: off.
    report_http: ListenAddress | None = None
    report_token_file: Path | None = None
    backend: str = "auto"  # nftables where the host's firewall is in nftables, else ipset
    ignore: tuple[Network, ...] = _LOOPBACK
    history_window: float = WEEK  # how long a past ban makes the next one longer
    # Bans stay in the firewall when the agent stops (so a restart opens no window); false lifts
    # them (each backend's teardown) on a clean stop.
    keep_bans_on_stop: bool = True
    # How often each jail's firewall is checked for bans that went missing (a flush by hand, a
    # firewall reload); missing ones are put back.
    reconcile_interval: float = 60.0
    # Where "fail2ban:NAME" filters are read from: FAIL2BAN_DIR/filter.d/NAME.conf (and .local).
    fail2ban_dir: Path = Path("/etc/fail2ban")
    # Addresses users are logged in from (utmp, what `who` shows) are never banned while logged in.
    protect_sessions: bool = True
    utmp: Path = Path("/run/utmp")


@dataclass(slots=True, frozen=True)
class JournalConfig:
    enabled: bool = True
    namespace: str | None = None  # a journald namespace (journald@NAME) instead of the system journal
    path: Path | None = None  # a directory of journal files instead (a container's, a test's)
    # journald announces new entries up to ~0.5 s late; the reader also checks this often. 20 ms:
    # an entry reaches the jail in ~11 ms (median), ~21 ms at worst, for ~0.65% of a core idle;
    # 10 ms halves the delay for ~1.2% (tests/bench/bench_journal.py).
    poll_interval: float = 0.02


@dataclass(slots=True, frozen=True)
class SyslogConfig:
    # On by default, listening on loopback only. Forwarders must not send what journald already
    # holds, or each failure is counted twice (see the bundled config).
    enabled: bool = True
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", ipaddress.IPv4Address("127.0.0.1"), 5514),
        ListenAddress("tcp", ipaddress.IPv4Address("127.0.0.1"), 5514),
        ListenAddress("relp", ipaddress.IPv4Address("127.0.0.1"), 5515),
    )
    allow: tuple[Network, ...] = _LOOPBACK
    # Lines from an allowed sender count as trusted: the forwarder is the administrator's own.
    # A local sender (loopback, the host's addresses) only when its socket's owner is one of these.
    trust: bool = True
    trusted_uids: tuple[int, ...] = (0,)
    max_message: int = 64 * 1024  # bytes; a longer message is truncated (UDP) or dropped (TCP)
    max_connections: int = 256  # concurrent TCP connections; more are refused and counted
    idle_timeout: float = 300.0  # a TCP connection that sends nothing this long is closed
    queue_size: int = 100_000  # messages received but not yet matched; beyond, dropped and counted


@dataclass(slots=True, frozen=True)
class SourcesConfig:
    journal: JournalConfig = field(default_factory=JournalConfig)
    syslog: SyslogConfig = field(default_factory=SyslogConfig)


@dataclass(slots=True, frozen=True)
class JailConfig:
    """One jail. `ignore` and `backend` are effective values: agent.ignore plus the jail's own
    list, and the jail's backend or else the agent's."""

    name: str
    filter: str  # a shipped filter's name, a path, or "fail2ban:NAME"; the CLI resolves it
    enabled: bool = True
    mode: str | None = None
    maxretry: int = 5
    findtime: float = 600.0
    bantime: float = _BANTIME  # math.inf: permanent
    bantime_increment: BantimeIncrement | None = None
    ignore: tuple[Network, ...] = _LOOPBACK
    backend: str = "auto"
    # Count only lines whose program identity cannot be forged by a local user (see LogEvent.trusted).
    require_trusted: bool = True
    # Ban only these destination ports (empty: all traffic), where the backend can scope.
    ports: tuple[int, ...] = ()
    protocol: str = "tcp"
    fail2ban_dir: Path = Path("/etc/fail2ban")  # the agent's, for a "fail2ban:NAME" filter
    # With [fleet]: publish this jail's bans, apply the other nodes', count failures fleet-wide.
    share: bool = True
    accept: bool = True
    fleet_count: bool = False
    # Ban a whole /24 or /64 once this many of its addresses were banned within a window; None: off.
    aggregate: Aggregation | None = None
    actions: tuple[str, ...] = ()  # what a ban also sets off: names of [actions.NAME] tables or shipped actions

    @property
    def policy(self) -> BanPolicy:
        return BanPolicy(self.bantime, self.bantime_increment)


@dataclass(slots=True, frozen=True)
class MetricsConfig:
    # Prometheus text on http://HOST:PORT/metrics; None (the default): no endpoint.
    listen: ListenAddress | None = None


@dataclass(slots=True, frozen=True)
class Config:
    agent: AgentConfig
    sources: SourcesConfig
    jails: dict[str, JailConfig]  # every jail, enabled or not, in the order first defined
    files: tuple[Path, ...]  # the files read, main file first
    firewall: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> its options
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    fleet: FleetConfig | None = None  # None: this agent decides alone
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # [actions.NAME]: its options, as written


def load_config(path: str | Path = DEFAULT_PATH, jail_dir: str | Path | None = None,
                check_filter: Callable[[JailConfig], str | None] | None = None) -> Config:
    """Read `path` and every *.toml in `jail_dir` (default: jail.d beside `path`) in name order.

    Later files add jails and override single keys (tables merge key by key; a list or value is
    replaced whole). Raises `ConfigErrors` with every problem found. A file that cannot be read
    or parsed stops checking after the reading stage, as the merged result would be misleading.
    `check_filter`, if given, is asked about each enabled jail's filter and returns the reason
    it cannot be used, or None; its answers are reported against the file that set the filter.
    """
    path = Path(path)
    directory = Path(jail_dir) if jail_dir is not None else path.parent / "jail.d"
    errors: list[ConfigError] = []
    files = [path]
    try:
        files += sorted(p for p in directory.iterdir() if p.suffix == ".toml" and not p.name.startswith("."))
    except FileNotFoundError:
        if jail_dir is not None:
            errors.append(ConfigError(directory, None, "the jail.d directory does not exist"))
    except OSError as error:
        errors.append(ConfigError(directory, None, f"cannot list the jail.d directory: {error.strerror}"))
    documents = []
    for file in files:
        try:
            documents.append((file, _read(file)))
        except ConfigError as error:
            errors.append(error)
    if errors:
        raise ConfigErrors(errors)
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for file, document in documents:
        _merge(merged, document, str(file), origins)
    checker = _Checker(origins, str(path))
    config = checker.config(merged, tuple(files))
    if check_filter is not None:
        for name, jail in config.jails.items():
            reason = check_filter(jail) if jail.enabled else None
            if reason is not None:
                key = ("jails", name, "filter")
                checker.errors.append(ConfigError(origins.get(key, str(path)), ".".join(key), reason))
    if checker.errors:
        raise ConfigErrors(checker.errors)
    return config


def _read(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as stream:
            return tomllib.load(stream)
    except OSError as error:
        raise ConfigError(file, None, f"cannot read the file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(file, None, f"not UTF-8 text (bad byte at offset {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if found is None:
            raise ConfigError(file, None, f"TOML syntax error: {message}") from None
        reason = f"TOML syntax error: {message[: found.start()]}"
        raise ConfigError(file, None, reason, line=int(found[1]), column=int(found[2])) from None
    except ValueError as error:  # Python's own limit: an integer of more than 4,300 digits
        raise ConfigError(file, None, f"not a usable TOML file: {str(error).split(';')[0]}") from None
    except RecursionError:
        raise ConfigError(file, None, "not a usable TOML file: arrays or tables nested too deeply") from None


def _merge(into: dict, new: dict, file: str, origins: dict, path: tuple[str, ...] = ()) -> None:
    for key, value in new.items():
        here = path + (key,)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, file, origins, here)
        else:
            into[key] = value
            _mark(value, here, file, origins)


def _mark(value: object, path: tuple[str, ...], file: str, origins: dict) -> None:
    origins[path] = file
    if isinstance(value, dict):
        for key, item in value.items():
            _mark(item, path + (key,), file, origins)


_AGENT_KEYS = ("state_dir", "socket", "report_socket", "report_group", "report_rate", "report_burst", "report_http",
               "report_token_file", "backend", "ignore", "history_window", "keep_bans_on_stop", "reconcile_interval",
               "fail2ban_dir", "protect_sessions", "utmp")
_JAIL_KEYS = (
    "enabled", "filter", "mode", "maxretry", "findtime", "bantime", "bantime_increment", "ignore", "backend",
    "require_trusted", "ports", "protocol", "aggregate", "actions", *JAIL_FLEET_KEYS,
)  # fmt: skip
_JOURNAL_KEYS = ("enabled", "namespace", "path", "poll_interval")
_SYSLOG_KEYS = ("enabled", "listen", "allow", "trust", "trusted_uids", "max_message", "max_connections", "idle_timeout",
                "queue_size")
_JAIL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


class _Checker:
    """Walks the merged document, converting what is valid and collecting an error for the rest."""

    def __init__(self, origins: dict[tuple[str, ...], str], main_file: str) -> None:
        self.origins = origins
        self.main_file = main_file
        self.errors: list[ConfigError] = []

    def config(self, document: dict, files: tuple[Path, ...]) -> Config:
        self.table(document, (), ("agent", "sources", "firewall", "jails", "metrics", "fleet", "actions"))
        actions = self.actions(document.get("actions", {}))
        agent = AgentConfig(**self.agent(self.table(document.get("agent", {}), ("agent",), _AGENT_KEYS)))
        sources = self.table(document.get("sources", {}), ("sources",), ("journal", "syslog"))
        journal = self.table(sources.get("journal", {}), ("sources", "journal"), _JOURNAL_KEYS)
        journal_values = self.read(journal, ("sources", "journal"), {
            "enabled": boolean, "namespace": nonempty_text, "path": absolute_path, "poll_interval": poll_interval,
        })
        if "namespace" in journal_values and "path" in journal_values:
            self.error(("sources", "journal", "path"), "set `namespace` or `path`, not both")
        syslog = self.table(sources.get("syslog", {}), ("sources", "syslog"), _SYSLOG_KEYS)
        syslog_values = self.read(syslog, ("sources", "syslog"), {
            "enabled": boolean, "trust": boolean, "max_message": byte_size, "max_connections": positive_int,
            "idle_timeout": parse_duration, "queue_size": positive_int,
        })
        syslog_values |= self.read_lists(syslog, ("sources", "syslog"),
                                         {"listen": listen, "allow": network, "trusted_uids": uid})
        if syslog_values.get("enabled") and syslog.get("listen") == []:
            self.error(("sources", "syslog", "listen"), "the syslog source is enabled but listens nowhere")
        jails = self.table(document.get("jails", {}), ("jails",), None)
        return Config(
            agent=agent,
            sources=SourcesConfig(
                JournalConfig(**journal_values),
                SyslogConfig(**syslog_values),
            ),
            jails={name: self.jail(name, jail, agent, jails, actions) for name, jail in jails.items()},
            files=files,
            firewall=self.firewall(self.table(document.get("firewall", {}), ("firewall",), tuple(FIREWALL_OPTIONS))),
            metrics=MetricsConfig(**self.read(self.table(document.get("metrics", {}), ("metrics",), ("listen",)),
                                              ("metrics",), {"listen": http_listen})),
            fleet=self.fleet(document["fleet"]) if "fleet" in document else None,
            actions=actions,
        )

    def actions(self, raw: object) -> dict[str, dict[str, Any]]:
        """[actions.NAME] tables: their options go to the action as they are (the action checks
        them when the agent starts); `type` must be text when given."""
        tables = {}
        for name, table in self.table(raw, ("actions",), None).items():
            if not isinstance(table, dict):
                self.error(("actions", name), f"expected a table of the action's options, got {describe(table)}")
            elif "type" in table and not isinstance(table["type"], str):
                self.error(("actions", name, "type"), "expected a shipped action's name, module:Class or an "
                                                      f"entry point's name, got {describe(table['type'])}")
            else:
                tables[name] = table
        return tables

    def fleet(self, raw: object) -> FleetConfig | None:
        path = ("fleet",)
        table = self.table(raw, path, FLEET_KEYS)
        values = self.read(table, path, {
            "url": redis_url, "service": nonempty_text, "cluster": boolean, "node": nonempty_text,
            "key_file": absolute_path, "username": nonempty_text,
            "password_file": absolute_path, "ca_file": absolute_path, "prefix": fleet_prefix,
            "stream_maxlen": positive_int, "buffer": positive_int,
        })
        values |= self.read_lists(table, path, {"sentinels": sentinel})
        if "key_file" not in table:
            self.error(path + ("key_file",), "required in [fleet]: the fleet's shared key signs every event")
        if ("url" in table) == bool(table.get("sentinels")):
            self.error(path + ("url",), "give url (a Redis, or a node of a cluster) or sentinels, one of the two")
        elif values.get("cluster") and "url" not in table:
            self.error(path + ("cluster",), "a cluster is reached through url, the address of any of its nodes")
        if "key_file" not in values or not ("url" in values or values.get("sentinels")):
            return None
        return FleetConfig(**values)

    def firewall(self, table: dict) -> dict[str, dict[str, Any]]:
        options = {}
        for name, converters in FIREWALL_OPTIONS.items():
            path = ("firewall", name)
            options[name] = self.read(self.table(table.get(name, {}), path, tuple(converters)), path, converters)
        return options

    def agent(self, table: dict) -> dict[str, Any]:
        converters = {"state_dir": absolute_path, "socket": absolute_path, "report_socket": absolute_path,
                      "report_group": nonempty_text, "report_rate": per_second, "report_burst": positive_int,
                      "report_http": http_listen, "report_token_file": absolute_path, "backend": backend,
                      "keep_bans_on_stop": boolean, "fail2ban_dir": absolute_path, "protect_sessions": boolean,
                      "utmp": absolute_path}
        values = self.read(table, ("agent",), converters | {"history_window": parse_duration,
                                                             "reconcile_interval": parse_duration})
        if "report_group" in table and "report_socket" not in table:
            self.error(("agent", "report_group"), "report_group is the group of report_socket: set that too")
        http = values.get("report_http")
        if http is not None and not http.host.is_loopback:
            self.error(("agent", "report_http"), f"{table['report_http']!r} is not a loopback address (127.0.0.0/8 "
                       "or ::1): its bearer token travels in plain HTTP and must not leave this host")
        if "report_http" in table and "report_token_file" not in table:
            self.error(("agent", "report_token_file"), "required with report_http: the file holding the bearer "
                       "token applications send (mode 600)")
        if "report_token_file" in table and "report_http" not in table:
            self.error(("agent", "report_token_file"), "report_token_file is the token of report_http: set that too")
        return values | self.read_lists(table, ("agent",), {"ignore": network})

    def jail(self, name: str, raw: object, agent: AgentConfig, jails: dict, actions: dict) -> JailConfig:
        path = ("jails", name)
        if not _JAIL_NAME.fullmatch(name):
            self.error(path, "a jail name is 1 to 32 letters, digits, '-' or '_', starting with a letter or digit")
        table = self.table(raw, path, _JAIL_KEYS)
        values = self.read(
            table,
            path,
            {
                "enabled": boolean,
                "filter": filter_reference,
                "mode": nonempty_text,
                "maxretry": positive_int,
                "findtime": parse_duration,
                "bantime": lambda value: parse_duration(value, permanent=True),
                "backend": backend,
                "require_trusted": boolean,
                "protocol": choice("tcp", "udp"),
                "share": boolean,
                "accept": boolean,
                "fleet_count": boolean,
            },
        )
        values |= self.read_lists(table, path, {"ports": port, "actions": nonempty_text})
        for index, action in enumerate(values.get("actions", ())):
            if action not in actions and action not in ACTIONS:
                self.error(path + ("actions",), f"no [actions.{action}] table and no shipped action of that name "
                                                f"(shipped: {', '.join(ACTIONS)})", index=index)
        own_ignore = self.read_lists(table, path, {"ignore": network}).get("ignore", ())
        values["ignore"] = tuple(dict.fromkeys(agent.ignore + own_ignore))
        values.setdefault("backend", agent.backend)
        values["fail2ban_dir"] = agent.fail2ban_dir
        if isinstance(raw, dict) and "filter" not in raw:
            others = difflib.get_close_matches(name, [other for other in jails if other != name], n=1)
            hint = f" (is this meant to be jail {others[0]!r}?)" if others else ""
            self.error(path + ("filter",), f"required: every jail names its filter{hint}")
        if "aggregate" in table:
            values["aggregate"] = self.aggregate(table["aggregate"], path + ("aggregate",))
        if "bantime_increment" in table:
            increment = self.increment(table["bantime_increment"], path + ("bantime_increment",), values)
            values["bantime_increment"] = increment
        return JailConfig(name=name, filter=values.pop("filter", ""), **values)

    def aggregate(self, raw: object, path: tuple[str, ...]) -> Aggregation | None:
        if raw is False:
            return None
        if raw is True:
            return Aggregation()
        if not isinstance(raw, dict):
            self.error(path, f"expected a table such as {{ bans = 5, window = \"1h\" }}, or true/false; "
                             f"got {describe(raw)}")
            return None
        table = self.table(raw, path, ("bans", "window", "ipv4", "ipv6"))
        values = self.read(table, path, {"bans": positive_int, "window": parse_duration, "ipv4": positive_int,
                                         "ipv6": positive_int})
        try:
            return Aggregation(**values)
        except ValueError as error:
            self.error(path, str(error))
            return None

    def increment(self, raw: object, path: tuple[str, ...], jail: dict[str, Any]) -> BantimeIncrement | None:
        if raw is False:
            return None
        bantime = jail.get("bantime", _BANTIME)
        # The default cap is a week, stretched to bantime when bantime is longer.
        defaults = {"factor": BantimeIncrement().factor, "max": max(BantimeIncrement().max, bantime)}
        if raw is True:
            return BantimeIncrement(**defaults)
        if not isinstance(raw, dict):
            self.error(path, f"expected a table such as {{ factor = 2, max = \"1w\" }}, or false; got {describe(raw)}")
            return None
        table = self.table(raw, path, ("factor", "max"))
        values = defaults | self.read(
            table, path, {"factor": factor, "max": lambda value: parse_duration(value, permanent=True)}
        )
        increment = BantimeIncrement(**values)
        try:
            BanPolicy(bantime, increment)
        except ValueError as error:
            self.error(path + ("max",), str(error))
        return increment

    def table(self, value: object, path: tuple[str, ...], known: tuple[str, ...] | None) -> dict:
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {describe(value)}")
            return {}
        for key in value if known is not None else ():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                self.error(path + (key,), f"unknown key; {hint}")
        return value

    def read(self, table: dict, path: tuple[str, ...], converters: dict[str, Callable]) -> dict[str, Any]:
        values = {}
        for key, convert in converters.items():
            if key in table:
                try:
                    values[key] = convert(table[key])
                except (TypeError, ValueError) as error:
                    self.error(path + (key,), str(error))
        return values

    def read_lists(self, table: dict, path: tuple[str, ...], converters: dict[str, Callable]) -> dict[str, tuple]:
        values = {}
        for key, convert in converters.items():
            if key not in table:
                continue
            items = table[key]
            if not isinstance(items, list):
                self.error(path + (key,), f"expected an array, got {describe(items)}")
                continue
            converted = []
            for index, item in enumerate(items):
                try:
                    converted.append(convert(item))
                except (TypeError, ValueError) as error:
                    self.error(path + (key,), str(error), index=index)
            values[key] = tuple(converted)
        return values

    def error(self, path: tuple[str, ...], reason: str, *, index: int | None = None) -> None:
        key = ".".join(path) + (f"[{index}]" if index is not None else "")
        self.errors.append(ConfigError(self.file_of(path), key or None, reason))

    def file_of(self, path: tuple[str, ...]) -> str:
        for length in range(len(path), 0, -1):
            if path[:length] in self.origins:
                return self.origins[path[:length]]
        return self.main_file
