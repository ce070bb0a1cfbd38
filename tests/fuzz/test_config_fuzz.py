"""Fuzzing the configuration loader (agent/config.py's load_config).

Whatever jailwarden.toml and jail.d/*.toml hold, loading gives a Config or raises ConfigErrors,
each error naming its file, the dotted key (None for a problem with the whole file) and a
reason; no other exception escapes, so `check-config` can always list every problem.
Documents are generated as text (anything, or TOML-like fragments) and as TOML values of any
type under the keys the loader knows.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, fields
from datetime import date, datetime, time
from pathlib import Path

from hypothesis import example, given, settings, strategies as st

from agent.config import AgentConfig, ConfigErrors, JailConfig, JournalConfig, SyslogConfig, load_config
from agent.config_values import FIREWALL_OPTIONS
from agent.fleet_config import FLEET_KEYS

AGENT_KEYS = [f.name for f in fields(AgentConfig)]
JOURNAL_KEYS = [f.name for f in fields(JournalConfig)]
SYSLOG_KEYS = [f.name for f in fields(SyslogConfig)]
JAIL_KEYS = [f.name for f in fields(JailConfig) if f.name not in ("name", "fail2ban_dir")]

@dataclass(frozen=True)
class Written:
    """A value as TOML text, for what Python cannot show (an integer of 5,000 digits)."""

    text: str

    def __repr__(self) -> str:
        return f"Written({self.text[:20]!r}... {len(self.text)} characters)"


# Values the loader's converters take apart: durations, sizes, addresses, URLs, paths.
MEANINGFUL = st.sampled_from([
    "10m", "1h30m", "1w", "-1", "permanent", "0", "1e400", "9" * 400 + "w", "1h1h", "30s1m", " 5 m ", "1.5d", "",
    "64KiB", "1MiB", "17MiB", "127.0.0.0/8", "::1", "192.0.2.1/33", "2001:db8::/129", "::ffff:1.2.3.4", "1.2.3.4%x",
    "udp://127.0.0.1:5514", "tcp://[::1]:5514", "relp://127.0.0.1:0", "unix:///run/x.sock", "unix://relative",
    "tcp://host.example:1", "udp://[::1]:99999", "127.0.0.1:9716", "[::1]:9716", "redis://127.0.0.1:6379/0",
    "rediss://user:pw@h:1/0", "unix:///run/redis.sock", "redis://[::1", "/var/lib/jailwarden", "relative/path",
    "sshd", "fail2ban:", "fail2ban:sshd[mode=aggressive]", "ipset", "nftables", "auto", "drop", "reject", "tcp",
    "\x00", "\u202e", "a" * 300,
])
# Numbers at the edges: beyond 64 bits, beyond a float, beyond what Python reads (tomllib refuses
# integers of more than 4,300 digits), and the floats that are not numbers.
EDGE = st.sampled_from([
    2**63, 2**64, 10**400, -10**400, Written("9" * 5000), Written("-" + "9" * 5000), math.nan, math.inf, -math.inf,
    0, -1, -0.0, 1e-320, 1e308, 0.001, 5.0001, 65535, 65536, 2**32 - 1, 2**32,
])
TOML_SCALAR = st.one_of(
    EDGE, MEANINGFUL, st.text(max_size=20), st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.datetimes(), st.dates(), st.times(),
)
TOML_VALUE = st.one_of(
    TOML_SCALAR,
    st.recursive(TOML_SCALAR, lambda children: st.lists(children, max_size=4)
                 | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=10),
)


def toml_key(key: str) -> str:
    return toml_value(key)


def toml_value(value: object) -> str:
    """The value in TOML syntax (inline tables and arrays on one line)."""
    if isinstance(value, Written):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf \
            else repr(value)
    if isinstance(value, str):
        # Basic strings: JSON's escapes are TOML's, and TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def table(keys: list[str]) -> st.SearchStrategy[dict]:
    """Some of `keys`, and now and then a key the loader does not know, with values of any type."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=10)) if keys else st.text(max_size=10)
    return st.dictionaries(key, TOML_VALUE, max_size=6)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """The table, or now and then a value of another type in its place."""
    return st.one_of(strategy, strategy, strategy, TOML_SCALAR)


JAIL_NAME = st.one_of(st.sampled_from(["sshd", "nginx-http-auth", "recidive", "a" * 33, "-x", "ssh d", ""]),
                      st.text(max_size=8))
DOCUMENT = st.fixed_dictionaries({}, optional={
    "agent": maybe(table(AGENT_KEYS)),
    "sources": maybe(st.fixed_dictionaries({}, optional={"journal": maybe(table(JOURNAL_KEYS)),
                                                         "syslog": maybe(table(SYSLOG_KEYS))})),
    "jails": maybe(st.dictionaries(JAIL_NAME, maybe(table(JAIL_KEYS + ["bantime_increment", "aggregate"])),
                                   max_size=3)),
    "firewall": maybe(st.dictionaries(st.sampled_from([*FIREWALL_OPTIONS, "pf"]),
                                      maybe(table(["chain", "action", "priority", "kind", "path", "daemons"])),
                                      max_size=2)),
    "metrics": maybe(table(["listen"])),
    "fleet": maybe(table(list(FLEET_KEYS))),
    "actions": maybe(st.dictionaries(st.text(max_size=6), maybe(table(["type", "to", "url"])), max_size=2)),
    "unknown": TOML_VALUE,
})


def toml_document(document: dict) -> str:
    return "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in document.items())


TOML_PIECES = st.lists(st.sampled_from([
    "[agent]\n", "[jails.sshd]\n", "[[jails]]\n", "[sources.syslog]\n", 'filter = "sshd"\n', "maxretry = 5\n",
    'bantime = "1h"\n', "x = ", "= 1", '"', "'", "'''", '"""', "[", "]", "{", "}", ",", "\n", "\r\n", "\\", "\\u",
    "\\U0011FFFF", "#", "1979-05-27T07:32:00Z", "1e", "0x", "+inf", "nan", "\x00", "\x7f", "\ud800", " ", "a.b.c = 1\n",
    "ignore = [\"::1\"", "x = " + "[" * 2000, "y = " + "{a=" * 2000, "z = " + "9" * 5000 + "\n",
]), max_size=25).map("".join)
FILE_TEXT = st.one_of(st.text(max_size=300), TOML_PIECES, st.builds(toml_document, DOCUMENT))
FILE_BYTES = st.one_of(FILE_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=200))


def loads_or_reports(main: bytes, jail_files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        (base / "jail.d").mkdir()
        (base / "jailwarden.toml").write_bytes(main)
        for index, content in enumerate(jail_files):
            (base / "jail.d" / f"{index:02d}.toml").write_bytes(content)
        written = {str(base / "jailwarden.toml"), str(base / "jail.d")} | {
            str(base / "jail.d" / f"{index:02d}.toml") for index in range(len(jail_files))}
        try:
            load_config(base / "jailwarden.toml")
        except ConfigErrors as errors:
            assert errors.errors
            for error in errors.errors:
                assert error.file in written, error
                assert error.key is None or (isinstance(error.key, str) and error.key), error
                assert isinstance(error.reason, str) and error.reason.strip(), error
                assert str(error)


@settings(max_examples=settings.default.max_examples)
@given(main=FILE_BYTES, jail_files=st.lists(FILE_BYTES, max_size=2))
# Found by these tests: OverflowError, tomllib's ValueError and RecursionError escaped the loader.
@example(main=b'[jails.sshd]\nfilter = "sshd"\nfindtime = ' + b"9" * 400 + b"\n", jail_files=[])
@example(main=b"[agent]\nreport_rate = " + b"9" * 400 + b"\n", jail_files=[])
@example(main=b"a = " + b"9" * 5000 + b"\n", jail_files=[])
@example(main=b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", jail_files=[b"b = " + b"{c=" * 2000 + b"1" + b"}" * 2000])
def test_any_file_text_loads_or_is_reported_with_file_key_and_reason(main: bytes, jail_files: list[bytes]) -> None:
    loads_or_reports(main, jail_files)


@settings(max_examples=settings.default.max_examples * 2)
@given(main=DOCUMENT, jail_files=st.lists(DOCUMENT, max_size=2))
def test_any_values_under_the_known_keys_load_or_are_reported_with_file_key_and_reason(main: dict,
                                                                                       jail_files: list[dict]) -> None:
    loads_or_reports(toml_document(main).encode(), [toml_document(doc).encode() for doc in jail_files])


# Every key the loader knows, each with a value of any type; around it, what the key needs to
# be checked at all (a jail's filter, the fleet's url and key).
KNOWN_PLACES = (
    [("agent", key) for key in AGENT_KEYS]
    + [("sources", "journal", key) for key in JOURNAL_KEYS] + [("sources", "syslog", key) for key in SYSLOG_KEYS]
    + [("jails", "sshd", key) for key in JAIL_KEYS]
    + [("jails", "sshd", "bantime_increment", key) for key in ("factor", "max")]
    + [("jails", "sshd", "aggregate", key) for key in ("bans", "window", "ipv4", "ipv6")]
    + [("firewall", backend, key) for backend, options in FIREWALL_OPTIONS.items() for key in options]
    + [("metrics", "listen"), ("actions", "mail", "type")] + [("fleet", key) for key in FLEET_KEYS]
)


@settings(max_examples=settings.default.max_examples * 2)
@given(place=st.sampled_from(KNOWN_PLACES), value=TOML_VALUE)
def test_each_known_key_takes_any_value_or_reports_it_with_file_key_and_reason(place: tuple[str, ...],
                                                                                value: object) -> None:
    document: dict = {"jails": {"sshd": {"filter": "sshd"}}}
    if place[0] == "fleet":
        document["fleet"] = {"url": "redis://127.0.0.1:6379/0", "key_file": "/etc/jailwarden/fleet.key"}
    table = document
    for key in place[:-1]:
        table = table.setdefault(key, {})
    table[place[-1]] = value
    loads_or_reports(toml_document(document).encode(), [])
