"""The checkpoint: journal position and failure windows saved together, restored exactly."""

import ipaddress
import json

import pytest

from agent import state
from agent.jail import Jail
from agent.sources.journal import Position
from parsers.filter import Failure

ATTACKER = ipaddress.ip_address("2001:db8::9")


def fail(jail, now, address=ATTACKER):
    return jail.record(Failure(address, "app", now, "fail", {}), now)


def test_windows_survive_a_restart_exactly(tmp_path):
    jail = Jail("app", maxretry=3, findtime=600)
    fail(jail, 1000.0)
    fail(jail, 1010.0)
    state.save(tmp_path / "c.json", state.Checkpoint.of(Position("s=1;i=2", 1010_000_000), {"app": jail}))

    fresh = Jail("app", maxretry=3, findtime=600)
    checkpoint = state.load(tmp_path / "c.json")
    assert checkpoint.journal == Position("s=1;i=2", 1010_000_000)
    assert checkpoint.restore({"app": fresh, }, now=1020.0) == 1
    assert fail(fresh, 1020.0) is not None  # the third failure, counting the two saved


def test_restored_failures_older_than_findtime_are_dropped(tmp_path):
    jail = Jail("app", maxretry=2, findtime=600)
    fail(jail, 1000.0)
    state.save(tmp_path / "c.json", state.Checkpoint.of(None, {"app": jail, "gone": Jail("gone", maxretry=2,
                                                                                       findtime=60)}))
    fresh = Jail("app", maxretry=2, findtime=600)
    state.load(tmp_path / "c.json").restore({"app": fresh}, now=1700.0)
    assert fresh.tracked() == 0 and fail(fresh, 1700.0) is None


def test_missing_file_is_a_first_start(tmp_path):
    assert state.load(tmp_path / "none.json") is None


@pytest.mark.parametrize("text", ["", "{", '{"format": 99}', '{"format": 2, "journal": {"cursor": "x"}}',
                                  '{"format": 2, "windows": {"sshd": {"not-an-address": [1.0]}}}'])
def test_damaged_file_is_a_clear_error(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(state.StateError, match="c.json"):
        state.load(path)


def test_save_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "c.json"
    state.save(path, state.Checkpoint(Position("a", 1_000_000)))
    state.save(path, state.Checkpoint(Position("b", 2_000_000)))
    assert json.loads(path.read_text())["journal"] == {"cursor": "b", "usec": 2_000_000}
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]
