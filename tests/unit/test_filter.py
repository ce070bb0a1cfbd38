"""Filter loading, placeholders, identity checks and the literal prefilter."""

from __future__ import annotations

import ipaddress

import pytest

from agent.events import LogEvent
from agent.host import account_uid
from parsers.errors import FilterError
from parsers.filterfile import filter_from_dict, find_filter, load_filter
from parsers.regexlits import required_literal


def make(failregex, ignoreregex=(), **extra):
    data = {"syslog": ["app"], "failregex": list(failregex), "ignoreregex": list(ignoreregex), **extra}
    return filter_from_dict(data, file="t.toml", name="t")


def syslog_event(message: str, tag: str = "app") -> LogEvent:
    return LogEvent(1.0, "syslog", message, {"SYSLOG_IDENTIFIER": tag})


def test_uncompilable_regex_names_file_list_and_index(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('syslog = ["app"]\nfailregex = ["ok from <HOST>$", "bad (unclosed <HOST>"]\n')
    with pytest.raises(FilterError) as error:
        load_filter(path)
    assert error.value.file == str(path)
    assert error.value.where == "failregex[1]"
    assert "does not compile" in error.value.reason
    assert str(path) in str(error.value) and "failregex[1]" in str(error.value)


def test_mode_regex_errors_name_the_mode_list_and_its_index(tmp_path) -> None:
    path = tmp_path / "modes.toml"
    path.write_text('syslog = ["app"]\nfailregex = ["a <HOST>"]\n'
                    '[modes.extra]\nfailregex = ["b <HOST>", "c ( <HOST>"]\nignoreregex = ["(x"]\n')
    load_filter(path)  # the base mode alone is fine
    with pytest.raises(FilterError) as error:
        load_filter(path, mode="extra")
    assert error.value.where == "modes.extra.failregex[1]"


@pytest.mark.parametrize("data,where,reason", [
    ({"syslog": ["a"], "failregex": ["no address here"]}, "failregex[0]", "no <HOST>"),
    ({"syslog": ["a"], "failregex": ["<HOST> and <HOST>"]}, "failregex[0]", "placeholders"),
    ({"syslog": ["a"], "failregex": []}, "failregex", "never match"),
    ({"failregex": ["x <HOST>"]}, "", "names no program"),
    ({"syslog": ["a"], "failregex": ["x <HOST>"], "failregexp": []}, "failregexp", "unknown key"),
    ({"syslog": ["a"], "failregex": [3]}, "failregex[0]", "expected a string or a table"),
    ({"syslog": ["a"], "failregex": [{"regex": "x <HOST>", "count": "no"}]}, "failregex[0]", "count = true|false"),
    ({"syslog": ["a"], "failregex": ["(?P<_x>.) <HOST>"]}, "failregex[0]", "reserved"),
])
def test_invalid_filter_definitions_are_rejected_with_the_place(data, where, reason) -> None:
    with pytest.raises(FilterError) as error:
        filter_from_dict(data, file="f.toml", name="f")
    assert error.value.where == where
    assert reason in error.value.reason


def test_unknown_mode_lists_the_modes_there_are() -> None:
    with pytest.raises(FilterError, match="this filter has: normal, aggressive"):
        load_filter(find_filter("sshd"), mode="paranoid")


def test_missing_filter_file_and_unknown_name_are_clear(tmp_path) -> None:
    with pytest.raises(FilterError, match="no such filter file"):
        load_filter(tmp_path / "nope.toml")
    with pytest.raises(FilterError, match="shipped: .*sshd"):
        find_filter("no-such-filter", search=[tmp_path])


def test_invalid_toml_is_a_filter_error(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("failregex = [\n")
    with pytest.raises(FilterError, match="invalid TOML"):
        load_filter(path)


@pytest.mark.parametrize("text,expected", [
    ("203.0.113.5", "203.0.113.5"),
    ("2001:db8::5", "2001:db8::5"),
    ("[2001:db8::5]", "2001:db8::5"),
    ("::ffff:203.0.113.5", "203.0.113.5"),
    ("2001:DB8:0:0:0:0:0:5", "2001:db8::5"),
])
def test_host_placeholder_accepts_every_address_form(text, expected) -> None:
    flt = make(["login failed from <HOST>$"])
    failure = flt.match(syslog_event(f"login failed from {text}"))
    assert failure is not None and failure.address == ipaddress.ip_address(expected)


@pytest.mark.parametrize("message", [
    "login failed from 999.1.1.1",          # shaped like an address, but not one
    "login failed from 203.0.113.5.7",      # longer token
    "login failed from 203.0.113.55x",
    "login failed from host.example.org",   # names are never resolved
])
def test_host_placeholder_rejects_non_addresses(message) -> None:
    assert make(["login failed from <HOST>"]).match(syslog_event(message)) is None


@pytest.mark.parametrize("message,expected", [
    ("client 203.0.113.5:51234] denied", "203.0.113.5"),
    ("client 2001:db8::7:5555] denied", "2001:db8::7"),       # unbracketed IPv6: the port is the last group
    ("client [2001:db8::7]:5555] denied", "2001:db8::7"),
    ("client ::ffff:203.0.113.5:80] denied", "203.0.113.5"),
])
def test_an_address_followed_by_a_port_is_taken_without_it(message, expected) -> None:
    failure = make([r"client <HOST>:\d+\] denied$"]).match(syslog_event(message))
    assert failure is not None and failure.address == ipaddress.ip_address(expected)
    reason = make([r"from <HOST>:\d+: \S+$"]).match(syslog_event("from 203.0.113.9:4242: refused"))
    assert reason is not None and reason.address == ipaddress.ip_address("203.0.113.9")


@pytest.mark.parametrize("message", [
    "login failed from 203.0.113.5:abc",        # a colon not starting a port
    "login failed from 203.0.113.5:123456",     # too long for a port
    "login failed from 203.0.113.5:22.7",       # digits, then more of a token
])
def test_a_colon_after_an_address_is_only_a_port(message) -> None:
    assert make([r"login failed from <HOST>:\S+$"]).match(syslog_event(message)) is None


def test_ip4_and_ip6_placeholders_take_one_family() -> None:
    v4 = make(["x <IP4>$"])
    v6 = make(["x <IP6>$"])
    assert v4.match(syslog_event("x 2001:db8::1")) is None
    assert v6.match(syslog_event("x 203.0.113.1")) is None
    assert v4.match(syslog_event("x 203.0.113.1")) is not None
    assert v6.match(syslog_event("x 2001:db8::1")) is not None


def test_regexes_are_anchored_at_the_start_of_the_message() -> None:
    flt = make(["Failed login from <HOST>$"])
    assert flt.match(syslog_event("Failed login from 203.0.113.5")) is not None
    assert flt.match(syslog_event("note: Failed login from 203.0.113.5")) is None


def test_named_captures_of_each_regex_are_reported_under_their_own_names() -> None:
    flt = make(["bad password for (?P<user>\\S+) from <HOST>$", "bad key (?P<key>\\w+) from <HOST>$"])
    first = flt.match(syslog_event("bad password for root from 203.0.113.5"))
    second = flt.match(syslog_event("bad key abc from 203.0.113.6"))
    assert first.captures == {"user": "root"}
    assert second.captures == {"key": "abc"}
    assert (first.address, second.address) == (ipaddress.ip_address("203.0.113.5"),
                                                ipaddress.ip_address("203.0.113.6"))


def test_ignoreregex_wins_over_failregex() -> None:
    flt = make(["fail (?P<user>\\S+) from <HOST>$"], ["fail backup from "])
    assert flt.examine("fail backup from 203.0.113.5").kind == "ignored"
    assert flt.examine("fail root from 203.0.113.5").kind == "fail"


def test_syslog_identity_is_the_tag() -> None:
    flt = make(["fail from <HOST>$"])
    assert flt.match(syslog_event("fail from 203.0.113.5", tag="other")) is None
    assert flt.match(syslog_event("fail from 203.0.113.5", tag="app")) is not None


def test_journal_identity_uses_only_the_fields_the_filter_names() -> None:
    flt = filter_from_dict({"journal": {"_EXE": ["/usr/sbin/app"], "_UID": ["0"]},
                            "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    forged = LogEvent(1.0, "journal", "fail from 203.0.113.5",
                      {"SYSLOG_IDENTIFIER": "app", "_COMM": "app", "_EXE": "/home/u/app"}, True)
    real = LogEvent(1.0, "journal", "fail from 203.0.113.5", {"_EXE": "/usr/sbin/app", "_UID": "0"}, True)
    assert flt.match(forged) is None
    assert flt.match(real) is not None


def journal_event(fields: dict, trusted: bool = True) -> LogEvent:
    return LogEvent(1.0, "journal", "fail from 203.0.113.5", fields, trusted)


def test_journal_fields_of_one_table_must_all_match() -> None:
    flt = filter_from_dict({"journal": {"_EXE": ["/usr/sbin/app"], "_UID": ["0"]},
                            "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    assert flt.match(journal_event({"_EXE": "/usr/sbin/app", "_UID": "0"})).trusted
    # The real binary, run by an unprivileged user who wants someone banned.
    assert flt.match(journal_event({"_EXE": "/usr/sbin/app", "_UID": "1000"})) is None


def test_journal_tables_in_an_array_are_alternatives() -> None:
    flt = filter_from_dict({"journal": [{"_SYSTEMD_UNIT": ["app.service"], "_UID": ["33"]},
                                        {"_EXE": ["/usr/sbin/app"], "_UID": ["0"]}],
                            "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    assert flt.identify(journal_event({"_SYSTEMD_UNIT": "app.service", "_UID": "33"})) is True
    assert flt.identify(journal_event({"_EXE": "/usr/sbin/app", "_UID": "0"})) is True
    assert flt.identify(journal_event({"_COMM": "app"})) is None


def test_an_entry_matching_a_trusted_alternative_is_trusted_whatever_else_it_matches() -> None:
    flt = filter_from_dict({"journal": [{"_COMM": ["app"]}, {"_EXE": ["/usr/sbin/app"], "_UID": ["0"]}],
                            "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    assert flt.identify(journal_event({"_COMM": "app", "_EXE": "/usr/sbin/app", "_UID": "0"})) is True
    assert flt.identify(journal_event({"_COMM": "app", "_EXE": "/home/u/app", "_UID": "1000"})) is False


@pytest.mark.parametrize("journal,fields,trusted", [
    ({"_COMM": ["app"]}, {"_COMM": "app"}, False),  # prctl(PR_SET_NAME) renames any process
    ({"SYSLOG_IDENTIFIER": ["app"]}, {"SYSLOG_IDENTIFIER": "app"}, False),
    ({"SYSLOG_IDENTIFIER": ["app"], "_UID": ["0"]}, {"SYSLOG_IDENTIFIER": "app", "_UID": "0"}, True),
    # Any user may run the binary; a user's login may stay in the service's cgroup.
    ({"_EXE": ["/usr/sbin/app"]}, {"_EXE": "/usr/sbin/app"}, False),
    ({"_SYSTEMD_UNIT": ["app.service"]}, {"_SYSTEMD_UNIT": "app.service"}, False),
    ({"_SYSTEMD_UNIT": ["app.service"], "_UID": ["33"]}, {"_SYSTEMD_UNIT": "app.service", "_UID": "33"}, True),
])
def test_identity_is_trusted_only_from_fields_the_writer_cannot_forge(journal, fields, trusted) -> None:
    flt = filter_from_dict({"journal": journal, "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    assert flt.match(journal_event(fields)).trusted is trusted


def test_journal_entry_matched_by_syslog_tag_alone_is_untrusted() -> None:
    # A filter without journal fields still sees journal entries by their tag, which anyone can write.
    flt = make(["fail from <HOST>$"])
    failure = flt.match(journal_event({"SYSLOG_IDENTIFIER": "app", "_EXE": "/usr/sbin/app"}))
    assert failure is not None and not failure.trusted


def test_syslog_line_is_trusted_when_its_sender_is() -> None:
    flt = make(["fail from <HOST>$"])
    allowed = LogEvent(1.0, "syslog", "fail from 203.0.113.5", {"SYSLOG_IDENTIFIER": "app"}, True)
    assert flt.match(allowed).trusted
    assert not flt.match(allowed.__class__(1.0, "syslog", allowed.message, allowed.fields, False)).trusted


@pytest.mark.parametrize("journal,where", [
    ({"_EXE": []}, "journal._EXE"),
    ([{"_EXE": ["/x"]}, "oops"], "journal[1]"),
    ({"exe": ["/x"]}, "journal.exe"),
])
def test_bad_journal_identity_is_reported_where_it_is(journal, where) -> None:
    with pytest.raises(FilterError) as error:
        filter_from_dict({"journal": journal, "failregex": ["fail from <HOST>$"]}, file="t", name="t")
    assert error.value.where == where


def test_failure_carries_the_event_time_and_filter_name() -> None:
    failure = make(["fail from <HOST>$"]).match(LogEvent(42.5, "syslog", "fail from 2001:db8::9",
                                                        {"SYSLOG_IDENTIFIER": "app"}))
    assert (failure.time, failure.filter, failure.message) == (42.5, "t", "fail from 2001:db8::9")


@pytest.mark.parametrize("pattern,literal", [
    (r"Failed (?:password|none) for (?P<u>.*) from", "Failed "),
    (r"(?:error: )?maximum authentication attempts exceeded", "maximum authentication attempts exceeded"),
    (r"pam_[a-z]+\(sshd:auth\): authentication failure", "(sshd:auth): authentication failure"),
    (r"a|b", None),
    (r"(?i)Failed", None),
    (r"x(?i:abc)", None),
])
def test_required_literal_is_only_text_every_match_contains(pattern, literal) -> None:
    assert required_literal(pattern) == literal


def test_prefilter_skips_messages_without_a_required_literal() -> None:
    flt = make(["Failed login from <HOST>$", "(?:warn: )?Bad user from <HOST>$"])
    assert set(flt.literals) == {"Failed login from ", "Bad user from "}
    assert flt.examine("Bad user from 203.0.113.1").kind == "fail"
    assert flt.examine("Accepted login from 203.0.113.1").kind == "miss"


def test_one_regex_without_a_literal_turns_the_prefilter_off() -> None:
    assert make(["(?:a|b) <HOST>$", "Failed <HOST>$"]).literals is None


def test_a_regex_marked_count_false_names_the_address_but_does_not_count() -> None:
    flt = make([{"regex": "pam: failure rhost=<HOST>$", "count": False}, "Failed for x from <HOST>$"])
    evidence = flt.match(syslog_event("pam: failure rhost=203.0.113.5"))
    counted = flt.match(syslog_event("Failed for x from 203.0.113.5"))
    assert evidence.address == counted.address == ipaddress.ip_address("203.0.113.5")
    assert (evidence.counts, counted.counts) == (False, True)


def test_inline_flags_apply_to_their_own_regex_only() -> None:
    flt = make(["(?i)failed login from <HOST>$", "Bad from <HOST>$"])
    assert flt.examine("FAILED LOGIN from 203.0.113.5").kind == "fail"
    assert flt.examine("BAD from 203.0.113.5").kind == "miss"
    assert flt.examine("Bad from 203.0.113.5").kind == "fail"


def test_verbose_regex_with_comments_works() -> None:
    flt = make(["(?x) failed \\s+ from \\s+ <HOST> $  # the address"])
    assert flt.examine("failed from 203.0.113.5").kind == "fail"


def test_named_back_references_and_conditionals_stay_within_their_regex() -> None:
    flt = make(["(?P<w>\\w+) again (?P=w) from <HOST>$", "(?P<q>')?x(?(q)') from <HOST>$"])
    assert flt.examine("abc again abc from 203.0.113.5").kind == "fail"
    assert flt.examine("abc again abd from 203.0.113.5").kind == "miss"
    assert flt.examine("'x' from 203.0.113.5").kind == "fail"


@pytest.mark.parametrize("regex", ["(a)\\1 <HOST>", "(a)?(?(1)b) <HOST>"])
def test_numbered_back_references_are_a_clear_error(regex) -> None:
    with pytest.raises(FilterError, match="numbered back-references"):
        make([regex])


def test_rsyslog_repeated_message_is_examined_inside_and_carries_its_count() -> None:
    flt = make(["Failed for x from <HOST>$"])
    failure = flt.match(syslog_event("message repeated 4 times: [ Failed for x from 203.0.113.5]"))
    assert failure.address == ipaddress.ip_address("203.0.113.5") and failure.repeat == 4
    assert flt.match(syslog_event("Failed for x from 203.0.113.5")).repeat == 1


def test_an_account_named_in_uid_stands_for_its_uid_on_this_host() -> None:
    accounts = {"postfix": 107, "root": 0}.get
    flt = filter_from_dict({"failregex": ["x <HOST>$"], "journal": [
        {"_EXE": ["/usr/lib/postfix/sbin/smtpd"], "_UID": ["postfix", "89"]},
        {"_EXE": ["/usr/sbin/exim4"], "_UID": ["Debian-exim"]},   # no such account here: never matches
    ]}, file="f", name="f", accounts=accounts)
    assert flt.journal == ({"_EXE": frozenset({"/usr/lib/postfix/sbin/smtpd"}), "_UID": frozenset({"107", "89"})},)
    entry = LogEvent(1.0, "journal", "x 203.0.113.4", {"_EXE": "/usr/lib/postfix/sbin/smtpd", "_UID": "107"}, True)
    assert flt.match(entry).trusted
    with pytest.raises(FilterError, match=r"journal\[0\]\._UID: 'post fix' is neither a uid nor an account name"):
        filter_from_dict({"failregex": ["x <HOST>$"], "journal": [{"_EXE": ["/x"], "_UID": ["post fix"]}]},
                         file="f", name="f", accounts=accounts)


def test_account_uid_reads_this_hosts_accounts() -> None:
    assert account_uid("root") == 0
    assert account_uid("no-such-account-jw") is None


def test_a_journal_identity_whose_accounts_are_all_absent_matches_no_journal_entry() -> None:
    flt = filter_from_dict({"failregex": ["x <HOST>$"], "syslog": ["grafana"],
                            "journal": {"_EXE": ["/usr/sbin/grafana"], "_UID": ["grafana"]}},
                           file="f", name="f", accounts=lambda name: None)
    forged = LogEvent(1.0, "journal", "x 203.0.113.4", {"SYSLOG_IDENTIFIER": "grafana", "_UID": "1000"}, True)
    assert flt.journal == () and flt.journal_routes == () and flt.match(forged) is None
    forwarded = LogEvent(1.0, "syslog", "x 203.0.113.4", {"SYSLOG_IDENTIFIER": "grafana"}, True)
    assert flt.match(forwarded) is not None  # syslog from an allowed sender still counts


def test_every_filter_answers_what_its_callers_ask(tmp_path) -> None:
    # What test-filter, check-config and the jails ask of any filter, TOML or Fail2Ban.
    flt = filter_from_dict({"syslog": ["app"], "failregex": ["bad <HOST>$"]}, file=str(tmp_path / "app.toml"),
                           name="app")
    assert flt.notes == () and not flt.stateful and not flt.whole_lines and flt.lines_too_long == 0
    assert flt.files == [tmp_path / "app.toml"]
    # A line of a log file is a classic syslog line whose tag says whose it is.
    assert str(flt.examine_line("Nov 24 14:00:01 h app[1]: bad 203.0.113.5", 0.0).address) == "203.0.113.5"
    assert flt.examine_line("Nov 24 14:00:01 h cron[1]: bad 203.0.113.5", 0.0).kind == "other"
    assert flt.examine_line("not a syslog line", 0.0).kind == "error"
    assert str(flt.examine_event(syslog_event("bad 203.0.113.6")).address) == "203.0.113.6"
