"""Hypothesis budgets for the whole suite.

"ci" (the default, what `make test` runs): a small fixed budget, the same examples on every run
(derandomize), no example database, no deadline, so CI is neither slow nor flaky. "fuzz"
(`make fuzz`, `pytest --hypothesis-profile=fuzz`): JW_FUZZ_EXAMPLES examples per test
(default 20,000), random, with a database that replays what an earlier run found. A test
whose examples are slow asks for a share of the budget (settings.default.max_examples // N),
so both profiles scale it.

Hypothesis keeps its files (examples, Unicode tables) under ~/.cache/jailwarden/hypothesis
($XDG_CACHE_HOME if set), never in the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jailwarden" / "hypothesis")

settings.register_profile(
    "ci", max_examples=400, derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("JW_FUZZ_EXAMPLES", "20000")), deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")
