"""The control socket: what the CLI and a root administrator's own scripts see when they talk to
the daemon (answers, errors, limits), and that no client can take the daemon down or in.

Real unix sockets in tmp_path; the server runs on an event loop of the test's own (asyncio.run),
the blocking client in a thread of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.control import MAX_LINE, ControlClient, ControlError, ControlServer, ControlSocketError, DaemonUnavailable
from agent.ratelimit import RateLimit

REPOSITORY = Path(__file__).parents[2]
DISTRIBUTION_PYTHON = "/usr/bin/python3"
BAN = {"jail": "sshd", "address": "192.0.2.7", "start": 1000.0, "end": 4600.0, "remaining": 3552.0,
       "offence": 1, "reason": "manual"}


class Handler:
    """A daemon's answers, some plain methods and some coroutines, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def status(self, jail: str | None = None) -> dict:
        self.calls.append(("status", {"jail": jail}))
        if jail is not None and jail != "sshd":
            raise ControlError(f"no jail {jail!r}")
        return {"version": "0.1.0", "jails": {"sshd": {"active_bans": 1}}} if jail is None else {"jail": jail}

    async def bans(self, jail: str | None = None) -> list:
        await asyncio.sleep(0)
        self.calls.append(("bans", {"jail": jail}))
        return [BAN]

    def ban(self, jail: str, address: str, duration: str | None = None) -> dict:
        self.calls.append(("ban", {"jail": jail, "address": address, "duration": duration}))
        if address == "127.0.0.1":
            raise ControlError("127.0.0.1 is in the ignore list of jail 'sshd'")
        return BAN | {"jail": jail, "address": address}

    async def unban(self, address: str | None = None, jail: str | None = None, all: bool = False) -> dict:
        self.calls.append(("unban", {"address": address, "jail": jail, "all": all}))
        return {"lifted": [BAN]}

    def reload(self) -> dict:
        self.calls.append(("reload", {}))
        raise RuntimeError("filter cache is corrupt")

    def report(self, jail: str, address: str, reason: str | None = None) -> dict:
        self.calls.append(("report", {"jail": jail, "address": address, "reason": reason}))
        return {"jail": jail, "address": address, "outcome": "counted"}


def serve(path: Path, test: Callable[[ControlServer], Awaitable[None]], handler: object | None = None,
          **options: object) -> None:
    """Run `test` against a started server on `path`, stopping the server afterwards."""

    async def main() -> None:
        server = ControlServer(path, handler if handler is not None else Handler(), **options)
        await server.start()
        try:
            await asyncio.wait_for(test(server), 30)
        finally:
            await server.stop()

    asyncio.run(main())


async def ask(path: Path, command: str, **arguments: object) -> object:
    with ControlClient(path) as client:
        return await asyncio.to_thread(client.request, command, **arguments)


async def exchange(path: Path, *lines: bytes) -> list[dict]:
    """Send raw lines on one connection and read one answer per line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"".join(lines))
        await writer.drain()
        return [json.loads(await reader.readline()) for _ in lines]
    finally:
        writer.close()


def test_every_command_reaches_the_handler_method_of_its_name_with_keyword_arguments(tmp_path) -> None:
    handler = Handler()
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        assert await ask(path, "status") == {"version": "0.1.0", "jails": {"sshd": {"active_bans": 1}}}
        assert await ask(path, "status", jail="sshd") == {"jail": "sshd"}
        assert await ask(path, "bans") == [BAN]
        assert await ask(path, "ban", jail="sshd", address="198.51.100.4", duration="10m") == \
            BAN | {"address": "198.51.100.4"}
        assert await ask(path, "unban", address="192.0.2.7") == {"lifted": [BAN]}
        assert await ask(path, "unban", all=True, jail="sshd") == {"lifted": [BAN]}

    serve(path, test, handler)
    assert handler.calls == [
        ("status", {"jail": None}),
        ("status", {"jail": "sshd"}),
        ("bans", {"jail": None}),
        ("ban", {"jail": "sshd", "address": "198.51.100.4", "duration": "10m"}),
        ("unban", {"address": "192.0.2.7", "jail": None, "all": False}),
        ("unban", {"address": None, "jail": "sshd", "all": True}),
    ]


def test_a_refused_request_reaches_the_client_with_the_daemons_message(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        with pytest.raises(ControlError, match=r"^127\.0\.0\.1 is in the ignore list of jail 'sshd'$"):
            await ask(path, "ban", jail="sshd", address="127.0.0.1")
        with pytest.raises(ControlError, match="no jail 'web'"):
            await ask(path, "status", jail="web")

    serve(path, test)


def test_a_handler_bug_is_an_internal_error_logged_with_its_traceback(tmp_path, caplog) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        with pytest.raises(ControlError, match="^internal error: RuntimeError: filter cache is corrupt$"):
            await ask(path, "reload")
        assert await ask(path, "bans") == [BAN]

    with caplog.at_level(logging.WARNING, logger="jailwarden.control"):
        serve(path, test)
    failures = [record for record in caplog.records if record.exc_info]
    assert len(failures) == 1 and "filter cache is corrupt" in str(failures[0].exc_info[1])


def test_a_result_that_is_not_json_is_an_internal_error(tmp_path) -> None:
    class Odd:
        def status(self, jail: str | None = None) -> dict:
            return {"uptime": float("inf")} if jail else {"since": object()}

    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        for jail in (None, "sshd"):
            with pytest.raises(ControlError, match="^internal error: "):
                await ask(path, "status", jail=jail)

    serve(path, test, Odd())


def test_bad_requests_get_a_clear_error_and_the_connection_stays_usable(tmp_path) -> None:
    path = tmp_path / "c.sock"
    bad = {
        b"{not json\n": "malformed request: not a JSON object",
        b"\xff\xfe\n": "malformed request",
        b"\n": "malformed request",
        b'["status"]\n': "expected a JSON object, got list",
        b'{"jail": "sshd"}\n': 'no "command"',
        b'{"command": 7}\n': 'no "command"',
        b'{"command": "shutdown"}\n': "unknown command 'shutdown'; commands: status, bans, ban, unban, reload",
        b'{"command": "ban", "jail": "sshd"}\n': "ban: missing argument 'address'",
        b'{"command": "ban", "jail": null, "address": "192.0.2.1"}\n': "ban: missing argument 'jail'",
        b'{"command": "ban", "jail": "sshd", "address": 3232235777}\n': "argument 'address' must be a string",
        b'{"command": "ban", "jail": "sshd", "address": ""}\n': "argument 'address' is empty",
        b'{"command": "status", "jail": "sshd", "verbose": true}\n': "status: unknown argument 'verbose'",
        b'{"command": "unban", "all": "yes"}\n': "argument 'all' must be a boolean",
        b'{"command": "unban"}\n': "unban: give an address, or all: true (not both)",
        b'{"command": "unban", "address": "192.0.2.1", "all": true}\n': "unban: give an address, or all: true",
        b'{"command": "reload", "force": true}\n': "reload: unknown argument 'force' (arguments: none)",
        b"[" * 20_000 + b"]" * 20_000 + b"\n": "malformed request: not a JSON object on one line",
    }

    async def test(server: ControlServer) -> None:
        answers = await exchange(path, *bad, b'{"command": "bans"}\n')
        for (request, message), answer in zip(bad.items(), answers[:-1], strict=True):
            assert answer["ok"] is False and message in answer["error"], (request, answer)
        assert answers[-1] == {"ok": True, "result": [BAN]}

    handler = Handler()
    serve(path, test, handler)
    assert handler.calls == [("bans", {"jail": None})], "no bad request reached the daemon"


def test_one_client_connection_serves_several_requests_even_after_a_refusal(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        with ControlClient(path) as client:
            assert await asyncio.to_thread(client.request, "status", jail="sshd") == {"jail": "sshd"}
            with pytest.raises(ControlError):
                await asyncio.to_thread(client.request, "status", jail="web")
            assert await asyncio.to_thread(client.request, "bans") == [BAN]

    serve(path, test)


def test_pipelined_requests_in_one_write_get_one_answer_each_in_order(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"command": "status", "jail": "sshd"}\n{"command": "bans"}\n'
                     b'{"command": "ban", "jail": "sshd", "address": "127.0.0.1"}\n{"command": "reload"}\n')
        answers = [json.loads(await reader.readline()) for _ in range(4)]
        writer.close()
        assert answers[0] == {"ok": True, "result": {"jail": "sshd"}}
        assert answers[1] == {"ok": True, "result": [BAN]}
        assert answers[2]["ok"] is False and "ignore list" in answers[2]["error"]
        assert answers[3]["ok"] is False and answers[3]["error"].startswith("internal error")

    serve(path, test)


def test_a_line_of_the_limit_is_served_and_a_longer_one_closes_the_connection(tmp_path) -> None:
    path = tmp_path / "c.sock"
    prefix, suffix = b'{"command": "status", "jail": "', b'"}'
    at_limit = prefix + b"x" * (MAX_LINE - len(prefix) - len(suffix)) + suffix

    async def test(server: ControlServer) -> None:
        [answer] = await exchange(path, at_limit + b"\n")
        assert answer["ok"] is False and "no jail 'xxx" in answer["error"]
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(at_limit + b"x\n" + b'{"command": "bans"}\n')
        answer = json.loads(await reader.readline())
        assert answer == {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"}
        assert await reader.read() == b"", "closed after an oversize line, the rest unanswered"
        writer.close()
        assert await ask(path, "bans") == [BAN]

    serve(path, test)


def test_the_socket_is_root_only_and_its_directory_is_created(tmp_path) -> None:
    path = tmp_path / "run" / "jailwarden" / "c.sock"

    async def test(server: ControlServer) -> None:
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755

    serve(path, test)
    assert not path.exists(), "stop() removes the socket file"


def test_a_stale_socket_file_is_replaced(tmp_path) -> None:
    path = tmp_path / "c.sock"
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(path))  # bound, never listening: what a killed agent leaves
    left_behind.close()

    async def test(server: ControlServer) -> None:
        assert await ask(path, "bans") == [BAN]

    serve(path, test)


def test_a_second_server_on_a_live_socket_refuses_to_start(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        with pytest.raises(ControlSocketError, match=f"^another jailwarden is running: {path} answers$"):
            await ControlServer(path, Handler()).start()
        assert await ask(path, "bans") == [BAN], "the running server still serves"

    serve(path, test)


def test_a_file_that_is_not_a_socket_is_not_replaced(tmp_path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        asyncio.run(ControlServer(path, Handler()).start())
    assert path.read_text() == "precious"


def test_connections_beyond_the_limit_are_closed_at_once_and_logged_once(tmp_path, caplog) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        held = []
        for _ in range(32):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"command": "bans"}\n')
            assert json.loads(await reader.readline())["ok"]  # served: it counts
            held.append((reader, writer))
        for _ in range(5):
            reader, writer = await asyncio.open_unix_connection(str(path))
            answer = json.loads(await reader.readline())
            assert answer == {"ok": False, "error": "too many control connections (32 open); try again"}
            assert await reader.read() == b""
            writer.close()
        with pytest.raises(ControlError, match="too many control connections"):
            await ask(path, "bans")
        held.pop()[1].close()
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # the server notices the close on its next read
            try:
                assert await ask(path, "bans") == [BAN]
                break
            except ControlError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
        for _, writer in held:
            writer.close()

    with caplog.at_level(logging.WARNING, logger="jailwarden.control"):
        serve(path, test)
    limit_lines = [record for record in caplog.records if "connections are open" in record.getMessage()]
    assert len(limit_lines) == 1, "refused connections are logged at a limited rate"


def test_reports_beyond_the_rate_limit_are_refused_per_peer_uid_and_counted(tmp_path, caplog) -> None:
    path = tmp_path / "c.sock"
    handler = Handler()

    async def test(server: ControlServer) -> None:
        for address in ("192.0.2.1", "192.0.2.2"):
            assert (await ask(path, "report", jail="sshd", address=address))["outcome"] == "counted"
        for _ in range(2):
            with pytest.raises(ControlError) as refused:
                await ask(path, "report", jail="sshd", address="192.0.2.3")
            wait = re.fullmatch(rf"rate limited: more than 0\.01 reports a second from uid {os.geteuid()} "
                                r"\(burst 2\); try again in ([\d.]+) s", str(refused.value))
            assert wait and 90 <= float(wait[1]) <= 100, refused.value
        assert await ask(path, "bans") == [BAN]  # other commands are not limited
        assert server.reports == {"accepted": 2, "rate_limited": 2}

    with caplog.at_level(logging.WARNING, logger="jailwarden.control"):
        serve(path, test, handler, rate_limit=RateLimit(0.01, 2))
    assert [call[1]["address"] for call in handler.calls if call[0] == "report"] == ["192.0.2.1", "192.0.2.2"]
    assert len([record for record in caplog.records if "refused: more than" in record.getMessage()]) == 1


def test_without_a_rate_limit_reports_are_only_counted(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        for _ in range(150):
            await ask(path, "report", jail="sshd", address="192.0.2.1")
        assert server.reports == {"accepted": 150, "rate_limited": 0}

    serve(path, test)


def test_a_client_gone_mid_line_or_idle_does_not_hurt_the_server(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        _, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"command": "ban", "jail": "ss')
        await writer.drain()
        writer.close()
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(path))
        raw.sendall(b'{"command": "bans"}\n{"command": "bans"}\n')
        raw.close()  # gone before reading its answers
        reader, writer = await asyncio.open_unix_connection(str(path))
        assert await asyncio.wait_for(reader.read(), 5) == b"", "an idle connection is closed"
        writer.close()
        assert await ask(path, "bans") == [BAN]

    serve(path, test, idle_timeout=0.2)


def test_stop_closes_open_connections_and_removes_the_socket(tmp_path) -> None:
    path = tmp_path / "c.sock"

    async def main() -> None:
        server = ControlServer(path, Handler())
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"command": "bans"}\n')
        assert json.loads(await reader.readline())["ok"]
        await asyncio.wait_for(server.stop(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not path.exists()

    asyncio.run(main())


def test_client_without_a_daemon_says_it_is_not_running(tmp_path) -> None:
    missing = tmp_path / "none.sock"
    with pytest.raises(DaemonUnavailable, match=f"^jailwarden is not running \\(nothing listens on {missing}\\)$"):
        ControlClient(missing).request("status")
    stale = tmp_path / "stale.sock"
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(stale))
    left_behind.close()
    with pytest.raises(DaemonUnavailable, match="jailwarden is not running"):
        ControlClient(stale).request("status")


def test_client_gives_up_on_a_daemon_that_does_not_answer(tmp_path) -> None:
    class Stuck:
        def __init__(self) -> None:
            self.released = asyncio.Event()

        async def reload(self) -> dict:
            await self.released.wait()
            return {"changes": []}

    stuck = Stuck()

    path = tmp_path / "c.sock"

    async def test(server: ControlServer) -> None:
        client = ControlClient(path, timeout=0.2)
        with pytest.raises(DaemonUnavailable, match=r"did not answer within 0\.2 s"):
            await asyncio.to_thread(client.request, "reload")
        stuck.released.set()

    serve(path, test, stuck)


@pytest.fixture
def shared_dir():
    """A directory any user can enter, so that only the socket's own mode keeps others out."""
    if os.geteuid() != 0:
        pytest.skip("needs root: connects as user nobody")
    if not os.access(DISTRIBUTION_PYTHON, os.X_OK):
        pytest.skip(f"needs {DISTRIBUTION_PYTHON} to run code as user nobody")
    directory = Path(tempfile.mkdtemp(prefix="jw-ctl-"))
    directory.chmod(0o755)
    yield directory
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()


def as_nobody(code: str) -> subprocess.CompletedProcess:
    # The distribution's interpreter: this run's may live where nobody may enter (/root).
    return subprocess.run([DISTRIBUTION_PYTHON, "-c", code], user=65534, group=65534, extra_groups=[], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=30)


def test_another_user_is_denied_the_root_socket(shared_dir) -> None:
    path = shared_dir / "c.sock"

    async def test(server: ControlServer) -> None:
        code = ("from pathlib import Path\nfrom agent.control import ControlClient, DaemonUnavailable\n"
                f"try:\n    ControlClient(Path({str(path)!r})).request('bans')\n"
                "except DaemonUnavailable as error:\n    print(error)\n")
        result = await asyncio.to_thread(as_nobody, code)
        assert result.stdout.strip() == f"{path}: permission denied: the control socket is root's; run as root", \
            result.stderr

    serve(path, test)


def test_a_peer_neither_root_nor_the_daemons_user_is_disconnected_unanswered(shared_dir) -> None:
    path = shared_dir / "c.sock"
    code = ("import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(path)!r})\n"
            "try:\n"
            "    s.sendall(b'{\"command\": \"bans\"}\\n')\n"
            "    print(repr(s.recv(4096)) if s.recv(1, socket.MSG_PEEK) else 'closed')\n"
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    print('closed')\n")

    async def test(server: ControlServer) -> None:
        path.chmod(0o666)  # an administrator's mistake: the uid check still keeps others out
        result = await asyncio.to_thread(as_nobody, code)
        assert result.stdout.strip() == "closed", result.stderr
        assert await ask(path, "bans") == [BAN]

    handler = Handler()
    serve(path, test, handler)
    assert handler.calls == [("bans", {"jail": None})]
