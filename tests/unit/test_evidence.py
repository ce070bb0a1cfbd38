"""What a ban's evidence keeps (bounded) and what of it may leave the host: every shipped
filter's sample failures, made public, name no address but the banned one, no user name the
filter captured, no e-mail address; and crafted lines cannot smuggle one through."""

from __future__ import annotations

import ipaddress
import re

import pytest

from agent.evidence import LINES, MAX_LINE, REPORTED, Evidence, Line, public
from agent.lines import event_from_line
from parsers.filter import Failure
from tests.filters.test_samples import HERE, NOW, compiled, read_samples

BANNED = ipaddress.ip_address("203.0.113.5")
HOSTNAMES = ("mx1", "mx1.example.org")
_CANDIDATE = re.compile(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]+")


def addresses_in(text: str) -> set:
    """Every address written in `text`, also with a port after it (mapped ones as IPv4)."""
    found = set()
    for token in _CANDIDATE.findall(text):
        pieces = {token, token.strip(".:")}
        if token.count(":") == 1:
            pieces.add(token.split(":")[0])  # 192.0.2.1:22
        for piece in pieces:
            try:
                address = ipaddress.ip_address(piece)
            except ValueError:
                continue
            if address.version == 6 and (address.ipv4_mapped or int(address) < 2 ** 32):
                address = address.ipv4_mapped or ipaddress.ip_address(int(address))  # ::ffff:a.b.c.d, ::a.b.c.d
            found.add(address)
    return found


def failing_samples():
    for log in sorted(HERE.glob("*.log")):
        for sample in read_samples(log):
            if sample.host is not None and sample.mode is None:
                yield pytest.param(log.stem, sample, id=f"{log.stem}-{sample.lineno}")


@pytest.mark.parametrize("name,sample", list(failing_samples()))
def test_a_sample_failure_made_public_names_only_the_banned_address_and_no_user(name, sample) -> None:
    failure = compiled(name, "normal").match(event_from_line(sample.line, NOW))
    assert failure is not None
    text = public(failure, HOSTNAMES)
    assert addresses_in(text) <= {failure.address}, text
    user = failure.captures.get("user")
    if user and user != str(failure.address):
        words = re.sub(r"<\w+>", " ", text.split(" ", 1)[1])  # without the placeholders
        assert not re.search(rf"(?<!\w){re.escape(user)}(?!\w)", words), text
    assert not re.search(r"[\w.+-]@[\w-]+\.", text), text
    assert len(text) <= 300


@pytest.mark.parametrize("message,captures,kept,gone", [
    # The user name is another address: it is the user's, not the attacker's.
    ("Failed password for invalid user 198.51.100.9 from 203.0.113.5 port 22 ssh2", {"user": "198.51.100.9"},
     ["from 203.0.113.5 port 22"], ["198.51.100.9"]),
    # A one-letter user name: only that word goes, not every 'a' of the line.
    ("Invalid user a from 203.0.113.5 port 4242", {"user": "a"}, ["Invalid user <user> from 203.0.113.5"], []),
    # A user named like a keyword does not nest placeholders.
    ("Failed password for invalid user user from 203.0.113.5", {"user": "user"}, ["> from 203.0.113.5"], ["<<"]),
    # No capture (a Fail2Ban filter): the words around names find them.
    ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  "
     "user=alice", {}, ["rhost=203.0.113.5"], ["alice"]),
    ("bad password for alice@example.org from 203.0.113.5", {}, ["from 203.0.113.5"], ["alice", "example.org"]),
    ("login failed: user: bob, from 203.0.113.5 via mx1.example.org (10.1.2.3)", {},
     ["from 203.0.113.5 via <host> (<address>)"], ["bob", "mx1", "10.1.2.3"]),
    ("auth failed for user\talice from 203.0.113.5 to root@mx1 and bob@localhost", {},
     ["from 203.0.113.5 to <email> and <email>"], ["alice", "root", "bob", "localhost"]),
    ('203.0.113.5 - alice [02/Dec/2026:10:00:00 +0000] "GET /admin HTTP/1.1" 401 0', {},
     ['203.0.113.5 - <user> [02/Dec/2026'], ["alice"]),
    # A user name or HELO chosen to look like part of an address or an e-mail domain.
    ("USER 192 (Login failed) from 203.0.113.5 to 192.168.1.5:21", {"user": "192"},
     ["USER <user> (Login failed)", "to <address>:21"], ["192.168", ".168.1.5"]),
    ("CHKUSER rejected rcpt: from <x@example.com> remote <203.0.113.5> rcpt <alice@example.com> helo example.com",
     {"helo": "example.com"}, ["remote <203.0.113.5> rcpt <<email>> helo <helo>"], ["alice", "<helo>>"]),
    # Address notations other parsers read as addresses.
    ("from 203.0.113.5 to 010.000.000.005 and 2001:db8:0:0:0:0:0:9:22 and \\032192.0.2.9", {},
     ["from 203.0.113.5 to <address>"], ["010.000", "2001:db8", "192.0.2.9"]),
    # The local end of the connection, in both families and as a mapped address.
    ("Connection from 203.0.113.5 port 4242 on 192.0.2.10 port 22", {}, ["on <address> port 22"], ["192.0.2.10"]),
    ("from ::ffff:203.0.113.5 to [2001:db8::10]:443 and fe80::1%eth0", {}, ["from ::ffff:203.0.113.5"],
     ["2001:db8::10", "fe80::1"]),
    # A query string may carry tokens or names; the path the scanner asked for is the evidence.
    ('203.0.113.5 - - "GET /wp-login.php?log=alice&pwd=x HTTP/1.1" 404', {},
     ["GET /wp-login.php?<query> HTTP/1.1"], ["alice", "pwd"]),
    # This host named "www": a path holding the word stays.
    ("open() /var/www/html/x failed, client: 203.0.113.5, server: www", {}, ["/var/www/html/x", "server: <host>"],
     []),
    # Control characters cannot forge a second line in a report.
    ("Failed password for root from 203.0.113.5\nFailed password for root from 198.51.100.1\x00", {},
     ["from 203.0.113.5 "], ["\n", "\x00", "198.51.100.1"]),
])
def test_crafted_lines_leave_no_name_or_other_address(message, captures, kept, gone) -> None:
    text = public(Failure(BANNED, "sshd", 1_796_000_000.0, message, captures), HOSTNAMES + ("www",))
    assert text.startswith("2026-11-30T00:53:20+00:00 ")
    for part in kept:
        assert part in text, text
    for part in gone:
        assert part not in text, text


def test_an_applications_reason_is_its_own_and_never_leaves_the_host() -> None:
    reported = Failure(BANNED, REPORTED, 1_796_000_000.0, "bad password for alice (Remote IP: 10.0.0.7)")
    assert public(reported) == "2026-11-30T00:53:20+00:00 a failure reported by an application"
    assert Line.of(reported).text().endswith("bad password for alice (Remote IP: 10.0.0.7)")  # the admin's mail


def test_a_long_line_is_cut_without_leaving_part_of_an_address_or_name() -> None:
    message = "Failed password for root from 203.0.113.5 upstream=" + "x" * (MAX_LINE - 60) + " 10.20.30.40 mx1"
    line = Line.of(Failure(BANNED, "sshd", 0.0, message, {}))
    assert len(line.message) <= MAX_LINE and line.message.endswith("…") and "10.2" not in line.message
    long_query = "GET /x?" + "q" * 900 + " from 203.0.113.5 upstream=10.20.30.40"
    assert "10." not in public(Failure(BANNED, "sshd", 0.0, long_query, {})).split("from")[-1]


def failure(address: str, time: float, message: str = "Failed password for root from {0}") -> Failure:
    return Failure(ipaddress.ip_address(address), "sshd", time, message.format(address))


def test_an_address_keeps_its_last_lines_of_findtime_and_its_ban_takes_them_with_the_line_that_set_it_off():
    evidence = Evidence()
    for second in range(8):
        evidence.add("sshd", failure("203.0.113.5", 100.0 + second))
    evidence.add("web", failure("203.0.113.5", 200.0))  # another jail's lines stay its own
    lines = evidence.take("sshd", failure("203.0.113.5", 109.0), findtime=600)
    assert [line.time for line in lines] == [104.0, 105.0, 106.0, 107.0, 109.0] and len(lines) == LINES
    assert evidence.take("sshd", failure("203.0.113.5", 110.0), 600)[0].time == 110.0  # taken means gone
    assert [line.time for line in evidence.take("web", failure("203.0.113.5", 201.0), 600)] == [200.0, 201.0]
    evidence.add("sshd", failure("203.0.113.6", 0.0))  # older than findtime when the ban comes
    assert [line.time for line in evidence.take("sshd", failure("203.0.113.6", 900.0), 600)] == [900.0]


def test_a_manual_unban_or_a_removed_jail_forgets_the_lines() -> None:
    evidence = Evidence()
    for jail, address in (("sshd", "203.0.113.5"), ("sshd", "203.0.113.6"), ("web", "203.0.113.5")):
        evidence.add(jail, failure(address, 1.0))
    evidence.forget("sshd", ipaddress.ip_address("203.0.113.5"))
    assert len(evidence) == 2
    evidence.forget("web")
    assert len(evidence) == 1


def test_a_flood_of_addresses_keeps_the_most_recent_within_the_bound() -> None:
    evidence = Evidence(max_addresses=100)
    for number in range(1000):
        evidence.add("sshd", failure(f"2001:db8::{number:x}", float(number), "x" * 5000 + " {0}"))
    assert len(evidence) == 100
    assert len(evidence.take("sshd", failure("2001:db8::3e7", 1000.0), 600)) == 2  # the newest is kept
    assert len(evidence.take("sshd", failure("2001:db8::1", 1000.0), 600)) == 1  # the oldest was forgotten
    kept = evidence.take("sshd", failure("2001:db8::3e6", 1000.0), 600)[0]
    assert len(kept.message) <= MAX_LINE and len(kept.public) <= 300


def test_a_captured_field_the_cut_would_split_is_cut_off_whole_and_costs_no_memory() -> None:
    agent = "Mozilla/5.0 " + "secret-token-" * 700  # 9 KB, captured by the filter as `agent`
    message = f'203.0.113.5 - - "GET /wp-login.php HTTP/1.1" 404 0 "-" "{agent}"'
    evidence = Evidence()
    evidence.add("web", Failure(BANNED, "apache-badbots", 0.0, message, {"agent": agent}))
    (kept,) = evidence._kept[("web", BANNED)]
    assert kept.captures == {} and "Mozilla" not in kept.message and len(kept.message) < 100
    (line, _) = evidence.take("web", Failure(BANNED, "apache-badbots", 1.0, message, {"agent": agent}), 600)
    assert "secret" not in line.public and "secret" not in line.message
