"""BanBook: ban lengths, repeat offenders, history, and the expiry schedule."""

import ipaddress
import itertools
import math
import random

import pytest

from agent.bans import Ban, BanBook, BanPolicy, BantimeIncrement
from agent.jail import BanDecision
from parsers.filter import Failure

HOUR = 3600.0
ADDRESS = ipaddress.ip_address("203.0.113.7")
GROWING = BanPolicy(HOUR, BantimeIncrement(factor=2, max=5 * HOUR))


def address(n):
    return ipaddress.IPv4Address(0x0A000000 + n)


def test_ban_from_a_decision_lasts_bantime_and_says_why():
    book = BanBook()
    failure = Failure(ADDRESS, "sshd", 999.0, "Failed password", {})
    ban = book.ban(BanDecision("sshd", ADDRESS, 1000.0, 5, failure), 1000.0, BanPolicy(HOUR))
    assert ban == Ban("sshd", ADDRESS, 1000.0, 1000.0 + HOUR, 1, "5 sshd failures")
    assert book.is_banned("sshd", ADDRESS) and not book.is_banned("other", ADDRESS)
    assert book.next_expiry() == 1000.0 + HOUR


def test_repeat_offender_bans_double_up_to_the_cap():
    book = BanBook()
    lengths = []
    now = 0.0
    for _ in range(5):
        ban = book.ban(("sshd", ADDRESS), now, GROWING)
        lengths.append((ban.offence, ban.end - ban.start))
        now = ban.end
        book.expire(now)
    assert lengths == [(1, HOUR), (2, 2 * HOUR), (3, 4 * HOUR), (4, 5 * HOUR), (5, 5 * HOUR)]


def test_offences_are_counted_per_jail():
    book = BanBook()
    book.ban(("sshd", ADDRESS), 0.0, GROWING)
    book.expire(HOUR)
    assert book.ban(("postfix", ADDRESS), HOUR, GROWING).offence == 1
    assert book.ban(("sshd", ADDRESS), HOUR, GROWING).offence == 2


def test_history_is_forgotten_after_history_window():
    book = BanBook(history_window=24 * HOUR)
    book.ban(("sshd", ADDRESS), 0.0, GROWING)
    book.expire(HOUR)
    assert book.ban(("sshd", ADDRESS), HOUR + 24 * HOUR - 1, GROWING).offence == 2
    released = HOUR + 24 * HOUR - 1 + 2 * HOUR
    book.expire(released)
    assert book.ban(("sshd", ADDRESS), released + 24 * HOUR, GROWING).offence == 1


def test_history_is_bounded_and_forgets_the_longest_released_first():
    book = BanBook(max_history=2)
    for n in range(3):
        book.ban(("sshd", address(n)), 0.0, GROWING)
    book.expire(HOUR)
    assert [book.ban(("sshd", address(n)), HOUR, GROWING).offence for n in range(3)] == [1, 2, 2]


def test_unbanned_address_is_still_a_repeat_offender_next_time():
    book = BanBook()
    book.ban(("sshd", ADDRESS), 0.0, GROWING)
    assert book.unban("sshd", ADDRESS, 10.0).offence == 1
    assert book.unban("sshd", ADDRESS, 10.0) is None
    assert not book.is_banned("sshd", ADDRESS)
    assert book.ban(("sshd", ADDRESS), 20.0, GROWING).offence == 2


def test_ban_while_banned_extends_without_a_new_offence():
    book = BanBook()
    first = book.ban(("sshd", ADDRESS), 0.0, GROWING)
    same = book.ban(("sshd", ADDRESS), 10.0, BanPolicy(60.0))  # would end earlier: unchanged
    assert same is first
    extended = book.ban(("sshd", ADDRESS), 100.0, GROWING)
    assert (extended.offence, extended.start, extended.end) == (1, 0.0, 100.0 + HOUR)
    assert len(book) == 1 and book.active() == [extended]
    assert book.expire(HOUR) == []  # the old end no longer expires it
    assert book.expire(100.0 + HOUR) == [extended]


def test_manual_ban_with_ipv4_mapped_address_is_the_ipv4_ban():
    book = BanBook()
    book.ban(("sshd", ipaddress.ip_address("::ffff:203.0.113.7")), 0.0, GROWING, reason="manual")
    assert book.is_banned("sshd", ADDRESS)
    assert book.active("sshd")[0].reason == "manual"


def test_permanent_ban_never_expires():
    book = BanBook()
    policy = BanPolicy(math.inf, BantimeIncrement(factor=2, max=math.inf))
    ban = book.ban(("sshd", ADDRESS), 0.0, policy)
    assert ban.permanent and policy.duration(3) == math.inf
    assert book.next_expiry() is None
    assert book.expire(1e18) == []
    assert book.is_banned("sshd", ADDRESS)


def test_huge_offence_counts_do_not_overflow():
    assert GROWING.duration(10_000) == 5 * HOUR
    assert BanPolicy(HOUR, BantimeIncrement(factor=10, max=math.inf)).duration(10_000) == math.inf


def test_invalid_policies_are_rejected():
    with pytest.raises(ValueError, match="bantime"):
        BanPolicy(-1.0)
    with pytest.raises(ValueError, match="factor"):
        BantimeIncrement(factor=0.5)
    with pytest.raises(ValueError, match="shorter than bantime"):
        BanPolicy(2 * HOUR, BantimeIncrement(max=HOUR))
    with pytest.raises(ValueError, match="shorter than bantime"):
        BanPolicy(math.inf, BantimeIncrement(max=HOUR))


def test_expiry_comes_in_end_order_with_unbans_and_extensions_in_between():
    book = BanBook()
    for n in range(6):
        book.ban(("sshd", address(n)), 0.0, BanPolicy(100.0 * (n + 1)))  # ends 100 .. 600
    book.unban("sshd", address(1), 50.0)  # would have ended at 200
    book.ban(("sshd", address(0)), 450.0, BanPolicy(100.0))  # 100 -> 550
    book.ban(("sshd", address(1)), 60.0, BanPolicy(10.0))  # banned again: ends 70
    assert book.next_expiry() == 70.0
    assert [(b.address, b.end) for b in book.expire(300.0)] == [(address(1), 70.0), (address(2), 300.0)]
    assert book.next_expiry() == 400.0
    assert [(b.address, b.end) for b in book.expire(1000.0)] == [
        (address(3), 400.0), (address(4), 500.0), (address(0), 550.0), (address(5), 600.0),
    ]  # fmt: skip
    assert len(book) == 0 and book.next_expiry() is None


def test_bans_ending_at_the_same_time_expire_in_the_order_banned():
    book = BanBook()
    for n in range(3):
        book.ban(("sshd", address(n)), 0.0, BanPolicy(HOUR))
    book.unban("sshd", address(1), 1.0)
    assert [ban.address for ban in book.expire(HOUR)] == [address(0), address(2)]


def test_many_unbans_and_extensions_leave_no_early_expiry():
    book = BanBook()
    rng = random.Random(7)
    expected = {}
    for step in range(20_000):
        n = rng.randrange(500)
        if rng.random() < 0.3:
            book.unban("sshd", address(n), float(step))
            expected.pop(n, None)
        else:
            expected[n] = book.ban(("sshd", address(n)), float(step), BanPolicy(rng.uniform(1, 5000))).end
    expired = book.expire(math.inf)
    assert [ban.end for ban in expired] == sorted(expected.values())
    assert {ban.address for ban in expired} == {address(n) for n in expected}


def test_restored_bans_keep_their_offence_and_end():
    book = BanBook()
    stored = Ban("sshd", ADDRESS, 0.0, 2 * HOUR, 3, "5 sshd failures")
    book.restore(stored)
    assert book.active() == [stored] and book.next_expiry() == 2 * HOUR
    assert book.expire(2 * HOUR) == [stored]
    assert book.ban(("sshd", ADDRESS), 2 * HOUR, GROWING).offence == 4


def test_restored_ban_already_over_comes_back_from_the_next_expiry():
    book = BanBook()
    over = Ban("sshd", ADDRESS, 0.0, HOUR, 1)
    book.restore(over)
    assert book.expire(10 * HOUR) == [over]


def test_active_lists_bans_per_jail():
    book = BanBook()
    book.ban(("sshd", address(1)), 0.0, GROWING)
    book.ban(("postfix", address(2)), 0.0, GROWING)
    assert [ban.address for ban in book.active("sshd")] == [address(1)]
    assert {ban.jail for ban in book.active()} == {"sshd", "postfix"}
    assert book.active("nginx") == []


def test_many_bans_expire_in_order_with_unbans_and_extensions_between():
    count = 100_000
    rng = random.Random(1)
    policies = rng.choices([BanPolicy(float(seconds)) for seconds in range(1, 10_001)], k=count)
    addresses = [address(n) for n in range(count)]
    book = BanBook()
    for target, policy in zip(zip(itertools.repeat("sshd"), addresses), policies, strict=False):
        book.ban(target, 0.0, policy)
    for n in range(0, count, 10):  # a tenth are lifted early, another tenth extended
        book.unban("sshd", addresses[n], 0.0)
        book.ban(("sshd", addresses[n + 1]), 50_000.0, BanPolicy(100_000.0))
    assert book.next_expiry() >= 1.0
    ends = [ban.end for chunk_end in (25_000.0, 75_000.0, math.inf) for ban in book.expire(chunk_end)]
    assert len(ends) == count - count // 10
    assert ends == sorted(ends)
    assert len(book) == 0


def test_active_bans_are_counted_per_jail():
    book = BanBook()
    for jail, address in (("sshd", "192.0.2.1"), ("sshd", "192.0.2.2"), ("web", "192.0.2.1")):
        book.ban((jail, ipaddress.ip_address(address)), 0.0, BanPolicy(60))
    book.unban("sshd", ipaddress.ip_address("192.0.2.2"), 1.0)
    assert (book.count("sshd"), book.count("web"), book.count("mail"), len(book)) == (1, 1, 0, 2)
