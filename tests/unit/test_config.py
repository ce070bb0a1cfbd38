"""Config: loading, merging jail.d, typed values, and an error for every mistake with file and key."""

import ipaddress
import math
import re
import textwrap
from pathlib import Path

import pytest

from agent.bans import BanPolicy, BantimeIncrement
from agent.config import (
    ConfigError,
    ConfigErrors,
    ListenAddress,
    load_config,
    parse_duration,
)
from agent.config_values import format_duration

BUNDLED = Path(__file__).resolve().parents[2] / "packaging" / "etc" / "jailwarden.toml"

MINIMAL = """
[jails.sshd]
filter = "sshd"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(main_text: str, tmp_path: Path, **jail_d: str) -> list[str]:
    main = write(tmp_path / "jailwarden.toml", main_text)
    for name, text in jail_d.items():
        write(tmp_path / "jail.d" / f"{name}.toml", text)
    with pytest.raises(ConfigErrors) as caught:
        load_config(main)
    return [str(error) for error in caught.value.errors]


def test_bundled_default_config_loads_with_sshd_enabled():
    config = load_config(BUNDLED)
    sshd = config.jails["sshd"]
    assert sshd.enabled and sshd.filter == "sshd"
    assert sshd.policy == BanPolicy(3600.0, BantimeIncrement(factor=2.0, max=7 * 86400.0))
    assert config.agent.backend == "auto"
    assert config.sources.journal.enabled


def test_defaults_fill_everything_but_the_filter(tmp_path):
    config = load_config(write(tmp_path / "jailwarden.toml", MINIMAL))
    sshd = config.jails["sshd"]
    assert (sshd.enabled, sshd.maxretry, sshd.findtime, sshd.bantime) == (True, 5, 600.0, 3600.0)
    assert sshd.bantime_increment is None and sshd.mode is None
    assert sshd.backend == config.agent.backend == "auto"
    assert config.agent.ignore == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
    assert config.agent.state_dir == Path("/var/lib/jailwarden")
    assert config.sources.journal.enabled and config.sources.syslog.enabled
    assert config.files == (tmp_path / "jailwarden.toml",)


def test_values_are_typed(tmp_path):
    config = load_config(
        write(
            tmp_path / "jailwarden.toml",
            """
            [agent]
            backend = "nftables"
            ignore = ["192.0.2.0/24", "::ffff:198.51.100.1"]
            [sources.syslog]
            enabled = true
            listen = ["udp://0.0.0.0:514", "tcp://[::1]:6514"]
            allow = ["10.0.0.0/8"]
            [jails.sshd]
            filter = "fail2ban:sshd"
            mode = "aggressive"
            maxretry = 3
            findtime = "1h30m"
            bantime = "permanent"
            ignore = ["2001:db8::/32"]
            backend = "log"
            [jails.web]
            filter = "/etc/jailwarden/filter.d/web.toml"
            enabled = false
            bantime = -1
            bantime_increment = true
            """,
        )
    )
    sshd = config.jails["sshd"]
    assert sshd.findtime == 5400.0 and sshd.bantime == math.inf and sshd.maxretry == 3
    assert sshd.ignore == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("198.51.100.1/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert (sshd.backend, config.jails["web"].backend) == ("log", "nftables")
    assert config.sources.syslog.listen == (
        ListenAddress("udp", ipaddress.ip_address("0.0.0.0"), 514),
        ListenAddress("tcp", ipaddress.ip_address("::1"), 6514),
    )
    assert str(config.sources.syslog.listen[1]) == "tcp://[::1]:6514"
    web = config.jails["web"]
    assert not web.enabled and web.policy.duration(5) == math.inf


def test_jail_d_files_add_jails_and_override_keys_in_name_order(tmp_path):
    main = write(
        tmp_path / "jailwarden.toml",
        """
        [agent]
        ignore = ["192.0.2.1"]
        [jails.sshd]
        filter = "sshd"
        maxretry = 5
        bantime_increment = { factor = 2, max = "1w" }
        """,
    )
    write(tmp_path / "jail.d" / "20-local.toml", '[jails.sshd]\nmaxretry = 2\n[agent]\nignore = ["192.0.2.2"]\n')
    write(tmp_path / "jail.d" / "10-first.toml", "[jails.sshd]\nmaxretry = 3\nfindtime = '1h'\n")
    write(tmp_path / "jail.d" / "30-more.toml", "[jails.postfix]\nfilter = 'postfix'\n")
    write(tmp_path / "jail.d" / "40-increment.toml", "[jails.sshd.bantime_increment]\nfactor = 3\n")
    write(tmp_path / "jail.d" / "notes.txt", "not toml, not read")
    config = load_config(main)
    sshd = config.jails["sshd"]
    assert (sshd.maxretry, sshd.findtime) == (2, 3600.0)
    assert sshd.bantime_increment == BantimeIncrement(factor=3.0, max=604800.0)
    assert list(config.jails) == ["sshd", "postfix"]
    assert config.agent.ignore == (ipaddress.ip_network("192.0.2.2"),)  # lists are replaced whole
    assert [path.name for path in config.files] == [
        "jailwarden.toml", "10-first.toml", "20-local.toml", "30-more.toml", "40-increment.toml",
    ]  # fmt: skip


def test_jail_dir_can_be_given_and_must_then_exist(tmp_path):
    main = write(tmp_path / "jailwarden.toml", MINIMAL)
    write(tmp_path / "elsewhere" / "off.toml", "[jails.sshd]\nenabled = false\n")
    assert not load_config(main, jail_dir=tmp_path / "elsewhere").jails["sshd"].enabled
    with pytest.raises(ConfigErrors, match="missing: the jail.d directory does not exist"):
        load_config(main, jail_dir=tmp_path / "missing")


def test_a_jail_d_file_can_switch_off_the_increment(tmp_path):
    main = write(tmp_path / "jailwarden.toml", MINIMAL + "bantime_increment = { factor = 2 }\n")
    write(tmp_path / "jail.d" / "local.toml", "[jails.sshd]\nbantime_increment = false\n")
    assert load_config(main).jails["sshd"].bantime_increment is None


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[agent]\nbackend = "ipsets"\n', "agent.backend", "unknown backend 'ipsets'.*did you mean 'ipset'"),
        ('[agent]\nstate_dir = "var/lib"\n', "agent.state_dir", "absolute path"),
        ('[agent]\nignore = "127.0.0.1"\n', "agent.ignore", "expected an array, got string"),
        ('[agent]\nignore = ["::1", "10.0.0.300"]\n', r"agent.ignore\[1\]", "'10.0.0.300' is not an IP address"),
        ('[agent]\nignore = ["10.0.0.1/8"]\n', r"agent.ignore\[0\]", "host bits set"),
        ("[agent]\nignore = [7]\n", r"agent.ignore\[0\]", "as a string, got integer 7"),
        ("[agent]\nhistory_window = 0\n", "agent.history_window", "positive"),
        ("[agent]\nreport_rate = 0\n", "agent.report_rate", "positive, finite number a second"),
        ('[agent]\nreport_rate = "fast"\n', "agent.report_rate", "a number a second such as 20"),
        ("[agent]\nreport_burst = 0\n", "agent.report_burst", "at least 1"),
        ('[agent]\nreport_http = "0.0.0.0:9717"\nreport_token_file = "/etc/jailwarden/report.token"\n',
         "agent.report_http", "'0.0.0.0:9717' is not a loopback address.*plain HTTP and must not leave this host"),
        ('[agent]\nreport_http = "[2001:db8::1]:9717"\nreport_token_file = "/t"\n', "agent.report_http",
         "not a loopback address"),
        ('[agent]\nreport_http = "localhost:9717"\nreport_token_file = "/t"\n', "agent.report_http",
         "HOST:PORT with an IP address"),
        ('[agent]\nreport_http = "127.0.0.1:9717"\n', "agent.report_token_file", "required with report_http"),
        ('[agent]\nreport_http = "127.0.0.1:9717"\nreport_token_file = "report.token"\n',
         "agent.report_token_file", "absolute path"),
        ('[agent]\nreport_token_file = "/t"\n', "agent.report_token_file", "the token of report_http: set that too"),
        ('[agent]\nignroe = ["::1"]\n', "agent.ignroe", "unknown key; did you mean 'ignore'"),
        ("[agnet]\n", "agnet", "unknown key; did you mean 'agent'"),
        ("[sources.file]\nenabled = true\n", "sources.file", "unknown key"),
        ('[sources.journal]\nenabled = "yes"\n', "sources.journal.enabled", "true or false, got string 'yes'"),
        ('[sources.syslog]\nlisten = ["http://127.0.0.1:514"]\n', r"sources.syslog.listen\[0\]",
         "udp://, tcp://, relp:// or unix://"),
        ('[fleet]\nurl = "redis://127.0.0.1:6379/0"\n', "fleet.key_file", "required in \\[fleet\\]"),
        ('[fleet]\nurl = "redis://:secret@127.0.0.1/0"\nkey_file = "/k"\n', "fleet.url", "password_file"),
        ('[fleet]\nurl = "http://127.0.0.1/0"\nkey_file = "/k"\n', "fleet.url", "redis://"),
        ('[fleet]\nkey_file = "/k"\n', "fleet.url", "url .* or sentinels"),
        ('[fleet]\nkey_file = "/k"\nsentinels = ["192.0.2.1"]\n', r"fleet.sentinels\[0\]", "HOST:PORT"),
        ('[fleet]\nkey_file = "/k"\nsentinels = ["192.0.2.1:26379"]\ncluster = true\n', "fleet.cluster",
         "through url"),
        ('[jails.sshd]\nfilter = "sshd"\nfleet_count = "yes"\n', "jails.sshd.fleet_count", "true or false"),
        ('[jails.sshd]\nfilter = "sshd"\naggregate = { bans = 1 }\n', "jails.sshd.aggregate", "at least 2"),
        ('[jails.sshd]\nfilter = "sshd"\naggregate = { ipv4 = 4 }\n', "jails.sshd.aggregate", "from 8 to 31"),
        ('[jails.sshd]\nfilter = "sshd"\naggregate = { size = 4 }\n', "jails.sshd.aggregate.size", "unknown key"),
        ('[firewall.nftables]\npriority = 5000\n', "firewall.nftables.priority", "from -1000 to 1000"),
        ('[firewall.ipset]\ntable = "nat"\n', "firewall.ipset.table", "unknown key"),
        ('[jails.sshd]\nfilter = "sshd"\nports = [22, 70000]\n', r"jails.sshd.ports\[1\]", "from 1 to 65535"),
        ('[jails.sshd]\nfilter = "sshd"\nprotocol = "sctp"\n', "jails.sshd.protocol", "'tcp', 'udp'"),
        ('[sources.syslog]\nlisten = ["udp://127.0.0.1:0"]\n', r"sources.syslog.listen\[0\]", "port from 1 to 65535"),
        ('[sources.syslog]\nlisten = ["udp://127.0.0.1:70000"]\n', r"sources.syslog.listen\[0\]",
         "port from 1 to 65535"),
        ('[sources.syslog]\nlisten = ["tcp://127.0.0.1"]\n', r"sources.syslog.listen\[0\]", "needs a port"),
        ('[sources.syslog]\nlisten = ["tcp://localhost:514"]\n', r"sources.syslog.listen\[0\]",
         "must be an IP address"),
        ('[sources.syslog]\nlisten = ["udp://127.0.0.1:514/x"]\n', r"sources.syslog.listen\[0\]", "only SCHEME://HOST:PORT"),
        ('[sources.syslog]\nenabled = true\nlisten = []\n', "sources.syslog.listen", "listens nowhere"),
        ('[sources.syslog]\nallow = ["10.0.0.0/33"]\n', r"sources.syslog.allow\[0\]", "not an IP address or network"),
        ("[jails.sshd]\nfilter = 'sshd'\nmaxretry = 0\n", "jails.sshd.maxretry", "at least 1, got integer 0"),
        ("[jails.sshd]\nfilter = 'sshd'\nmaxretry = 2.5\n", "jails.sshd.maxretry", "whole number"),
        ("[jails.sshd]\nfilter = 'sshd'\nfindtime = '10 minutes'\n", "jails.sshd.findtime", "not a duration"),
        ("[jails.sshd]\nfilter = 'sshd'\nfindtime = -1\n", "jails.sshd.findtime", "positive"),
        ("[jails.sshd]\nfilter = 'sshd'\nbantime = 0\n", "jails.sshd.bantime", "positive.*permanent"),
        ("[jails.sshd]\nfilter = 'sshd'\nbantime = 'forever'\n", "jails.sshd.bantime", "not a duration"),
        ("[jails.sshd]\nfilter = 'sshd'\nmaxrety = 3\n", "jails.sshd.maxrety", "did you mean 'maxretry'"),
        ("[jails.sshd]\nfilter = 'sshd'\nbackend = 'pf'\n", "jails.sshd.backend", "unknown backend 'pf'"),
        ("[jails.sshd]\nfilter = ''\n", "jails.sshd.filter", "non-empty string"),
        ("[jails.sshd]\nfilter = 'fail2ban:'\n", "jails.sshd.filter", "needs the filter's name"),
        ("[jails.sshd]\nmaxretry = 3\n", "jails.sshd.filter", "required"),
        ("[jails.'ssh d']\nfilter = 'sshd'\n", "jails.ssh d", "a jail name is"),
        ("[jails]\nsshd = 5\n", "jails.sshd", "expected a table, got integer 5"),
        (
            "[jails.sshd]\nfilter = 'sshd'\nbantime = '1w'\nbantime_increment = { max = '1d' }\n",
            "jails.sshd.bantime_increment.max",
            "shorter than bantime",
        ),
        (
            "[jails.sshd]\nfilter = 'sshd'\nbantime_increment = { factor = 0.5 }\n",
            "jails.sshd.bantime_increment.factor",
            "at least 1",
        ),
        (
            "[jails.sshd]\nfilter = 'sshd'\nbantime_increment = { factr = 3 }\n",
            "jails.sshd.bantime_increment.factr",
            "did you mean 'factor'",
        ),
        ("[jails.sshd]\nfilter = 'sshd'\nbantime_increment = 2\n", "jails.sshd.bantime_increment", "or false"),
    ],
)
def test_each_mistake_is_reported_with_file_key_and_reason(tmp_path, text, key, reason):
    errors = errors_of(text, tmp_path)
    assert len(errors) == 1, errors
    assert re.match(rf"{re.escape(str(tmp_path / 'jailwarden.toml'))}: {key}: .*{reason}", errors[0]), errors[0]


def test_all_mistakes_are_reported_together_each_naming_its_own_file(tmp_path):
    errors = errors_of(
        '[agent]\nbackend = "pf"\n[jails.sshd]\nfilter = "sshd"\nfindtime = "soon"\n',
        tmp_path,
        local='[jails.sshd]\nmaxretry = "five"\n[jails.nginx]\nfiltre = "nginx"\n',
    )
    main, local = tmp_path / "jailwarden.toml", tmp_path / "jail.d" / "local.toml"
    expected = [
        f"{main}: agent.backend: unknown backend 'pf'",
        f"{main}: jails.sshd.findtime: 'soon' is not a duration",
        f"{local}: jails.sshd.maxretry: expected a whole number",
        f"{local}: jails.nginx.filtre: unknown key; did you mean 'filter'?",
        f"{local}: jails.nginx.filter: required",
    ]
    assert len(errors) == len(expected)
    for start in expected:
        assert any(error.startswith(start) for error in errors), (start, errors)


def test_a_jail_without_filter_that_looks_like_a_typo_says_so(tmp_path):
    errors = errors_of(MINIMAL, tmp_path, local="[jails.shsd]\nenabled = false\n")
    reason = "required: every jail names its filter (is this meant to be jail 'sshd'?)"
    assert errors == [f"{tmp_path / 'jail.d' / 'local.toml'}: jails.shsd.filter: {reason}"]


def test_toml_syntax_errors_give_line_and_column_for_every_broken_file(tmp_path):
    errors = errors_of('[agent]\nbackend = "ipset\n', tmp_path, local="[jails.sshd\n")
    assert errors[0].startswith(f"{tmp_path / 'jailwarden.toml'}: line 2, column ")
    assert "TOML syntax error" in errors[0]
    assert errors[1].startswith(f"{tmp_path / 'jail.d' / 'local.toml'}: line 1, column ")
    assert len(errors) == 2


def test_missing_main_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "nope.toml")
    (error,) = caught.value.errors
    assert isinstance(error, ConfigError) and error.key is None
    assert str(error) == f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"


def test_jail_d_entry_that_is_not_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "jail.d" / "old.toml").mkdir(parents=True)
    errors = errors_of(MINIMAL, tmp_path)
    assert errors == [f"{tmp_path / 'jail.d' / 'old.toml'}: cannot read the file: Is a directory"]


def test_non_utf8_file_is_a_clear_error(tmp_path):
    (tmp_path / "jailwarden.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigErrors, match="not UTF-8 text"):
        load_config(tmp_path / "jailwarden.toml")


def test_config_errors_print_one_per_line():
    errors = ConfigErrors([ConfigError("a.toml", "agent.backend", "bad"), ConfigError("b.toml", None, "gone")])
    assert str(errors) == "a.toml: agent.backend: bad\nb.toml: gone"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (600, 600.0), (1.5, 1.5), ("600", 600.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0),
        ("2d", 172800.0), ("1w", 604800.0), ("1h30m", 5400.0), ("1d 12h", 129600.0), ("1.5h", 5400.0),
    ],
)  # fmt: skip
def test_durations_accept_seconds_units_and_combinations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4, "4s"), (3.5, "3.5s"), (600, "10m"), (3600, "1h"), (5400, "1h30m"), (604800, "1w"), (691201, "1w1d1s")],
)
def test_durations_are_shown_as_the_config_writes_them(seconds, text):
    assert format_duration(seconds) == text and parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "positive"), (-5, "positive"), ("-5m", "positive"), ("", "not a duration"), ("10min", "not a duration"),
        ("1h30", "not a duration"), ("30m1h", "largest first"), ("1h1h", "at most once"), (math.inf, "finite"),
        (math.nan, "positive"), ("permanent", "not a duration"), (-1, "positive"),
    ],
)  # fmt: skip
def test_bad_durations_say_why(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


@pytest.mark.parametrize(("value", "kind"), [(True, "boolean"), ([60], "array"), ({"m": 10}, "table")])
def test_durations_of_the_wrong_type_say_what_they_got(value, kind):
    with pytest.raises(TypeError, match=f"got {kind}"):
        parse_duration(value)


def test_permanent_is_accepted_only_where_asked_for():
    assert parse_duration("permanent", permanent=True) == math.inf
    assert parse_duration(-1, permanent=True) == math.inf
    with pytest.raises(ValueError, match='"permanent"'):
        parse_duration(-2, permanent=True)


def test_application_reports_are_limited_by_default_and_http_is_off_unless_set(tmp_path):
    agent = load_config(write(tmp_path / "jailwarden.toml", MINIMAL)).agent
    assert (agent.report_rate, agent.report_burst, agent.report_http, agent.report_token_file) == (20.0, 100, None,
                                                                                                  None)
    agent = load_config(write(tmp_path / "http.toml", MINIMAL + """
        [agent]
        report_rate = 0.5
        report_burst = 10
        report_http = "[::1]:9717"
        report_token_file = "/etc/jailwarden/report.token"
        """)).agent
    assert (agent.report_rate, agent.report_burst) == (0.5, 10)
    assert str(agent.report_http) == "tcp://[::1]:9717" and agent.report_http.host.is_loopback
    assert agent.report_token_file == Path("/etc/jailwarden/report.token")
    assert load_config(write(tmp_path / "v4.toml", '[agent]\nreport_http = "127.0.0.2:9717"\n'
                             'report_token_file = "/t"\n' + MINIMAL)).agent.report_http.port == 9717


def test_firewall_options_and_port_scoping_are_read(tmp_path):
    config = load_config(write(tmp_path / "jailwarden.toml",
                               '[firewall.ipset]\nchain = "DOCKER-USER"\naction = "reject"\n'
                               '[jails.sshd]\nfilter = "sshd"\nports = [22, 2222]\n'))
    assert config.firewall["ipset"] == {"chain": "DOCKER-USER", "action": "reject"}
    assert config.firewall["route"] == {}
    assert (config.jails["sshd"].ports, config.jails["sshd"].protocol) == ((22, 2222), "tcp")


def test_fleet_mode_is_off_unless_configured_and_reads_every_deployment(tmp_path):
    config = load_config(write(tmp_path / "jailwarden.toml", MINIMAL))
    assert config.fleet is None
    sshd = config.jails["sshd"]
    assert (sshd.share, sshd.accept, sshd.fleet_count, sshd.aggregate) == (True, True, False, None)
    config = load_config(write(tmp_path / "sentinel.toml", MINIMAL + """
        [fleet]
        sentinels = ["192.0.2.10:26379", "[2001:db8::10]:26379"]
        service = "jw"
        key_file = "/etc/jailwarden/fleet.key"
        """))
    assert config.fleet.sentinels == (("192.0.2.10", 26379), ("2001:db8::10", 26379))
    assert config.fleet.url is None and config.fleet.service == "jw" and config.fleet.stream == "jailwarden:bans"
    config = load_config(write(tmp_path / "cluster.toml", MINIMAL + """
        [fleet]
        url = "rediss://192.0.2.20:6380/0"
        cluster = true
        ca_file = "/etc/jailwarden/ca.pem"
        key_file = "/etc/jailwarden/fleet.key"
        """))
    assert config.fleet.cluster and config.fleet.ca_file == Path("/etc/jailwarden/ca.pem")
