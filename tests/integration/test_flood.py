"""A small flood through the real agent into the kernel (the full size, 100,000 entries, is
tests/bench/bench_flood.py): every address that failed maxretry times is banned, no other is,
and the control socket answers all along."""

from __future__ import annotations

from .conftest import require_root, require_tools
from .flood import run_flood


def test_a_flood_bans_every_repeat_offender_and_nobody_else_while_status_answers(tmp_path):
    require_root()
    require_tools("ip", "ipset", "iptables-legacy")
    report = run_flood(tmp_path, count=2_000, banned=1_000, timeout=60)

    assert report["missing"] == 0 and report["banned_in_kernel"] == 1_000
    assert report["false_bans"] == 0
    assert report["status_failures"] == [] and report["status_requests"] > 0
