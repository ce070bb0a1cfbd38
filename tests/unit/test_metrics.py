"""The syslog receiver's drops and connections in the Prometheus text, from what `status` returns."""

from __future__ import annotations

from agent.metrics import exposition


def status(sources: dict) -> dict:
    return {"uptime": 10.0, "dry_run": False, "store_error": None, "jails": {}, "sources": sources,
            "reports": {}, "actions": {}}


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


SYSLOG = {"running": True, "lag": None, "events": 90, "dropped": 1_007_003, "counts": {
    "received": 100, "delivered": 90, "dropped_not_allowed": 3, "dropped_queue_full": 1_000,
    "dropped_kernel": 1_006_000, "connections_accepted": 40, "connections_refused": 99_960,
    "connections_timed_out": 38, "connections_open": 2}}


def test_each_kind_of_drop_is_a_sample_of_its_own_beside_the_total():
    found = samples(exposition(status({"syslog": SYSLOG})))
    assert found['jailwarden_source_dropped_total{source="syslog"}'] == "1007003"
    assert found['jailwarden_source_dropped_by_reason_total{source="syslog",reason="kernel"}'] == "1006000"
    assert found['jailwarden_source_dropped_by_reason_total{source="syslog",reason="queue_full"}'] == "1000"
    assert found['jailwarden_source_dropped_by_reason_total{source="syslog",reason="not_allowed"}'] == "3"


def test_syslog_connections_are_counted_by_outcome_with_those_open_now():
    found = samples(exposition(status({"syslog": SYSLOG})))
    assert found['jailwarden_syslog_connections_total{outcome="accepted"}'] == "40"
    assert found['jailwarden_syslog_connections_total{outcome="refused"}'] == "99960"
    assert found['jailwarden_syslog_connections_total{outcome="timed_out"}'] == "38"
    assert found["jailwarden_syslog_connections_open"] == "2"


def test_without_a_syslog_source_there_are_no_syslog_samples():
    journal = {"running": True, "lag": 0.1, "events": 5, "dropped": 0, "counts": {"received": 5, "delivered": 5}}
    text = exposition(status({"journal": journal}))
    assert "jailwarden_syslog_" not in text
    assert "jailwarden_source_dropped_by_reason_total{" not in text
    assert samples(text)['jailwarden_source_dropped_total{source="journal"}'] == "0"


def test_counters_past_a_million_keep_every_digit_and_fractions_stay_exact():
    found = samples(exposition(status({"syslog": SYSLOG}) | {"uptime": 12.25}))
    assert found['jailwarden_source_dropped_total{source="syslog"}'] == "1007003"
    assert found["jailwarden_uptime_seconds"] == "12.25"
    assert found["jailwarden_dry_run"] == "0"
