"""Fleet events (agent/fleet_events.py): signed on one node, verified on the others."""

from __future__ import annotations

import ipaddress
import json
import math

import pytest

from agent.fleet_events import (FleetEvent, RejectedEvent, count_member, decode, encode, entry_order, failures_key,
                                sign, signed_members)

KEY = b"0123456789abcdef0123456789abcdef"
STREAM = "jailwarden:bans"
EVENT = FleetEvent("ban", "sshd", ipaddress.ip_address("203.0.113.5"), 1000.0, 4600.0, "5 sshd failures", "node-a",
                   1000.0)


def as_stream_entry(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


def test_an_event_signed_with_the_fleet_key_reads_back_the_same():
    assert decode(as_stream_entry(encode(EVENT, KEY, STREAM)), KEY, STREAM) == EVENT


def test_a_permanent_ban_travels_as_null_and_comes_back_permanent():
    permanent = FleetEvent("ban", "sshd", EVENT.address, 1000.0, math.inf, "", "node-a", 1000.0)
    fields = encode(permanent, KEY, STREAM)
    assert json.loads(fields["event"])["end"] is None
    assert decode(as_stream_entry(fields), KEY, STREAM).end == math.inf


def test_write_access_to_redis_without_the_key_bans_nothing():
    fields = encode(EVENT, b"not the fleet key", STREAM)
    with pytest.raises(RejectedEvent) as rejected:
        decode(as_stream_entry(fields), KEY, STREAM)
    assert rejected.value.signature


def test_a_signed_event_changed_in_the_stream_is_rejected():
    fields = encode(EVENT, KEY, STREAM)
    fields["event"] = fields["event"].replace("203.0.113.5", "198.51.100.1")
    with pytest.raises(RejectedEvent, match="bad signature"):
        decode(as_stream_entry(fields), KEY, STREAM)


@pytest.mark.parametrize("change, reason", [
    ({"kind": "nuke"}, "unknown kind"),
    ({"address": "example.com"}, "malformed"),
    ({"v": 2}, "version"),
    ({"start": "soon"}, "malformed"),
])
def test_a_correctly_signed_but_invalid_event_is_rejected_with_the_reason(change, reason):
    data = json.loads(encode(EVENT, KEY, STREAM)["event"]) | change
    text = json.dumps(data)
    with pytest.raises(RejectedEvent, match=reason) as rejected:
        decode({b"event": text.encode(), b"signature": sign(text.encode(), KEY).encode()}, KEY, STREAM)
    assert not rejected.value.signature


def test_an_entry_that_is_not_an_event_is_rejected():
    with pytest.raises(RejectedEvent, match="not a fleet event"):
        decode({b"hello": b"world"}, KEY, STREAM)


def test_a_failure_count_key_is_one_cluster_slot_per_jail_and_address():
    key = failures_key("jailwarden", "sshd", ipaddress.ip_address("2001:db8::1"))
    assert key == "jailwarden:failures:{sshd:2001:db8::1}"


def test_an_event_copied_into_another_fleets_stream_is_rejected():
    fields = as_stream_entry(encode(EVENT, KEY, STREAM))
    with pytest.raises(RejectedEvent, match="copied into"):
        decode(fields, KEY, "otherfleet:bans")


def test_only_count_members_signed_for_this_address_count():
    key = failures_key("jailwarden", "sshd", EVENT.address)
    other = failures_key("jailwarden", "sshd", ipaddress.ip_address("203.0.113.6"))
    members = [count_member(KEY, key, "node-a", "1"), count_member(KEY, key, "node-b", "1").encode(),
               count_member(KEY, other, "node-a", "2"),  # signed for another address
               count_member(b"wrong key", key, "node-c", "3"), "node-x|4|" + "0" * 32, "garbage"]
    assert signed_members(members, KEY, key) == 2


def test_stream_ids_order_by_time_then_sequence():
    assert entry_order("1700000000000-1") > entry_order("1700000000000-0") > entry_order("999-5")
