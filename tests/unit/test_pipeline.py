"""Router and pipeline: which filters see an event, and what a failure does in each jail."""

import ipaddress

from agent.addresses import AddressSet
from agent.bans import Ban, BanBook, BanPolicy
from agent.events import LogEvent
from agent.jail import Jail
from agent.pipeline import JailSetup, Pipeline
from agent.router import Router
from parsers.filterfile import filter_from_dict, load_reference

SSHD_EXE = "/usr/sbin/sshd"
ATTACKER = ipaddress.ip_address("203.0.113.9")


def make_filter(name="app", journal=None, syslog=("app",)):
    data = {"failregex": ["fail from <HOST>$"], "syslog": list(syslog)}
    if journal is not None:
        data["journal"] = journal
    return filter_from_dict(data, file=name, name=name)


def journal(message="fail from 203.0.113.9", time=1000.0, **fields):
    return LogEvent(time, "journal", message, fields, True)


def syslog(message="fail from 203.0.113.9", tag="app", trusted=True, time=1000.0):
    return LogEvent(time, "syslog", message, {"SYSLOG_IDENTIFIER": tag}, trusted)


def pipeline(*setups):
    return Pipeline([JailSetup(name, flt, Jail(name, maxretry=maxretry, findtime=600, require_trusted=True),
                               BanPolicy(3600)) for name, flt, maxretry in setups], BanBook())


def test_router_finds_filters_by_identity_not_by_scanning():
    by_exe = make_filter("a", journal={"_EXE": [SSHD_EXE], "_UID": ["0"]})
    by_unit = make_filter("b", journal=[{"_SYSTEMD_UNIT": ["nginx.service"]}])
    by_tag = make_filter("c", syslog=("postfix/smtpd",))
    router = Router([by_exe, by_unit, by_tag])
    assert router.candidates(journal(_EXE=SSHD_EXE, _UID="0")) == [by_exe]
    assert router.candidates(journal(_SYSTEMD_UNIT="nginx.service")) == [by_unit]
    assert router.candidates(journal(SYSLOG_IDENTIFIER="postfix/smtpd")) == [by_tag]
    assert router.candidates(syslog(tag="postfix/smtpd")) == [by_tag]
    assert router.candidates(journal(_COMM="sshd")) == []


def test_journal_matches_are_the_union_of_identities_for_server_side_filtering():
    router = Router([make_filter("a", journal={"_EXE": [SSHD_EXE], "_UID": ["0"]}),
                     make_filter("b", journal={"_EXE": [SSHD_EXE], "_UID": ["0"]}),
                     make_filter("c", syslog=("named",))])
    assert router.journal_matches() == [{"_EXE": [SSHD_EXE], "_UID": ["0"]}, {"SYSLOG_IDENTIFIER": ["named"]}]


def test_failures_reach_every_jail_of_the_filter_and_ban_at_maxretry():
    flt = make_filter(journal={"_EXE": [SSHD_EXE], "_UID": ["0"]})
    pipe = pipeline(("fast", flt, 2), ("slow", flt, 3))
    event = journal(_EXE=SSHD_EXE, _UID="0")
    assert [o.kind for o in pipe.handle(event, 1000.0)] == ["counted", "counted"]
    outcomes = pipe.handle(event, 1000.0)
    assert [(o.jail, o.kind) for o in outcomes] == [("fast", "banned"), ("slow", "counted")]
    assert outcomes[0].ban.address == ATTACKER and outcomes[0].ban.end == 1000.0 + 3600


def test_forged_identity_is_reported_and_not_counted():
    flt = make_filter(journal=None)  # known in the journal by its tag alone
    pipe = pipeline(("app", flt, 1))
    outcomes = pipe.handle(journal(SYSLOG_IDENTIFIER="app", _COMM="app"), 1000.0)
    assert [o.kind for o in outcomes] == ["untrusted"]
    assert pipe.jails["app"].jail.tracked() == 0
    assert [o.kind for o in pipe.handle(syslog(trusted=False), 1000.0)] == ["untrusted"]
    assert [o.kind for o in pipe.handle(syslog(trusted=True), 1000.0)] == ["banned"]


def test_unrelated_and_stale_entries():
    pipe = pipeline(("app", make_filter(), 1))
    assert pipe.handle(syslog(tag="other"), 1000.0) == ()
    assert pipe.handle(syslog(message="all fine"), 1000.0) == ()
    assert [o.kind for o in pipe.handle(syslog(time=100.0), 1000.0)] == ["stale"]
    # Loopback is never banned, even by a jail whose ignore list is empty.
    assert [o.kind for o in pipe.handle(syslog(message="fail from 127.0.0.1"), 1000.0)] == ["ignored"]
    assert [o.kind for o in pipe.handle(syslog(message="fail from ::1"), 1000.0)] == ["ignored"]


def test_the_hosts_own_addresses_are_never_banned():
    pipe = pipeline(("app", make_filter(), 1))
    pipe.protected = AddressSet([ATTACKER])
    assert [o.kind for o in pipe.handle(syslog(), 1000.0)] == ["ignored"]


def test_failures_from_before_a_current_ban_are_not_counted_again():
    """Lines read again after a crash, or older than a ban the firewall held at start, are
    already answered by that ban: they neither count nor ban again; later ones count."""
    pipe = pipeline(("app", make_filter(), 2))
    pipe.book.restore(Ban("app", ATTACKER, 1000.0, 4600.0, 1, "found in the firewall at start"))
    assert [o.kind for o in pipe.handle(syslog(time=990.0), 1000.0)] == ["covered"]
    assert [o.kind for o in pipe.handle(syslog(time=1000.0), 1000.0)] == ["covered"]
    assert pipe.jails["app"].jail.tracked() == 0
    assert [o.kind for o in pipe.handle(syslog(time=1001.0), 1001.0)] == ["counted"]
    assert [o.kind for o in pipe.handle(syslog(time=1002.0), 1002.0)] == ["extended"]


def test_reaching_maxretry_again_while_banned_extends_the_ban_rather_than_making_a_new_one():
    flt = make_filter()
    pipe = pipeline(("app", flt, 2))
    kinds = [o.kind for t in (1000.0, 1001.0) for o in pipe.handle(syslog(time=t), t)]
    assert kinds == ["counted", "banned"]
    # Attempts already under way when the ban went in: later in time, so they count again.
    outcomes = [o for t in (1500.0, 1501.0) for o in pipe.handle(syslog(time=t), t)]
    assert [o.kind for o in outcomes] == ["counted", "extended"]
    assert outcomes[-1].ban.end == 1501.0 + 3600 and outcomes[-1].ban.offence == 1
    assert len(pipe.book) == 1
    # The same again at once: the ban already ends later than a new one would.
    pipe.jails["app"].policy = BanPolicy(60)
    held = [o.kind for t in (1502.0, 1503.0) for o in pipe.handle(syslog(time=t), t)]
    assert held == ["counted", "held"]


def test_an_untrusted_entry_is_not_run_through_a_fail2ban_filter_whose_jails_count_only_trusted_ones(tmp_path):
    conf = tmp_path / "app.conf"
    conf.write_text("[Definition]\nfailregex = x(?:a|a)*y from <HOST>$\n"
                    "journalmatch = _COMM=app\n            _SYSTEMD_UNIT=app.service _UID=0\n")
    flt = load_reference(str(conf))
    strict = Pipeline([JailSetup("app", flt, Jail("app", maxretry=1, findtime=600, require_trusted=True),
                                 BanPolicy(3600))], BanBook())
    forged = journal("x" + "a" * 40, _COMM="app", _UID="1000")  # exponential for that regex, if it ran
    flt.match = None  # examining it at all would fail here
    assert strict.handle(forged, 1000.0) == ()
    del flt.match
    trusted = journal("xy from 203.0.113.9", _COMM="app", _SYSTEMD_UNIT="app.service", _UID="0")
    assert [o.kind for o in strict.handle(trusted, 1000.0)] == ["banned"]
    lenient = Pipeline([JailSetup("app", flt, Jail("app", maxretry=1, findtime=600, require_trusted=False),
                                  BanPolicy(3600))], BanBook())
    assert [o.kind for o in lenient.handle(journal("xy from 203.0.113.9", _COMM="app"), 1000.0)] == ["banned"]
