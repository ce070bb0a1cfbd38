"""The README's examples of applications reporting failures ("### Applications report failures"),
run as the README has them against a real agent, as an unprivileged application user.

The code is read from README.md at test time, by position in that section: the first ```python
and ```php blocks report on the unix report socket, the second ones over HTTP; so what is tested
is what a reader copies. Each function is called by a small driver appended to its block, in a
process started with runuser as the application user (in report_group for the socket): Python
code on the distribution's python3 (it needs only the standard library), PHP on Debian's php-cli
(packaging/deps.sh installs it; without php those tests are skipped with the reason). Where an
example's code says it returns null / None when the agent is down (both PHP ones and the Python
HTTP one) or gives back the refusal's JSON answer (both HTTP ones), that is tested too.

Path and port: the README's code names /run/jailwarden/report.sock and 127.0.0.1:9717, the
packaged agent's. The test does not run its agent on those: a real agent on this machine would
collide with it (or be reported to), so each block must contain the README's value exactly once
and the test replaces it with its own, a socket in a fresh directory under /run and a free
loopback port. Nothing else in the code is changed. PHP runs with display_errors=stderr and
error_reporting=-1, and a call must leave stderr empty: the examples run without notices or
deprecations.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from . import test_report_api, test_report_http
from .agent import AgentProcess
from .conftest import DISTRIBUTION_PYTHON, require_tools
from .rsyslog import free_port
from .test_report_api import jailwarden, report_config
from .test_report_http import TOKEN, http_config

# The fixtures of the report socket's and the HTTP endpoint's tests, by their names: a directory
# in /run the application user can reach, and the agent's token file (TOKEN, mode 600).
run_dir = test_report_api.run_dir
token_file = test_report_http.token_file

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Applications report failures"
README_SOCKET = "/run/jailwarden/report.sock"
README_HTTP = "127.0.0.1:9717"
CHANNELS = ("socket", "http")  # the order of each language's blocks in the section
FUNCTIONS = {("python", "socket"): "report_failure", ("php", "socket"): "report_failure",
             ("python", "http"): "report_failure", ("php", "http"): "report_failure_http"}
REASON = "bad password for alice"

Example = Callable[[str, str], object]  # a README function, called as report(address, reason)

# Drivers appended to a block: call its function with the command line's arguments, print the
# answer as JSON (None / null as `null`).
PYTHON_CALL = "\nimport sys as _sys\nprint(json.dumps({function}(*_sys.argv[1:])))\n"
PHP_CALL = '\necho json_encode({function}(...array_slice($argv, 1))), "\\n";\n'


def readme_example(language: str, channel: str) -> str:
    """The code of the README's `language` example for `channel`, exactly as written there."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text[text.index(SECTION) + len(SECTION):]
    section = section[:next_heading.start()] if (next_heading := re.search(r"^#{1,3} ", section, re.M)) else section
    blocks = [code for fence, code in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S) if fence == language]
    assert len(blocks) == len(CHANNELS), (f"{SECTION!r} has {len(blocks)} {language} examples, not one for the "
                                          f"socket and one for HTTP in that order: update this test")
    return blocks[CHANNELS.index(channel)]


def with_test_endpoint(code: str, readme_value: str, test_value: str) -> str:
    times = code.count(readme_value)
    assert times == 1, f"the example names {readme_value!r} {times} times, not once:\n{code}"
    return code.replace(readme_value, test_value)


def run_example(language: str, code: str, function: str, user: str, *arguments: str) -> object:
    """Call `function` of `code` with `arguments` as `user`; its return value, read back as JSON."""
    if language == "python":
        command = [DISTRIBUTION_PYTHON, "-c", code + PYTHON_CALL.format(function=function), *arguments]
    else:
        command = ["php", "-d", "display_errors=stderr", "-d", "log_errors=0", "-d", "error_reporting=-1",
                   "-r", code + PHP_CALL.format(function=function), "--", *arguments]
    # cwd /: the application's imports must not find this checkout's modules.
    done = subprocess.run(["runuser", "-u", user, "--", *command], capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 0 and not done.stderr, f"the {language} example failed:\n{done.stderr}"
    return json.loads(done.stdout)


def require_language(language: str) -> None:
    require_tools(DISTRIBUTION_PYTHON if language == "python" else "php")  # php: Debian's php-cli


def status(control: Path, *jail: str) -> dict:
    done = jailwarden("status", *jail, "--json", "--socket", control)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_counted_then_banned(report: Example, address: str) -> None:
    """Two reports (maxretry 2): the first is counted, the second bans."""
    assert report(address, REASON) == {"ok": True, "result": {"jail": "webapp", "address": address,
                                                            "outcome": "counted"}}
    second = report(address, REASON)
    assert second["ok"] is True and second["result"]["outcome"] == "banned", second
    assert second["result"]["ban"]["address"] == address and second["result"]["ban"]["offence"] == 1


def assert_status_shows(control: Path, channel: str, address: str) -> None:
    running = status(control)
    counts = {"accepted": 2, "rate_limited": 0} | ({"auth_failed": 0, "auth_limited": 0} if channel == "http" else {})
    assert running["reports"] == {channel: counts}
    webapp = status(control, "webapp")
    assert webapp["failures"] == 2 and webapp["bans"] == 1
    assert [(ban["address"], ban["reason"]) for ban in webapp["banned"]] == [(address, "2 report failures")]


def socket_example(language: str, directory: Path, user: str) -> Example:
    code = with_test_endpoint(readme_example(language, "socket"), README_SOCKET, str(directory / "report.sock"))
    return lambda address, reason: run_example(language, code, FUNCTIONS[language, "socket"], user, address, reason)


def http_example(language: str, port: int, user: str, token: str = TOKEN) -> Example:
    code = with_test_endpoint(readme_example(language, "http"), README_HTTP, f"127.0.0.1:{port}")
    return lambda address, reason: run_example(language, code, FUNCTIONS[language, "http"], user, address, reason,
                                               token)


@pytest.mark.parametrize("language", ["python", "php"])
def test_readme_socket_example_reports_as_the_application_user_until_the_address_is_banned(
        tmp_path, run_dir, unprivileged_user, language):
    require_language(language)
    address = f"203.0.113.{10 if language == 'python' else 11}"
    report = socket_example(language, run_dir, unprivileged_user.name)
    with AgentProcess(tmp_path, report_config(tmp_path, run_dir, unprivileged_user.name), dry_run=False) as agent:
        assert_counted_then_banned(report, address)
        agent.wait_for(rf"jail webapp: ban {re.escape(address)} for 1h .*reason: 2 report failures")
        assert_status_shows(run_dir / "control.sock", "socket", address)


@pytest.mark.parametrize("language", ["python", "php"])
def test_readme_socket_example_returns_null_when_the_agent_is_down(tmp_path, run_dir, unprivileged_user, language):
    require_language(language)
    report = socket_example(language, run_dir, unprivileged_user.name)
    with AgentProcess(tmp_path, report_config(tmp_path, run_dir, unprivileged_user.name), dry_run=False):
        assert report("203.0.113.20", REASON)["result"]["outcome"] == "counted"  # it reaches a running agent
    assert report("203.0.113.20", REASON) is None


@pytest.mark.parametrize("language", ["python", "php"])
def test_readme_http_example_reports_as_the_application_user_until_the_address_is_banned(
        tmp_path, token_file, unprivileged_user, language):
    require_language(language)
    port = free_port()
    address = f"203.0.113.{30 if language == 'python' else 31}"
    report = http_example(language, port, unprivileged_user.name)
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        agent.wait_for(rf"report http: taking reports on http://127\.0\.0\.1:{port}/v1/failures")
        assert_counted_then_banned(report, address)
        agent.wait_for(rf"jail webapp: ban {re.escape(address)} for 1h .*reason: 2 report failures")
        assert_status_shows(tmp_path / "control.sock", "http", address)


@pytest.mark.parametrize("language", ["python", "php"])
def test_readme_http_example_returns_the_401_answer_for_a_wrong_token_and_counts_nothing(
        tmp_path, token_file, unprivileged_user, language):
    require_language(language)
    port = free_port()
    report = http_example(language, port, unprivileged_user.name, token="not-the-token")
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        agent.wait_for(rf"report http: taking reports on http://127\.0\.0\.1:{port}/v1/failures")
        assert report("203.0.113.40", REASON) == {"ok": False, "error": "wrong bearer token"}
        agent.wait_for(r"report http: answered 401 to .*: wrong bearer token")  # the status the function cannot see
        assert status(tmp_path / "control.sock", "webapp")["failures"] == 0


@pytest.mark.parametrize("language", ["python", "php"])
def test_readme_http_example_returns_null_when_the_agent_is_down(
        tmp_path, token_file, unprivileged_user, language):
    require_language(language)
    port = free_port()
    report = http_example(language, port, unprivileged_user.name)
    with AgentProcess(tmp_path, http_config(tmp_path, port, token_file), dry_run=False) as agent:
        agent.wait_for(rf"report http: taking reports on http://127\.0\.0\.1:{port}/v1/failures")
        assert report("203.0.113.50", REASON)["result"]["outcome"] == "counted"  # it reaches a running agent
    assert report("203.0.113.50", REASON) is None
