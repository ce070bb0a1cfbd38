"""The agent refuses configuration others could have written: the config file, jail.d and
filter.d entries and their directories must be writable by the owner alone (root or the running
user); the directories above may be shared only with the sticky bit, as /tmp is."""

from __future__ import annotations

import os

import pytest

from agent.permissions import unsafe_paths


@pytest.fixture
def etc(tmp_path):
    """A configuration tree as the packages install it: 0755 directories, 0644 files."""
    root = tmp_path / "etc"
    for directory in (root, root / "jail.d", root / "filter.d"):
        directory.mkdir()
        directory.chmod(0o755)
    for file in (root / "jailwarden.toml", root / "jail.d" / "web.toml", root / "filter.d" / "app.toml"):
        file.write_text("")
        file.chmod(0o644)
    tmp_path.chmod(0o755)
    return root


def check(etc):
    return unsafe_paths([etc / "jailwarden.toml"], [etc / "jail.d", etc / "filter.d"])


def test_a_tree_only_its_owner_can_write_is_accepted(etc):
    assert check(etc) == []


@pytest.mark.parametrize("relative,mode,expected", [
    ("jailwarden.toml", 0o664, "the file is writable by its group (mode 0664): chmod go-w"),
    ("jail.d/web.toml", 0o646, "the file is writable by others (mode 0646)"),
    ("filter.d/app.toml", 0o666, "writable by its group and others (mode 0666)"),
    ("filter.d", 0o775, "the directory is writable by its group (mode 0775)"),
    # Sticky is not enough where the agent reads every entry: anyone could add a jail.
    ("jail.d", 0o1777, "the directory is writable by its group and others (mode 1777)"),
    (".", 0o757, "the directory is writable by others (mode 0757)"),
])
def test_a_file_or_directory_others_can_write_is_refused_with_the_fix(etc, relative, mode, expected):
    target = (etc / relative).resolve()
    target.chmod(mode)
    problems = check(etc)
    assert len(problems) == 1 and problems[0].startswith(f"{target}: ") and expected in problems[0], problems


def test_a_directory_above_may_be_shared_only_with_the_sticky_bit(etc):
    above = etc.parent
    above.chmod(0o1777)  # like /tmp
    assert check(etc) == []
    above.chmod(0o777)
    assert check(etc) == [f"{above}: the directory is writable by others (mode 0777), who could replace what is in "
                          f"it: chmod o-w {above}"]


def test_a_symlink_is_judged_by_what_it_points_to(etc, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "evil.toml").write_text("")
    (etc / "filter.d" / "evil.toml").symlink_to(shared / "evil.toml")
    assert any(problem.startswith(f"{shared}: the directory is writable") for problem in check(etc))


def test_a_file_of_another_user_is_refused(etc):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    os.chown(etc / "jail.d" / "web.toml", 65534, 65534)
    (problem,) = check(etc)
    assert problem == (f"{etc / 'jail.d' / 'web.toml'}: the file belongs to uid 65534, who could change what the "
                       f"agent does: chown root {etc / 'jail.d' / 'web.toml'}")


def test_missing_paths_are_left_to_the_loader(tmp_path):
    tmp_path.chmod(0o755)
    assert unsafe_paths([tmp_path / "none.toml"], [tmp_path / "jail.d"]) == []


def test_filters_a_jail_names_by_path_or_from_fail2ban_are_checked_with_their_directories(etc, tmp_path):
    from agent.config import load_config
    from agent.permissions import configuration_problems

    shared, fail2ban = tmp_path / "shared", tmp_path / "fail2ban"
    for directory in (shared, fail2ban, fail2ban / "filter.d"):
        directory.mkdir()
        directory.chmod(0o755)
    (shared / "app.toml").write_text('syslog = ["app"]\nfailregex = ["^bad from <HOST>$"]\n')
    (fail2ban / "filter.d" / "common.conf").write_text("[DEFAULT]\n")
    (fail2ban / "filter.d" / "sshd.conf").write_text("[Definition]\nfailregex = ^x <HOST>$\n")
    (etc / "jailwarden.toml").write_text(f"""
[agent]
fail2ban_dir = "{fail2ban}"
[jails.app]
filter = "{shared / 'app.toml'}"
[jails.old]
filter = "fail2ban:sshd"
""")
    config = load_config(etc / "jailwarden.toml")
    assert configuration_problems(etc / "jailwarden.toml", config) == []
    shared.chmod(0o775)
    (fail2ban / "filter.d" / "common.conf").chmod(0o666)  # included by every Fail2Ban filter
    assert [problem.split(":")[0] for problem in configuration_problems(etc / "jailwarden.toml", config)] == [
        str(fail2ban / "filter.d" / "common.conf"), str(shared)]
