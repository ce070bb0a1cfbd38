"""A local filter whose regex backtracks: the running agent probes it at start, says which regex
is slow, and keeps entries a local user could write away from it, while its jail still runs."""

from __future__ import annotations

from .agent import AgentProcess, socket_config
from .conftest import require_root
from .rsyslog import run_logger

SLOW = r"""syslog = ["app"]
failregex = ['''^Login failed for (?P<user>(?:\w+)+) from <HOST>$''']
"""


def test_the_agent_warns_about_a_backtracking_local_filter_and_still_runs_its_jail(tmp_path):
    require_root()
    config = socket_config(tmp_path) + f"""
[jails.app]
filter = "{tmp_path / 'filter.d' / 'app.toml'}"
maxretry = 1
"""
    with AgentProcess(tmp_path, config, filters={"app": SLOW}, dry_run=False) as agent:
        warning, = agent.matching(r"jail app: filter .*app\.toml: a regex may backtrack")
        assert "failregex[0]" in warning and "treated as not linear" in warning, warning
        run_logger("-u", str(tmp_path / "syslog.sock"), "-d", "--rfc5424", "-t", "app", "-p", "auth.notice",
                   "Login failed for bob from 203.0.113.40")
        agent.wait_for(r"jail app: not counting a failure from 203\.0\.113\.40|jail app: ban 203\.0\.113\.40")
