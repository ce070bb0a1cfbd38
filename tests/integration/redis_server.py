"""A private redis-server for the fleet tests, listening on a unix socket only.

`RedisServer(workdir)` runs Debian's /usr/bin/redis-server on a config file of its own in
`workdir`: no TCP port, the socket `workdir/redis.sock` (mode 700), data in `workdir`, and
the append-only file on, so that `kill()` (SIGKILL) followed by `restart()` gives back the
same stream. It never touches the system's Redis (its service, port 6379 or its socket).

A unix socket rather than a loopback port: each agent under test runs in a network namespace
of its own, which cannot reach the root namespace's loopback, while a socket in the file
system is reachable from every network namespace.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import redis

from .polling import wait_until

REDIS_SERVER = "/usr/bin/redis-server"
_SOCKET_PATH_MAX = 107  # bytes in sun_path, less the terminating NUL


class RedisServer:
    """A running redis-server; use as a context manager, or call start()/stop().

    `password` sets `requirepass` (and is what `client()` authenticates with); `acl_users` are
    ACL rules added as `user RULE` lines, e.g. `"fleet on >secret ~jailwarden:* +@all"`.
    """

    def __init__(self, workdir: Path, password: str | None = None, acl_users: Iterable[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.socket_path = self.workdir / "redis.sock"
        if len(str(self.socket_path).encode()) > _SOCKET_PATH_MAX:
            raise ValueError(f"{self.socket_path} is longer than a unix socket path may be")
        self.url = f"unix://{self.socket_path}"
        self.password = password
        self.acl_users = tuple(acl_users)
        self.config_path = self.workdir / "redis.conf"
        self.log_path = self.workdir / "redis.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _config(self) -> str:
        lines = [
            "port 0",  # no TCP at all
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self.workdir}",
            "daemonize no",
            'save ""',
            "appendonly yes",
            # Every write reaches the file before the reply, so nothing the agents were told is
            # stored is missing after a SIGKILL (the default, everysec, may leave the last second out).
            "appendfsync always",
            "protected-mode no",
            'logfile ""',  # to stdout, which goes to redis.log
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {rule}" for rule in self.acl_users]
        return "".join(line + "\n" for line in lines)

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start redis-server and wait until the socket answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([REDIS_SERVER, str(self.config_path)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._answers, f"redis-server to answer PING on {self.socket_path}", timeout)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return True  # it answers; it wants credentials first
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        """A synchronous client on the socket, authenticated with `password` (else the server's
        requirepass, if any) as `username` (else the default user)."""
        return redis.Redis(unix_socket_path=str(self.socket_path), username=username,
                           password=password if password is not None else self.password, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to save or close anything; its clients see the socket drop."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Start again with the same config, data directory and socket (after stop() or kill())."""
        self.stop()
        self.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait for the exit; SIGKILL after `timeout`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What redis-server wrote so far (the last 40 lines)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            return ""
