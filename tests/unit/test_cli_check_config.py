"""`jailwarden check-config`: every problem at once, each with its file and key."""

from __future__ import annotations

from pathlib import Path

from agent.cli import main

BUNDLED = Path(__file__).parents[2] / "packaging" / "etc" / "jailwarden.toml"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bundled_default_config_is_valid(capsys) -> None:
    code, out, err = run(capsys, "check-config", "--config", str(BUNDLED))
    assert code == 0, err
    assert "OK, 1 jail enabled: sshd" in out


def test_config_filter_and_mode_errors_are_all_reported_with_their_file(tmp_path, capsys) -> None:
    main_file = tmp_path / "jailwarden.toml"
    main_file.write_text('[jails.sshd]\nfilter = "sshd"\nmaxretry = 0\n')
    (tmp_path / "jail.d").mkdir()
    local = tmp_path / "jail.d" / "local.toml"
    local.write_text('[jails.web]\nfilter = "no-such-filter"\n'
                     '[jails.ssh2]\nfilter = "sshd"\nmode = "paranoid"\n'
                     '[jails.old]\nfilter = "fail2ban:no-such-filter"\n'
                     '[jails.off]\nfilter = "missing-but-disabled"\nenabled = false\n')
    code, out, err = run(capsys, "check-config", "--config", str(main_file))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert any(line.startswith(f"{main_file}: jails.sshd.maxretry: ") for line in lines), err
    assert any(line.startswith(f"{local}: jails.web.filter: ") and "no such filter" in line for line in lines), err
    assert any(line.startswith(f"{local}: jails.ssh2.filter: ") and "paranoid" in line for line in lines), err
    assert any(line.startswith(f"{local}: jails.old.filter: ") and "Fail2Ban" in line for line in lines), err
    assert not any("jails.off" in line for line in lines), "a disabled jail's filter is not loaded"
    assert lines[-1] == "jailwarden: 4 problems in the configuration"


def test_local_filter_d_beside_the_config_wins_over_a_shipped_filter(tmp_path, capsys) -> None:
    (tmp_path / "filter.d").mkdir()
    (tmp_path / "filter.d" / "sshd.toml").write_text('syslog = ["sshd"]\nfailregex = ["broken ( <HOST>"]\n')
    main_file = tmp_path / "jailwarden.toml"
    main_file.write_text('[jails.sshd]\nfilter = "sshd"\n')
    code, _, err = run(capsys, "check-config", "--config", str(main_file))
    assert code == 1
    assert f"{tmp_path / 'filter.d' / 'sshd.toml'}: failregex[0]: does not compile" in err


def test_toml_syntax_error_names_line_and_column(tmp_path, capsys) -> None:
    main_file = tmp_path / "jailwarden.toml"
    main_file.write_text('[jails.sshd]\nfilter = "sshd\n')
    code, _, err = run(capsys, "check-config", "--config", str(main_file))
    assert code == 1
    assert f"{main_file}: line 2, column" in err
