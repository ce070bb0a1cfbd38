"""Fail2Ban filters from the command line and the configuration: `test-filter fail2ban:NAME`,
`check-config` with `filter = "fail2ban:NAME"` jails and `[agent] fail2ban_dir`, and the
jails the daemon builds from them."""

from __future__ import annotations

import json
from pathlib import Path

from f2b_trees import COMMON, SSHLIKE, write_tree

from agent.cli import main
from agent.config import load_config
from agent.jails import build_jails
from parsers.fail2ban import Fail2BanFilter

LOG = [
    "Nov  3 10:20:30 web1 sshd[101]: Failed password for invalid user admin from 192.0.2.40 port 4242 ssh2",
    "Nov  3 10:20:31 web1 sshd[102]: Connection closed by 192.0.2.41 port 5000 [preauth]",
    "",
    "# a comment",
    "Nov  3 10:20:32 web1 sshd[103]: Accepted publickey for alice from 198.51.100.1 port 22 ssh2",
    json.dumps({"__REALTIME_TIMESTAMP": "1795529641231004", "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd",
                "SYSLOG_PID": "104", "_SYSTEMD_UNIT": "ssh.service",
                "MESSAGE": "Failed password for root from 192.0.2.42 port 22 ssh2"}),
    json.dumps({"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "cron", "_SYSTEMD_UNIT": "cron.service",
                "MESSAGE": "Failed password for root from 192.0.2.43 port 22 ssh2"}),
]


def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "fail2ban", {"common.conf": COMMON, "sshlike.conf": SSHLIKE,
                                              "broken.conf": "[Definition]\nfailregex = ^bad (<HOST>\n",
                                              "web.conf": "[Definition]\nfailregex = ^\\[\\] denied <HOST>$\n"})


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.log"
    path.write_text("\n".join(LOG) + "\n")
    return path


def test_test_filter_reads_a_fail2ban_filter_by_name(tmp_path, capsys):
    directory = tree(tmp_path)
    code, out, err = run(capsys, "test-filter", "fail2ban:sshlike", str(log_file(tmp_path)),
                         "--fail2ban-dir", str(directory), "--json")
    assert code == 0, err
    verdicts = {record["lineno"]: (record["verdict"], record["host"]) for record in map(json.loads, out.splitlines())}
    assert verdicts == {1: ("fail", "192.0.2.40"), 2: ("miss", None), 5: ("miss", None), 6: ("fail", "192.0.2.42"),
                        7: ("other", None)}


def test_test_filter_takes_the_mode_and_a_path_with_parameters(tmp_path, capsys):
    directory = tree(tmp_path)
    log = str(log_file(tmp_path))
    code, out, _ = run(capsys, "test-filter", "fail2ban:sshlike", log, "--fail2ban-dir", str(directory),
                       "--mode", "aggressive")
    assert code == 0 and "filter     sshlike (mode aggressive)" in out and "3 matched" in out
    path = f"{directory}/filter.d/sshlike.conf[mode=aggressive]"
    code, out, _ = run(capsys, "test-filter", path, log)
    assert code == 0 and "3 matched" in out and f"{directory}/filter.d/sshlike.conf" in out


def test_test_filter_needs_no_program_identity_and_prints_notes(tmp_path, capsys):
    directory = tree(tmp_path)
    log = tmp_path / "web.log"
    log.write_text("[03/Nov/2026:10:20:30 +0000] denied 192.0.2.44\n")
    code, out, err = run(capsys, "test-filter", "fail2ban:web", str(log), "--fail2ban-dir", str(directory))
    assert code == 0 and "1 matched" in out, err
    write_tree(directory, {"routed.conf": "[Definition]\n_daemon = web\\d+\nfailregex = ^denied <HOST>$\n"
                                          "journalmatch = _SYSTEMD_UNIT=web.service\n"})
    code, out, err = run(capsys, "test-filter", "fail2ban:routed", str(log), "--fail2ban-dir", str(directory))
    assert code == 0 and "note: syslog messages are not routed to this filter" in err


def test_test_filter_reports_a_broken_fail2ban_filter_by_file_and_key(tmp_path, capsys):
    directory = tree(tmp_path)
    code, _, err = run(capsys, "test-filter", "fail2ban:broken", str(log_file(tmp_path)),
                       "--fail2ban-dir", str(directory))
    assert code == 2
    assert f"{directory}/filter.d/broken.conf: failregex[0]: does not compile" in err


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jailwarden.toml"
    path.write_text(f'[agent]\nfail2ban_dir = "{tmp_path / "fail2ban"}"\n' + text)
    return path


def test_check_config_loads_fail2ban_filters_from_fail2ban_dir(tmp_path, capsys):
    tree(tmp_path)
    path = config(tmp_path, '[jails.ssh]\nfilter = "fail2ban:sshlike"\nmode = "aggressive"\n'
                            '[jails.ssh2]\nfilter = "fail2ban:sshlike[mode=aggressive]"\n')
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 0, err
    assert "2 jails enabled: ssh, ssh2" in out


def test_check_config_reports_each_fail2ban_problem_with_its_file_and_key(tmp_path, capsys):
    directory = tree(tmp_path)
    path = config(tmp_path, '[jails.a]\nfilter = "fail2ban:broken"\n[jails.b]\nfilter = "fail2ban:web"\n'
                            '[jails.c]\nfilter = "fail2ban:nosuch"\n[jails.d]\nfilter = "fail2ban:sshlike"\n'
                            'mode = "paranoid"\n')
    code, _, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1
    lines = err.splitlines()
    assert f"{path}: jails.a.filter: {directory}/filter.d/broken.conf: failregex[0]: does not compile" \
           in "\n".join(lines)
    assert any(line.startswith(f"{path}: jails.b.filter: ") and "names no program" in line for line in lines), err
    assert any(line.startswith(f"{path}: jails.c.filter: ") and "no such Fail2Ban filter" in line for line in lines)
    assert any(line.startswith(f"{path}: jails.d.filter: ") and "paranoid" in line for line in lines), err
    assert lines[-1] == "jailwarden: 4 problems in the configuration"


def test_fail2ban_dir_must_be_absolute(tmp_path, capsys):
    path = tmp_path / "jailwarden.toml"
    path.write_text('[agent]\nfail2ban_dir = "etc/fail2ban"\n[jails.ssh]\nfilter = "sshd"\n')
    code, _, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and f"{path}: agent.fail2ban_dir: expected an absolute path" in err


def test_jails_are_built_with_fail2ban_filters_and_warnings_say_what_will_not_count(tmp_path):
    tree(tmp_path)
    path = config(tmp_path, '[jails.ssh]\nfilter = "fail2ban:sshlike"\nmode = "aggressive"\n'
                            '[jails.web]\nfilter = "fail2ban:web"\n')
    setups, problems = build_jails(load_config(path), tmp_path / "filter.d")
    assert [setup.name for setup in setups] == ["ssh"]
    flt = setups[0].filter
    assert isinstance(flt, Fail2BanFilter) and flt.mode == "aggressive"
    assert any(p.startswith("jail web: not started: ") and "names no program" in p for p in problems), problems
    assert any(p.startswith("jail ssh: the journalmatch of Fail2Ban filter 'fail2ban:sshlike'") and "_UID=0" in p
               for p in problems), problems
    # A change to any file the filter was read from changes the fingerprint, so a reload sees it.
    before = setups[0].fingerprint
    (tmp_path / "fail2ban" / "filter.d" / "common.local").write_text("[DEFAULT]\n")
    assert build_jails(load_config(path), tmp_path / "filter.d")[0][0].fingerprint != before


def test_test_filter_builds_no_syslog_line_matcher_for_a_fail2ban_filter(tmp_path, monkeypatch):
    import agent.testfilter
    from agent.testfilter import FilterTester
    from f2b_trees import sshlike

    def refuse(filter):
        raise AssertionError("a Fail2Ban filter reads whole lines: no FileLineMatcher is needed")

    monkeypatch.setattr(agent.testfilter, "FileLineMatcher", refuse)
    tester = FilterTester(sshlike(tmp_path), now=0.0)
    assert tester.judge(LOG[0]).kind == "fail"


ACCOUNTS = {
    "byname.conf": "[Definition]\n_daemon = app\nfailregex = ^%(_daemon)s: denied <HOST>$\n"
                   "journalmatch = _SYSTEMD_UNIT=app.service _UID=root\n",
    "absent.conf": "[Definition]\n_daemon = app\nfailregex = ^%(_daemon)s: denied <HOST>$\n"
                   "journalmatch = _SYSTEMD_UNIT=app.service _UID=no-such-account-here\n",
}


def test_jails_resolve_account_names_in_a_fail2ban_journalmatch(tmp_path):
    write_tree(tree(tmp_path), ACCOUNTS)
    path = config(tmp_path, '[jails.app]\nfilter = "fail2ban:byname"\n[jails.gone]\nfilter = "fail2ban:absent"\n')
    setups, problems = build_jails(load_config(path), tmp_path / "filter.d")
    by_name = {setup.name: setup.filter for setup in setups}
    # Named like a TOML filter's _UID: the account's uid on this host, so the identity is trusted.
    assert by_name["app"].journal == ({"_SYSTEMD_UNIT": frozenset({"app.service"}), "_UID": frozenset({"0"})},)
    assert not any(p.startswith("jail app:") for p in problems), problems
    assert by_name["gone"].journal == () and by_name["gone"].journal_routes == ()
    assert any(p.startswith("jail gone: ") and "accounts do not exist" in p for p in problems), problems


def test_check_config_warns_as_the_daemon_does_about_fail2ban_filters(tmp_path, capsys):
    directory = tree(tmp_path)
    write_tree(directory, {"routed.conf": "[Definition]\n_daemon = web\\d+\nfailregex = ^denied <HOST>$\n"
                                          "journalmatch = _SYSTEMD_UNIT=web.service\n"})
    path = config(tmp_path, '[jails.ssh]\nfilter = "fail2ban:sshlike"\n[jails.web]\nfilter = "fail2ban:routed"\n')
    _, problems = build_jails(load_config(path), tmp_path / "filter.d")
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 0 and "2 jails enabled" in out, err
    warnings = [line.removeprefix("warning: ") for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == problems and len(warnings) == 3, err
    assert any("syslog messages are not routed to this filter" in w for w in warnings)
    assert any(w.startswith("jail ssh: the journalmatch of Fail2Ban filter") for w in warnings)
