"""The action runner: actions run off the ban path, retried with backoff, bounded, counted."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from agent.actions import ActionError, ActionFailed, action_class
from agent.actions.runner import ActionRunner, build_actions
from agent.bans import Ban

BAN = Ban("sshd", ipaddress.ip_address("203.0.113.5"), 1000.0, 4600.0, 1, "5 sshd failures")


class Recording:
    """A plug-in action as a user writes one: async on_ban, plain on_unban, failing on demand."""

    def __init__(self, failures: int = 0, permanent: bool = False, delay: float = 0.0) -> None:
        self.failures, self.permanent, self.delay = failures, permanent, delay
        self.seen: list[tuple[str, str, float]] = []

    async def on_ban(self, notice) -> None:
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise ActionFailed("far end said no", permanent=self.permanent)
        self.seen.append((notice.kind, notice.address, time.monotonic()))

    def on_unban(self, notice) -> None:
        self.seen.append((notice.kind, notice.address, time.monotonic()))


async def run(runner: ActionRunner, *notices: tuple[str, Ban], until=lambda: True, timeout: float = 5.0) -> None:
    runner.start()
    for kind, ban in notices:
        runner.notify(kind, ban)
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await runner.stop(grace=0)


def test_a_failing_delivery_is_retried_with_growing_waits_then_succeeds():
    action = Recording(failures=2)
    runner = ActionRunner({"rec": action}, {"sshd": ("rec",)}, backoff=0.05)
    started = time.monotonic()
    asyncio.run(run(runner, ("ban", BAN), until=lambda: action.seen))
    assert [kind for kind, *_ in action.seen] == ["ban"]
    assert action.seen[0][2] - started >= 0.05 + 0.1  # waited 0.05 then 0.1
    assert runner.stats()["rec"] | {"last_error": None} == {"queued": 1, "done": 1, "retried": 2, "failed": 0,
                                                            "dropped": 0, "waiting": 0, "last_error": None}


def test_a_permanent_failure_is_not_retried_and_is_visible():
    action = Recording(failures=5, permanent=True)
    runner = ActionRunner({"rec": action}, {"sshd": ("rec",)}, backoff=0.01)
    asyncio.run(run(runner, ("ban", BAN), until=lambda: runner.stats()["rec"]["failed"]))
    stats = runner.stats()["rec"]
    assert (stats["failed"], stats["retried"]) == (1, 0) and "far end said no" in stats["last_error"]


def test_a_slow_action_never_holds_up_notify_and_a_full_queue_drops_the_oldest(monkeypatch):
    monkeypatch.setattr("agent.actions.runner.QUEUE", 10)
    action = Recording(delay=0.2)
    runner = ActionRunner({"rec": action}, {"sshd": ("rec",), "web": ()})

    async def flood() -> float:
        runner.start()
        started = time.perf_counter()
        for n in range(100):
            runner.notify("ban", Ban("sshd", ipaddress.ip_address(f"203.0.113.{n}"), 0, 1, 1))
            runner.notify("ban", Ban("web", ipaddress.ip_address(f"203.0.113.{n}"), 0, 1, 1))  # no actions
        took = time.perf_counter() - started
        await runner.stop(grace=0)
        return took

    assert asyncio.run(flood()) < 0.05
    stats = runner.stats()["rec"]
    assert stats["queued"] == 100 and stats["dropped"] >= 89 and stats["waiting"] <= 10


def test_an_unknown_action_or_bad_options_leave_that_action_out_with_the_reason():
    actions, problems = build_actions({"hook": {"type": "webhook", "url": "ftp://example.net/"},
                                       "mine": {"type": "no.such:Thing"}},
                                      {"hook", "mine", "webhook"})
    assert actions == {}
    assert any("action hook: not started: webhook: url must be an http:// or https:// URL" in p for p in problems)
    assert any("action mine: not started:" in p and "no.such:Thing" in p for p in problems)
    assert any("action webhook: not started:" in p and "url" in p for p in problems)
    with pytest.raises(ActionError, match="no entry point"):
        action_class("nothing-like-this")
