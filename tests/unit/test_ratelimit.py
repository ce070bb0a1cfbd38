"""The per-caller rate limit on application reports: a burst is allowed at once, then reports
at the rate, each caller on its own, with a bounded number of callers remembered."""

import pytest

from agent.ratelimit import RateLimit


def test_a_caller_may_report_a_burst_at_once_and_is_then_told_how_long_to_wait():
    limit = RateLimit(rate=20, burst=3)
    assert [limit.take(33, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take(33, 100.0) == pytest.approx(0.05)
    assert limit.take(33, 100.02) == pytest.approx(0.05 - 0.02)


def test_reports_refill_at_the_rate_but_never_beyond_the_burst():
    limit = RateLimit(rate=2, burst=2)
    assert limit.take("http", 0.0) == limit.take("http", 0.0) == 0.0
    assert limit.take("http", 0.5) == 0.0  # one report back after 1/rate seconds
    assert limit.take("http", 0.5) > 0
    # An hour idle refills the bucket to the burst, not to 7,200 reports.
    assert [limit.take("http", 3600.0) for _ in range(3)][-1] == pytest.approx(0.5)


def test_a_refused_report_spends_nothing():
    limit = RateLimit(rate=1, burst=1)
    assert limit.take(33, 0.0) == 0.0
    for moment in (0.1, 0.2, 0.3):
        assert limit.take(33, moment) == pytest.approx(1.0 - moment)
    assert limit.take(33, 1.0) == 0.0


def test_each_caller_has_its_own_bucket():
    limit = RateLimit(rate=1, burst=1)
    assert limit.take(33, 0.0) == 0.0
    assert limit.take(33, 0.0) > 0
    assert limit.take(1000, 0.0) == 0.0


def test_a_clock_that_steps_back_refills_nothing():
    limit = RateLimit(rate=1, burst=1)
    assert limit.take(33, 10.0) == 0.0
    assert limit.take(33, 5.0) == pytest.approx(1.0)


def test_memory_is_bounded_by_forgetting_the_caller_seen_longest_ago():
    limit = RateLimit(rate=1, burst=1, max_callers=3)
    for uid in (1, 2, 3):
        limit.take(uid, 0.0)
    limit.take(1, 0.0)  # seen again: now the newest
    limit.take(4, 0.0)
    assert len(limit) == 3
    assert limit.take(2, 0.0) == 0.0  # forgotten, so back with a full bucket
    assert limit.take(1, 0.0) > 0  # remembered, still empty


def test_the_refusal_says_the_rate_the_caller_the_burst_and_when_to_try_again():
    limit = RateLimit(rate=20, burst=100)
    assert limit.refusal("uid 33", 0.0499) == ("rate limited: more than 20 reports a second from uid 33 "
                                               "(burst 100); try again in 0.05 s")
    assert limit.refusal("uid 33", 0.0001).endswith("try again in 0.01 s")


@pytest.mark.parametrize("rate, burst, callers", [(0, 1, 1), (-1, 1, 1), (float("inf"), 1, 1), (1, 0, 1),
                                                  (1, 1, 0)])
def test_a_limit_that_could_never_allow_or_never_refuse_is_an_error(rate, burst, callers):
    with pytest.raises(ValueError):
        RateLimit(rate, burst, callers)
