"""Loading Fail2Ban filter files: includes, .local overrides, interpolation, tags, modes,
parameters, identity, and a clear error naming file, key and reason for what cannot be used."""

from __future__ import annotations

import pytest
from f2b_trees import COMMON, SSHLIKE, definition, sshlike, write_tree

from parsers.fail2ban import is_fail2ban_reference, load_fail2ban_filter, parse_reference
from parsers.errors import FilterError

LINE = "Nov  3 10:20:30 web1 {tag}: {message}"


def verdict(flt, message: str, tag: str = "sshd[42]"):
    return flt.examine_line(LINE.format(tag=tag, message=message), 0.0)


def address(flt, message: str, tag: str = "sshd[42]") -> str | None:
    found = verdict(flt, message, tag)
    return str(found.address) if found.kind == "fail" else None


def test_references_name_fail2ban_filters_by_prefix_or_suffix():
    assert is_fail2ban_reference("fail2ban:sshd")
    assert is_fail2ban_reference("/etc/fail2ban/filter.d/sshd.conf")
    assert is_fail2ban_reference("/etc/fail2ban/filter.d/sshd.local[mode=aggressive]")
    assert not is_fail2ban_reference("sshd")
    assert not is_fail2ban_reference("/etc/jailwarden/filter.d/sshd.toml")
    assert parse_reference('fail2ban:sshd[mode=aggressive, logtype="journal", x=\'a, b\']') == (
        "sshd", {"mode": "aggressive", "logtype": "journal", "x": "a, b"})
    assert parse_reference("fail2ban:sshd[mode=ddos][logtype=short]") == ("sshd", {"mode": "ddos", "logtype": "short"})


def test_includes_are_read_relative_to_the_including_file(tmp_path):
    write_tree(tmp_path, {
        "app.conf": "[INCLUDES]\nbefore = lib/base.conf\n[Definition]\nfailregex = ^%(greeting)s <HOST>$\n",
        "lib/base.conf": "[INCLUDES]\nafter = words.conf\n[DEFAULT]\ngreeting = hello\n",
        "lib/words.conf": "[DEFAULT]\ngreeting = bad login from\n",
    })
    flt = load_fail2ban_filter("fail2ban:app", tmp_path, require_identity=False)
    assert [p.name for p in flt.files] == ["base.conf", "words.conf", "app.conf"]
    assert str(flt.examine("bad login from 192.0.2.7").address) == "192.0.2.7"


def test_local_overrides_conf_and_known_keeps_the_value_it_replaced(tmp_path):
    flt = sshlike(tmp_path)
    assert address(flt, "Bad auth from 192.0.2.8") is None
    write_tree(tmp_path, {"sshlike.local": "[Definition]\nfailregex = %(known/failregex)s\n"
                                           "            ^Bad auth from <HOST>$\n"})
    flt = load_fail2ban_filter("fail2ban:sshlike", tmp_path)
    assert address(flt, "Bad auth from 192.0.2.8") == "192.0.2.8"
    assert address(flt, "Invalid user bob from 192.0.2.9 port 22") == "192.0.2.9"
    assert flt.file.endswith("sshlike.conf") and [p.name for p in flt.files][-1] == "sshlike.local"


def test_an_included_file_brings_its_local_and_a_drop_in_directory_is_read(tmp_path):
    write_tree(tmp_path, {"common.local": "[DEFAULT]\n_daemon = sshd-session\n",
                          "sshlike.d/10-extra.conf": "[Definition]\nignoreregex = user=nobody"})
    flt = sshlike(tmp_path)
    assert [p.name for p in flt.files] == ["common.conf", "common.local", "sshlike.conf", "10-extra.conf"]
    # sshlike.conf sets _daemon in its own [DEFAULT], read after common.local: it wins.
    assert flt.syslog == {"sshd"}


def test_interpolation_handles_percent_section_references_and_the_section_name(tmp_path):
    flt = definition(tmp_path, r"""
        rate = 100%%
        failregex = ^%(__name__)s: %(rate)s %(lt_x/word)s from <HOST>$
        [lt_x]
        word = denied
        """, common=False)
    assert str(flt.examine("Definition: 100% denied from 192.0.2.1").address) == "192.0.2.1"


def test_a_reference_to_nothing_names_the_file_and_key(tmp_path):
    with pytest.raises(FilterError) as error:
        definition(tmp_path, "failregex = ^%(nowhere)s <HOST>$\n")
    assert error.value.file.endswith("test.conf") and error.value.where == "[Definition] failregex"
    assert "refers to %(nowhere)s, which no file read defines" in error.value.reason


def test_tags_are_replaced_recursively_and_a_loop_is_reported(tmp_path):
    flt = definition(tmp_path, """
        verb = <kind>ed
        kind = refus
        failregex = ^<verb> <HOST>$
        """)
    assert str(flt.examine("refused 192.0.2.2").address) == "192.0.2.2"
    with pytest.raises(FilterError, match="refers back to itself"):
        definition(tmp_path / "loop", "a = <b>\nb = <a>\nfailregex = ^<a> <HOST>$\n")


def test_init_values_are_parameters_that_the_jails_own_override(tmp_path):
    body = "failregex = ^<word> from <HOST>$\n[Init]\nword = refused\n"
    assert definition(tmp_path, body).examine("refused from 192.0.2.3").kind == "fail"
    flt = definition(tmp_path, body, parameters={"word": "dropped"})
    assert flt.examine("refused from 192.0.2.3").kind == "miss"
    assert flt.examine("dropped from 192.0.2.3").kind == "fail"


def test_mode_comes_from_the_jail_or_the_reference(tmp_path):
    closed = "Connection closed by 192.0.2.4 port 5000 [preauth]"
    assert address(sshlike(tmp_path), closed) is None
    assert address(sshlike(tmp_path, mode="aggressive"), closed) == "192.0.2.4"
    flt = sshlike(tmp_path, "fail2ban:sshlike[mode=aggressive]")
    assert flt.mode == "aggressive" and address(flt, closed) == "192.0.2.4"
    with pytest.raises(FilterError, match="contradicts"):
        sshlike(tmp_path, "fail2ban:sshlike[mode=aggressive]", mode="normal")


def test_an_unknown_mode_is_reported_as_such(tmp_path):
    with pytest.raises(FilterError) as error:
        sshlike(tmp_path, mode="paranoid")
    assert error.value.where == "failregex[4]"
    assert "<mdre-paranoid> is not defined (is 'paranoid' one of this filter's modes?)" in error.value.reason


def test_parameters_with_bad_syntax_are_reported():
    with pytest.raises(FilterError, match="cannot read the parameters"):
        parse_reference("fail2ban:sshd[mode]")


def test_journalmatch_becomes_journal_groups_and_daemon_the_syslog_tags(tmp_path):
    flt = sshlike(tmp_path)
    assert flt.journal == ({"_SYSTEMD_UNIT": frozenset({"ssh.service"})}, {"_COMM": frozenset({"sshd"})})
    assert flt.syslog == {"sshd"}
    several = definition(tmp_path, r"""
        _daemon = (?:dovecot(?:-auth)?|auth)
        failregex = ^x <HOST>$
        journalmatch = _SYSTEMD_UNIT=dovecot.service PRIORITY=4 PRIORITY=5
                       SYSLOG_IDENTIFIER=auth
        """)
    assert several.journal == ({"_SYSTEMD_UNIT": frozenset({"dovecot.service"}), "PRIORITY": frozenset({"4", "5"})},
                               {"SYSLOG_IDENTIFIER": frozenset({"auth"})})
    assert several.syslog == {"dovecot", "dovecot-auth", "auth"}


def test_a_journalmatch_term_that_is_no_field_is_reported(tmp_path):
    with pytest.raises(FilterError) as error:
        definition(tmp_path, "failregex = ^x <HOST>$\njournalmatch = _SYSTEMD_UNIT=a.service + sshd\n")
    assert error.value.where == "journalmatch" and "'sshd' is not a FIELD=value term" in error.value.reason


def test_a_filter_naming_no_program_is_reported_with_what_to_do(tmp_path):
    body = "failregex = ^x <HOST>$\n"
    with pytest.raises(FilterError) as error:
        definition(tmp_path, body, require_identity=True)
    assert "names no program" in error.value.reason
    assert "fail2ban:test[_daemon=TAG]" in error.value.reason and "journalmatch" in error.value.reason
    # Naming the program as a parameter is enough; test-filter needs no identity at all.
    assert definition(tmp_path, body, require_identity=True, parameters={"_daemon": "web"}).syslog == {"web"}
    assert definition(tmp_path, body).syslog == frozenset()


def test_a_daemon_pattern_with_a_journalmatch_loads_with_a_note(tmp_path):
    flt = definition(tmp_path, "_daemon = postfix(-\\w+)?/\\w+\nfailregex = ^x <HOST>$\n"
                               "journalmatch = _SYSTEMD_UNIT=postfix.service\n", require_identity=True)
    assert flt.syslog == frozenset()
    assert any("syslog messages are not routed to this filter" in note for note in flt.notes)


@pytest.mark.parametrize("body, where, reason", [
    ("failregex = ^failed (<HOST>$\n", "failregex[0]", "does not compile"),
    ("failregex = ^failed for <F-USER>\\S+</F-USER>$\n", "failregex[0]", "no failure id"),
    ("failregex =\n", "failregex", "empty: the filter would never match"),
    ("failregex = ^x <HOST>$\nmaxlines = many\n", "maxlines", "expected a whole number, got 'many'"),
    ("failregex = ^x <HOST>$\nusedns = sometimes\n", "usedns", "expected one of yes, warn, no, raw"),
    ("failregex = ^x <HOST>$\ndatepattern = %%Y-%%Q\n", "datepattern", "unknown date directive %Q"),
    ("failregex = ^x <HOST>$\n[Init?family=inet6]\nx = 1\n", "[Init?family=inet6]", "conditional sections"),
    ("failregex = ^x <HOST>$\nfailregex = ^y <HOST>$\n", "", "invalid syntax"),
    ("failregex = ^x <HOST>$ %(\n", "[Definition] failregex", "'%' must be followed by"),
    ("prefregex = ^a\n    ^b\nfailregex = ^x <HOST>$\n", "prefregex", "a filter has one prefregex"),
])  # fmt: skip
def test_what_cannot_be_used_is_reported_by_file_key_and_reason(tmp_path, body, where, reason):
    with pytest.raises(FilterError) as error:
        definition(tmp_path, body)
    assert error.value.file.endswith("test.conf"), error.value
    assert error.value.where == where and reason in error.value.reason, error.value


def test_a_missing_filter_says_where_it_was_looked_for(tmp_path):
    write_tree(tmp_path, {"common.conf": COMMON})
    with pytest.raises(FilterError, match=r"no such Fail2Ban filter \(looked for nosuch.conf and nosuch.local in "):
        load_fail2ban_filter("fail2ban:nosuch", tmp_path)


def test_a_path_to_the_conf_or_local_reads_the_same_filter(tmp_path):
    write_tree(tmp_path, {"common.conf": COMMON, "sshlike.conf": SSHLIKE})
    by_name = load_fail2ban_filter("fail2ban:sshlike", tmp_path)
    by_path = load_fail2ban_filter(str(tmp_path / "filter.d" / "sshlike.conf"))
    assert by_path.files == by_name.files and by_path.journal == by_name.journal


def test_a_filter_name_with_a_directory_is_read_inside_dir_filter_d_only(tmp_path, monkeypatch):
    write_tree(tmp_path / "f2b", {"sub/app.conf": "[Definition]\nfailregex = ^inside <HOST>$\n"})
    # The same relative path in the working directory must not be the one read.
    elsewhere = tmp_path / "cwd" / "sub" / "app.conf"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("[Definition]\nfailregex = ^outside <HOST>$\n")
    (tmp_path / "secret.conf").write_text("[Definition]\nfailregex = ^escaped <HOST>$\n")
    monkeypatch.chdir(tmp_path / "cwd")
    flt = load_fail2ban_filter("fail2ban:sub/app", tmp_path / "f2b", require_identity=False)
    assert flt.file == str(tmp_path / "f2b" / "filter.d" / "sub" / "app.conf")
    assert flt.examine("inside 192.0.2.80").kind == "fail"
    for name in ("../../secret", "sub/../../../secret", str(tmp_path / "secret")):
        with pytest.raises(FilterError, match="inside DIR/filter.d"):
            load_fail2ban_filter(f"fail2ban:{name}", tmp_path / "f2b", require_identity=False)
    # A path (no "fail2ban:") is read where it says.
    assert load_fail2ban_filter(str(tmp_path / "secret.conf"), require_identity=False).examine(
        "escaped 192.0.2.81").kind == "fail"


def test_syslog_tags_of_a_plain_daemon_name_do_not_depend_on_pythons_private_regex_parser(monkeypatch):
    from parsers import fail2ban_identity

    assert fail2ban_identity.daemon_tags("(?:dovecot(?:-auth)?|auth)") == {"dovecot", "dovecot-auth", "auth"}

    class Changed:  # what a Python whose re._parser changed shape might give
        @staticmethod
        def parse(pattern):
            raise AttributeError("no such thing any more")

    for parser in (None, Changed):
        monkeypatch.setattr(fail2ban_identity, "_p", parser)
        assert fail2ban_identity.daemon_tags("sshd") == {"sshd"}
        assert fail2ban_identity.daemon_tags("postfix-smtpd_2") == {"postfix-smtpd_2"}
        # Anything more is no tag then: the filter's journal identity, or [_daemon=TAG], names the program.
        assert fail2ban_identity.daemon_tags("(?:dovecot(?:-auth)?|auth)") is None
