"""Applications report failures: over [agent] report_socket (mode 0660, group report_group) an
unprivileged application user can report, and do nothing else; reports count like log lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def report(jail: str, address: str, reason: str = "bad password for alice") -> str:
    return json.dumps({"command": "report", "jail": jail, "address": address, "reason": reason})


def test_an_application_user_reports_failures_that_ban_but_cannot_unban_or_use_the_control_socket(
        tmp_path, unprivileged_user):
    run_dir = Path(tempfile.mkdtemp(prefix="jwreport-", dir="/run"))  # reachable by the user, unlike tmp_path
    os.chmod(run_dir, 0o755)
    report_socket = run_dir / "report.sock"
    config = f"""
[agent]
state_dir = "{tmp_path}/state"
socket = "{run_dir}/control.sock"
report_socket = "{report_socket}"
report_group = "{unprivileged_user.name}"
backend = "log"
[sources.journal]
enabled = false
[sources.syslog]
enabled = false
[jails.webapp]
filter = "sshd"
maxretry = 2
ignore = ["198.51.100.0/24"]
"""
    try:
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
            by_script = subprocess.run([sys.executable, "-m", "agent.cli", "report", "webapp", "203.0.113.82",
                                        "--reason", "from a script", "--json", "--config", str(agent.config_path)],
                                       capture_output=True, text=True, timeout=30, cwd=REPO)
            assert by_script.returncode == 0, by_script.stderr
            assert json.loads(by_script.stdout)["outcome"] == "counted"
            bans = subprocess.run([sys.executable, "-m", "agent.cli", "bans", "--json", "--config",
                                   str(agent.config_path)], capture_output=True, text=True, timeout=30, cwd=REPO)
            assert "203.0.113.80" in [ban["address"] for ban in json.loads(bans.stdout)]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
