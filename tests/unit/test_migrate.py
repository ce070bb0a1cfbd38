"""`jailwarden import-fail2ban`: Fail2Ban jail configurations, written here as small trees of
our own, converted to jailwarden config that loads and checks cleanly."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Config, load_config
from parsers.filterfile import SHIPPED_DIR

REAL_FAIL2BAN = Path("/etc/fail2ban")

# A jail.conf shaped like Fail2Ban's: defaults, action templates built from them, and jails that
# take their log paths from an included paths file.
JAIL_CONF = """
[INCLUDES]
before = paths-distro.conf

[DEFAULT]
enabled = false
mode = normal
filter = %(__name__)s[mode=%(mode)s]
bantime = 10m
findtime = 10m
maxretry = 5
port = 0:65535
protocol = tcp
chain = <known/chain>
ignoreip = 127.0.0.1/8 ::1
destemail = root@localhost
banaction = iptables-multiport
banaction_allports = iptables-allports
action_ = %(banaction)s[port="%(port)s", protocol="%(protocol)s", chain="%(chain)s"]
action_mw = %(action_)s
            sendmail-whois[dest="%(destemail)s", protocol="%(protocol)s"]
action_report = %(action_)s
                abuseipdb[abuseipdb_apikey="%(abuse_key)s", category="18"]
action = %(action_)s

[sshd]
port = ssh
logpath = %(sshd_log)s
backend = %(sshd_backend)s

[web-login]
filter = acme-portal
port = http,https
logpath = %(web_log)s

[legacy-ftp]
port = ftp,ftp-data
logpath = /var/log/ftp.log

[recidive]
logpath = /var/log/fail2ban.log
banaction = %(banaction_allports)s
bantime = 1w
findtime = 1d
"""

PATHS = """
[DEFAULT]
default_backend = auto
sshd_log = /var/log/auth.log
sshd_backend = %(default_backend)s
web_log = /srv/portal/login.log
"""

FILTER = "[Definition]\nfailregex = ^login failed for <HOST>$\n"


@dataclass
class Result:
    code: int
    text: str
    err: str
    jails: dict[str, dict]
    agent: dict
    config: Config


def convert(tmp_path: Path, capsys, files: dict[str, str | bytes], *, base: bool = True) -> Result:
    """Write a Fail2Ban tree (the base one plus `files`), import it, and check the output the way
    a user would: it must load, and `check-config` may only object to Fail2Ban filters."""
    tree = tmp_path / "fail2ban"
    written = ({"jail.conf": JAIL_CONF, "paths-distro.conf": PATHS, "filter.d/acme-portal.conf": FILTER,
                "filter.d/legacy-ftp.conf": FILTER} if base else {}) | files
    for name, text in written.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (tree / name).write_bytes(text)
        else:
            (tree / name).write_text(textwrap.dedent(text))
    code = main(["import-fail2ban", str(tree)])
    text, err = capsys.readouterr()
    document = tomllib.loads(text)
    return Result(code, text, err, document.get("jails", {}), document.get("agent", {}),
                  check_output(tmp_path, capsys, text, document))


def check_output(tmp_path: Path, capsys, text: str, document: dict) -> Config:
    directory = tmp_path / "jailwarden"
    directory.mkdir(exist_ok=True)
    path = directory / "jailwarden.toml"
    path.write_text(text)
    config = load_config(path)  # raises with every unknown key and bad value
    code = main(["check-config", "--config", str(path)])
    _, err = capsys.readouterr()
    if code != 0:
        # Fail2Ban filters are being added by other work; until then check-config refuses them.
        problems = err.splitlines()[:-1]
        for line in problems:
            found = re.match(rf"{re.escape(str(path))}: jails\.([\w-]+)\.filter: ", line)
            assert found and document["jails"][found[1]]["filter"].startswith("fail2ban:"), err
    return config


def comments(text: str, jail: str) -> str:
    """The jail's table in the output, comments joined into one line each."""
    table = text.split(f"[jails.{jail}]\n", 1)[1].split("\n\n", 1)[0]
    return re.sub(r"\n#\s+(?!fail2ban:)", " ", table)


def test_defaults_are_inherited_and_later_files_win_in_fail2ban_order(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {
        # Fail2Ban's order: jail.conf, jail.d/*.conf, jail.local, jail.d/*.local (names sorted).
        "jail.d/20-web.conf": "[web-login]\nenabled = true\nmaxretry = 2\n",
        "jail.d/10-ssh.conf": "[sshd]\nenabled = true\nmaxretry = 9\nfindtime = 1h\n",
        "jail.local": "[DEFAULT]\nbantime = 1h\n[sshd]\nmaxretry = 4\n[web-login]\nmaxretry = 6\n",
        "jail.d/zz-web.local": "[web-login]\nmaxretry = 7\n",
        "jail.d/aa-web.local": "[web-login]\nmaxretry = 8\nbantime = 2d\n",
    })
    assert result.code == 0, result.err
    assert list(result.jails) == ["sshd", "web-login"]
    sshd, web = result.config.jails["sshd"], result.config.jails["web-login"]
    assert (sshd.maxretry, sshd.findtime, sshd.bantime) == (4, 3600, 3600)  # jail.local over jail.d/*.conf
    assert (web.maxretry, web.findtime, web.bantime) == (7, 600, 2 * 86400)  # jail.d/*.local last, sorted
    assert "Read, in this order: paths-distro.conf, jail.conf, jail.d/10-ssh.conf, jail.d/20-web.conf," \
           " jail.local, jail.d/aa-web.local, jail.d/zz-web.local." in " ".join(result.text.split("\n# "))


def test_disabled_jails_are_left_out(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {
        "jail.d/on.conf": "[sshd]\nenabled = true\n[legacy-ftp]\nenabled = yes\n",
        "jail.local": "[legacy-ftp]\nenabled = false\n",
    })
    assert list(result.jails) == ["sshd"]
    assert "web-login" not in result.text and "legacy-ftp" not in result.text


def test_interpolation_with_includes_known_default_and_name(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {
        # An include's .local twin is read right after it.
        "paths-distro.local": "[DEFAULT]\nsshd_log = /var/log/secure\n",
        "jail.local": textwrap.dedent("""
            [DEFAULT]
            notes = 100%% sure
            [sshd]
            enabled = true
            port = %(known/port)s,2222
            bantime = %(default/findtime)s
            [web-login]
            enabled = true
            logpath = /srv/%(__name__)s/%(web_log_name)s
            web_log_name = access.log
        """),
    })
    assert result.code == 0, result.err
    assert result.jails["sshd"]["ports"] == [22, 2222]
    assert result.jails["sshd"]["bantime"] == "10m"
    assert "Fail2Ban read /var/log/secure (backend = auto)" in comments(result.text, "sshd")
    assert "Fail2Ban read /srv/web-login/access.log" in comments(result.text, "web-login")


def test_an_undefined_reference_is_reported_with_file_section_and_key(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": "[sshd]\nenabled = true\nlogpath = %(nowhere_log)s\n"})
    assert result.code == 1
    assert (f"{tmp_path}/fail2ban/jail.local: [sshd] logpath: refers to %(nowhere_log)s, which no file read defines"
            in result.err)
    assert list(result.jails) == ["sshd"]


@pytest.mark.parametrize("banaction, backend, warned", [
    ("iptables-multiport", "ipset", False),
    ("iptables-ipset-proto6", "ipset", False),
    ("nftables-multiport", "nftables", False),
    ("route", "route", False),
    ("hostsdeny", "hostsdeny", False),
    ("firewallcmd-ipset", None, True),
    ("shorewall", None, True),
    ("my-own-firewall", None, True),
])
def test_banaction_chooses_the_agent_backend(tmp_path, capsys, banaction, backend, warned) -> None:
    result = convert(tmp_path, capsys, {"jail.local": f"[DEFAULT]\nbanaction = {banaction}\n"
                                                      "[sshd]\nenabled = true\n"})
    assert result.agent.get("backend") == backend
    assert result.config.jails["sshd"].backend == (backend or "auto")  # unset: the default, "auto"
    assert "backend" not in result.jails["sshd"], "the jail uses [agent] backend"
    assert (result.code == 1) is warned, result.err
    if warned:
        assert f"jail.local: [DEFAULT] banaction: {banaction} has no jailwarden backend" in result.err
        assert result.err.count("no jailwarden backend") == 1, "said once, not again for each jail"
    scoped = backend in ("ipset", "nftables", None)
    assert result.jails["sshd"].get("ports") == ([22] if scoped else None)


def test_a_jail_with_its_own_banaction_gets_its_own_backend_and_allports_bans_every_port(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": textwrap.dedent("""
        [DEFAULT]
        banaction_allports = nftables-allports
        [sshd]
        enabled = true
        banaction = %(banaction_allports)s
        [web-login]
        enabled = true
        banaction = hostsdeny
        [legacy-ftp]
        enabled = true
        action = route
    """)})
    assert result.code == 0, result.err
    assert result.agent["backend"] == "ipset"
    assert result.jails["sshd"]["backend"] == "nftables" and "ports" not in result.jails["sshd"]
    assert result.jails["web-login"]["backend"] == "hostsdeny" and "ports" not in result.jails["web-login"]
    assert result.jails["legacy-ftp"]["backend"] == "route"


def test_ports_and_protocol(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": textwrap.dedent("""
        [sshd]
        enabled = true
        port = ssh, 2222
        [web-login]
        enabled = true
        port = 5060:5062
        protocol = udp
        [legacy-ftp]
        enabled = true
        port = 53
        action_ = %(default/action_)s[name=%(__name__)s-tcp, protocol="tcp"]
                  %(default/action_)s[name=%(__name__)s-udp, protocol="udp"]
    """)})
    assert result.jails["sshd"]["ports"] == [22, 2222] and result.jails["sshd"]["protocol"] == "tcp"
    assert result.jails["web-login"]["ports"] == [5060, 5061, 5062]
    assert result.jails["web-login"]["protocol"] == "udp"
    # jailwarden scopes a jail to one protocol: both protocols' ports become "every port", said aloud.
    assert "ports" not in result.jails["legacy-ftp"]
    assert "a jailwarden jail bans the ports of tcp or of udp" in comments(result.text, "legacy-ftp")
    assert result.code == 1


@pytest.mark.parametrize("fail2ban, jailwarden", [
    ("600", "10m"), ("10m", "10m"), ("1h", "1h"), ("1d", "1d"), ("1w", "1w"), ("600s", "10m"),
    ("1hour", "1h"), ("5 mins", "5m"), ("1d 12h", "1d12h"), ("90", "1m30s"), ("-1", "permanent"),
])
def test_bantime_forms(tmp_path, capsys, fail2ban, jailwarden) -> None:
    result = convert(tmp_path, capsys, {"jail.local": f"[sshd]\nenabled = true\nbantime = {fail2ban}\n"})
    assert result.code == 0, result.err
    assert result.jails["sshd"]["bantime"] == jailwarden
    expected = math.inf if jailwarden == "permanent" else result.config.jails["sshd"].bantime
    assert result.config.jails["sshd"].bantime == expected


def test_a_bad_value_is_reported_and_fail2bans_default_written(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": "[sshd]\nenabled = true\nbantime = 3 fortnights\n"
                                                      "maxretry = many\n"})
    assert result.code == 1
    jail_local = tmp_path / "fail2ban" / "jail.local"
    assert f"{jail_local}: [sshd] bantime: '3 fortnights' is not a valid bantime" in result.err
    assert f"{jail_local}: [sshd] maxretry: 'many' is not a valid maxretry" in result.err
    assert (result.jails["sshd"]["bantime"], result.jails["sshd"]["maxretry"]) == ("10m", 3)


@pytest.mark.parametrize("settings, factor, maximum, warning", [
    ("", 2, 600 * 2**20, None),  # Fail2Ban doubles, at most 20 times
    ("bantime.maxtime = 1w", 2, 7 * 86400, None),
    ("bantime.multipliers = 1 3 9 27", 3, 27 * 600, None),
    ("bantime.multipliers = 1 5 30 60 300", None, 300 * 600, "is not a geometric series"),
    ("bantime.formula = ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)\n"
     "bantime.factor = 1", math.e, math.inf, None),
    ("bantime.formula = ban.Time * 5\nbantime.maxtime = 1d", 2, 86400, "is not converted"),
    ("bantime.factor = 3", 2, 3 * 600 * 2**20, "has no such multiplier"),
    ("bantime.multipliers = 1 2 lots", 0, 0, "expected whole numbers"),
    ("bantime.maxtime = 2d\nbantime.rndtime = 10m", 2, 2 * 86400, "a random extra time is not converted"),
])
def test_incremental_bantime(tmp_path, capsys, settings, factor, maximum, warning) -> None:
    result = convert(tmp_path, capsys, {"jail.local": f"[DEFAULT]\nbantime.increment = true\n{settings}\n"
                                                      "[sshd]\nenabled = true\n"})
    increment = result.config.jails["sshd"].bantime_increment
    if maximum == 0:  # not convertible at all: no increment, said aloud
        assert increment is None and result.code == 1 and warning in result.err
        return
    assert increment is not None
    if factor is not None:
        assert increment.factor == pytest.approx(factor, rel=1e-5)
    assert increment.max == pytest.approx(maximum)
    if warning is None:
        assert result.code == 0, result.err
    else:
        assert result.code == 1 and warning in result.err
        assert warning in comments(result.text, "sshd")


def test_no_increment_is_written_as_false(tmp_path, capsys) -> None:
    # So the output merged over a config whose jail has one still means what Fail2Ban did.
    result = convert(tmp_path, capsys, {"jail.local": "[sshd]\nenabled = true\n"})
    assert result.jails["sshd"]["bantime_increment"] is False


def test_ignoreip_addresses_and_networks_convert_and_host_names_are_reported(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": textwrap.dedent("""
        [DEFAULT]
        ignoreip = 127.0.0.1/8 ::1 192.0.2.0/24 10.1.2.3 vpn.example.org 2001:db8::/32
        [sshd]
        enabled = true
        ignoreip = %(known/ignoreip)s 198.51.100.7
    """)})
    assert result.agent["ignore"] == ["127.0.0.0/8", "::1", "192.0.2.0/24", "10.1.2.3", "2001:db8::/32"]
    assert result.jails["sshd"]["ignore"] == ["198.51.100.7"]
    assert result.code == 1
    jail_local = tmp_path / "fail2ban" / "jail.local"
    assert f"{jail_local}: [DEFAULT] ignoreip: host name 'vpn.example.org'" in result.err
    assert "vpn.example.org" in result.text.split("[jails.")[0], "noted in [agent]"


def test_shell_actions_are_listed_as_comments_and_never_run(tmp_path, capsys, monkeypatch) -> None:
    marker = tmp_path / "action-ran"

    def refuse(*args, **kwargs):
        raise AssertionError(f"import-fail2ban ran a command: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "system", refuse)
    result = convert(tmp_path, capsys, {
        "action.d/notify-team.conf": f"[Definition]\nactionban = touch {marker}\n",
        "jail.local": textwrap.dedent("""
            [DEFAULT]
            abuse_key = s3cr3t-key
            [sshd]
            enabled = true
            action = %(action_mw)s
                     notify-team[channel=ops]
            [web-login]
            enabled = true
            action = %(action_report)s
                     cloudflare
            [legacy-ftp]
            enabled = true
            action = sendmail-whois[dest=admin@example.org]
        """),
    })
    assert not marker.exists()
    assert result.code == 1
    sshd, web, ftp = (comments(result.text, jail) for jail in ("sshd", "web-login", "legacy-ftp"))
    assert "sendmail-whois[dest=root@localhost, protocol=tcp] is not converted" in sshd
    assert "notify-team[channel=ops] is not converted" in sshd
    assert "abuseipdb[abuseipdb_apikey=..., category=18] is not converted" in web
    assert "cloudflare is not converted" in web
    assert "s3cr3t" not in result.text + result.err
    assert result.err.count("jailwarden never runs shell commands") == 5
    # The firewall part of the action still bans; a jail with no ban action only logs, as before.
    assert result.config.jails["sshd"].backend == "ipset" and result.jails["sshd"]["ports"] == [22]
    assert result.jails["legacy-ftp"]["backend"] == "log"
    assert "no ban action" in ftp


def test_filters_map_to_shipped_ones_by_name_else_to_fail2ban_filters(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": textwrap.dedent("""
        [sshd]
        enabled = true
        filter = sshd[mode=aggressive]
        [web-login]
        enabled = true
        filter = acme-portal[mode=strict]
        [ssh-too]
        enabled = true
        port = 2222
        filter = sshd[mode=paranoid]
        [legacy-ftp]
        enabled = true
        filter = vsftpd-custom
    """)})
    shipped = {path.stem for path in SHIPPED_DIR.glob("*.toml")}
    assert "sshd" in shipped
    assert (result.jails["sshd"]["filter"], result.jails["sshd"]["mode"]) == ("sshd", "aggressive")
    assert "acme-portal" not in shipped
    assert result.jails["web-login"]["filter"] == "fail2ban:acme-portal"
    assert result.jails["web-login"]["mode"] == "strict"
    # A mode our filter lacks is not guessed: the jail runs the filter's normal mode, with a warning.
    assert result.jails["ssh-too"]["filter"] == "sshd" and "mode" not in result.jails["ssh-too"]
    assert "mode 'paranoid' is not converted" in comments(result.text, "ssh-too")
    assert "[ssh-too] filter: mode 'paranoid'" in result.err
    assert "Fail2Ban has no filter" in comments(result.text, "legacy-ftp")
    assert result.code == 1


@pytest.mark.parametrize("backend", ["auto", "systemd"])
def test_recidive_becomes_a_jail_counting_jailwardens_own_bans(tmp_path, capsys, backend) -> None:
    result = convert(tmp_path, capsys, {"jail.local": f"[DEFAULT]\nbackend = {backend}\n"
                                                      "[sshd]\nenabled = true\n[recidive]\nenabled = true\n"})
    assert result.code == 0, result.err
    assert list(result.jails) == ["sshd", "recidive"]
    assert result.jails["recidive"]["filter"] == "recidive", "jailwarden's shipped filter of that name"
    recidive = result.config.jails["recidive"]
    assert (recidive.maxretry, recidive.findtime, recidive.bantime) == (5, 86400, 7 * 86400)
    assert "ports" not in result.jails["recidive"], "banaction_allports: every port"
    table = comments(result.text, "recidive")
    assert "this jail counts jailwarden's own bans by the other jails" in table
    assert "fail2ban.log" not in result.text and "journal (backend" not in table


def test_journal_and_log_files_are_noted(tmp_path, capsys) -> None:
    result = convert(tmp_path, capsys, {"jail.local": textwrap.dedent("""
        [sshd]
        enabled = true
        backend = systemd
        [web-login]
        enabled = true
        journalmatch = _SYSTEMD_UNIT=portal.service
    """)})
    assert "Fail2Ban read the systemd journal (backend = systemd)" in comments(result.text, "sshd")
    web = comments(result.text, "web-login")
    assert "Fail2Ban read /srv/portal/login.log" in web and "rsyslog" in web
    assert "journalmatch: not converted" in web


def test_a_broken_file_is_reported_and_skipped_and_the_rest_converted(tmp_path, capsys) -> None:
    (tmp_path / "fail2ban" / "jail.d" / "unreadable.conf").mkdir(parents=True)  # unreadable even as root
    result = convert(tmp_path, capsys, {
        "jail.d/broken.conf": "[web-login]\nenabled = true\nthis line is not a setting\n",
        "jail.d/latin1.local": b"[legacy-ftp]\nenabled = true\n# caf\xe9\n",
        "jail.local": "[sshd]\nenabled = true\n[nginx.bad name]\nenabled = true\nfilter = sshd\n",
    })
    assert result.code == 1
    jail_d = tmp_path / "fail2ban" / "jail.d"
    assert f"{jail_d / 'broken.conf'}: line 3: not `key = value`" in result.err
    assert f"{jail_d / 'latin1.local'}: not UTF-8 text" in result.err
    assert f"{jail_d / 'unreadable.conf'}: cannot read the file (Is a directory); it is skipped" in result.err
    assert result.err.count("the file is skipped") == 2
    assert list(result.jails) == ["sshd", "nginx-bad-name"]
    assert "written as nginx-bad-name" in result.err


def test_a_directory_without_jail_conf_exits_2(tmp_path, capsys) -> None:
    assert main(["import-fail2ban", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no jail.conf" in err


def test_the_debian_package_configuration_with_sshd_enabled(tmp_path, capsys) -> None:
    if not (REAL_FAIL2BAN / "jail.conf").is_file():
        print(f"skipped: {REAL_FAIL2BAN}/jail.conf does not exist (install Debian's fail2ban package)")
        pytest.skip(f"{REAL_FAIL2BAN}/jail.conf does not exist")
    tree = tmp_path / "fail2ban"
    shutil.copytree(REAL_FAIL2BAN, tree, symlinks=True)
    (tree / "jail.local").write_text("[sshd]\nenabled = true\n")
    code = main(["import-fail2ban", str(tree)])
    text, err = capsys.readouterr()
    document = tomllib.loads(text)
    config = check_output(tmp_path, capsys, text, document)
    assert code == 0, err
    assert document["jails"]["sshd"]["filter"] == "sshd"
    assert document["jails"]["sshd"]["ports"] == [22]
    assert config.jails["sshd"].enabled and config.jails["sshd"].maxretry >= 1
