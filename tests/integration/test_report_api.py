"""Applications report failures: over [agent] report_socket (mode 0660, group report_group) an
unprivileged application user can report, and do nothing else, at most report_rate a second after
a burst of report_burst; reports count like log lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .agent import AgentProcess
from .conftest import DISTRIBUTION_PYTHON

REPO = Path(__file__).resolve().parents[2]

CLIENT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print(json.dumps({"connect": error.strerror})); sys.exit()
sock.sendall(sys.argv[2].encode() + b"\\n")
print(sock.makefile("rb").readline().decode().strip())
"""


def ask_as(user: str, path: Path, request: str) -> dict:
    """Send one request line as `user` (a real unprivileged process) and return the answer."""
    done = subprocess.run(["runuser", "-u", user, "--", DISTRIBUTION_PYTHON, "-c", CLIENT, str(path), request],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def jailwarden(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=30, cwd=REPO)


def report(jail: str, address: str, reason: str = "bad password for alice") -> str:
    return json.dumps({"command": "report", "jail": jail, "address": address, "reason": reason})


@pytest.fixture
def run_dir():
    """A directory in /run that the application user can reach, unlike tmp_path."""
    directory = Path(tempfile.mkdtemp(prefix="jwreport-", dir="/run"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def report_config(tmp_path: Path, run_dir: Path, group: str, maxretry: int = 2, agent_extra: str = "") -> str:
    """An agent fed by nothing but its report socket in `run_dir`, open to `group`; jail webapp."""
    return f"""
[agent]
state_dir = "{tmp_path}/state"
socket = "{run_dir}/control.sock"
report_socket = "{run_dir}/report.sock"
report_group = "{group}"
backend = "log"
{agent_extra}
[sources.journal]
enabled = false
[sources.syslog]
enabled = false
[jails.webapp]
filter = "sshd"
maxretry = {maxretry}
ignore = ["198.51.100.0/24"]
"""


def test_an_application_user_reports_failures_that_ban_but_cannot_unban_or_use_the_control_socket(
        tmp_path, run_dir, unprivileged_user):
    report_socket = run_dir / "report.sock"
    config = report_config(tmp_path, run_dir, unprivileged_user.name)
    with AgentProcess(tmp_path, config, dry_run=False) as agent:
        assert oct(report_socket.stat().st_mode & 0o777) == "0o660"
        first = ask_as(unprivileged_user.name, report_socket, report("webapp", "203.0.113.80"))
        assert first == {"ok": True, "result": {"jail": "webapp", "address": "203.0.113.80", "outcome": "counted"}}
        second = ask_as(unprivileged_user.name, report_socket, report("webapp", "203.0.113.80"))
        assert second["result"]["outcome"] == "banned" and second["result"]["ban"]["offence"] == 1
        agent.wait_for(r"jail webapp: ban 203\.0\.113\.80 for 1h .*reason: 2 report failures")
        ignored = ask_as(unprivileged_user.name, report_socket, report("webapp", "198.51.100.9"))
        assert ignored["result"]["outcome"] == "ignored"

        refused = ask_as(unprivileged_user.name, report_socket,
                         json.dumps({"command": "unban", "address": "203.0.113.80"}))
        assert refused == {"ok": False, "error": "'unban' is not allowed on this socket (it takes: report)"}
        assert ask_as(unprivileged_user.name, run_dir / "control.sock",
                      json.dumps({"command": "status"})) == {"connect": "Permission denied"}
        for request, error in (("{not json", "malformed request"),
                               (report("nosuchjail", "203.0.113.81"), "no running jail 'nosuchjail'"),
                               (report("webapp", "example.com"), "is not an IP address"),
                               ("x" * 70_000, "request line longer than 65536 bytes")):
            answer = ask_as(unprivileged_user.name, report_socket, request)
            assert answer["ok"] is False and error in answer["error"], answer

        # `jailwarden report` finds the report socket in the configuration.
        by_script = jailwarden("report", "webapp", "203.0.113.82", "--reason", "from a script", "--json", "--config",
                               agent.config_path)
        assert by_script.returncode == 0, by_script.stderr
        assert json.loads(by_script.stdout)["outcome"] == "counted"
        bans = jailwarden("bans", "--json", "--config", agent.config_path)
        assert "203.0.113.80" in [ban["address"] for ban in json.loads(bans.stdout)]


def test_an_application_user_beyond_the_rate_is_refused_while_root_is_not(tmp_path, run_dir, unprivileged_user):
    report_socket = run_dir / "report.sock"
    config = report_config(tmp_path, run_dir, unprivileged_user.name, maxretry=100,
                           agent_extra="report_rate = 0.01\nreport_burst = 3")
    with AgentProcess(tmp_path, config, dry_run=False) as agent:
        for number in range(3):
            answer = ask_as(unprivileged_user.name, report_socket, report("webapp", f"203.0.113.{90 + number}"))
            assert answer["ok"], answer
        refused = ask_as(unprivileged_user.name, report_socket, report("webapp", "203.0.113.93"))
        assert refused["ok"] is False
        # 100 s at 0.01 a second, less the time the first three took (seconds on a loaded machine).
        wait = re.fullmatch(rf"rate limited: more than 0\.01 reports a second from uid {unprivileged_user.uid} "
                            r"\(burst 3\); try again in ([\d.]+) s", refused["error"])
        assert wait and 90 <= float(wait[1]) <= 100, refused
        agent.wait_for(rf"reports from uid {unprivileged_user.uid} refused: more than 0.01 a second")
        # Root on the control socket is not limited.
        for number in range(5):
            by_root = jailwarden("report", "webapp", f"203.0.113.{100 + number}", "--socket", run_dir / "control.sock")
            assert by_root.returncode == 0, by_root.stderr
        status = json.loads(jailwarden("status", "--json", "--socket", run_dir / "control.sock").stdout)
        assert status["reports"] == {"socket": {"accepted": 3, "rate_limited": 1}}
        assert status["jails"]["webapp"]["failures"] == 3 + 5  # the refused report was not counted
