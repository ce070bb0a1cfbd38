"""Private Redis deployments for the fleet tests: a redis-server on a unix socket or a loopback
port (plain or TLS only, as a replica, or as a Redis Cluster node), a redis-sentinel watching
one, a Redis Cluster formed from running servers, and the certificates for TLS.

Each runs Debian's binaries on a config file of its own in its own `workdir`, data included,
and never touches the system's Redis (its services, port 6379 or its socket).

A unix socket is the default: the agents of tests/integration/test_fleet.py each run in a
network namespace of their own, which cannot reach the root namespace's loopback, while a socket
in the file system is reachable from every network namespace. Agents in the root namespace
reach a loopback port (`port`), which TLS, Sentinel and Cluster need anyway.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .polling import terminate, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"  # Debian package redis-sentinel
REDIS_CLI = "/usr/bin/redis-cli"  # Debian package redis-tools, a dependency of redis-server
OPENSSL = "/usr/bin/openssl"
LOOPBACK = "127.0.0.1"
_SOCKET_PATH_MAX = 107  # bytes in sun_path, less the terminating NUL
_CLUSTER_BUS_OFFSET = 10_000  # a cluster node's bus port is its port plus this
_CLUSTER_PORT_MAX = 65_535 - _CLUSTER_BUS_OFFSET


@dataclass(slots=True, frozen=True)
class Certificates:
    """PEM files: a CA's certificate, and a certificate for 127.0.0.1 that the CA signed with its key."""

    ca: Path
    certificate: Path
    key: Path  # the certificate's private key


def make_certificates(directory: Path) -> Certificates:
    """A new CA and a server certificate for IP 127.0.0.1 that it signed (P-256 keys, valid a
    day), made with the openssl command line in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key, request = directory / "ca.key", directory / "server.csr"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    _openssl("req", "-x509", *new_key, "-keyout", ca_key, "-out", files.ca, "-days", "1",
             "-subj", "/CN=jailwarden test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *new_key, "-keyout", files.key, "-out", request, "-subj", f"/CN={LOOPBACK}",
             "-addext", f"subjectAltName=IP:{LOOPBACK}", "-addext", "extendedKeyUsage=serverAuth")
    _openssl("x509", "-req", "-in", request, "-CA", files.ca, "-CAkey", ca_key, "-copy_extensions", "copy",
             "-days", "1", "-out", files.certificate)
    return files


def _openssl(*arguments: object) -> None:
    command = [OPENSSL, *map(str, arguments)]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"


class _Daemon:
    """A redis-server or redis-sentinel process on a config file written by `_config()`; use as
    a context manager, or call start()/stop()."""

    program: str  # the binary

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "redis.conf"
        self.log_path = self.workdir / "redis.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _config(self) -> str:
        raise NotImplementedError

    def client(self) -> redis.Redis:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start the program and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.program, str(self.config_path)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._answers, f"{Path(self.program).name} in {self.workdir} to answer PING", timeout)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.program} exited with {self.process.returncode}:\n{self.log()}")
        client = self.client()
        if hasattr(client, "set_retry"):  # redis-py 5+ (Debian 12's 4.3.4 does not retry by default)
            client.set_retry(Retry(NoBackoff(), 0))  # one try per poll: redis-py's own retries take seconds
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return True  # it answers; it wants credentials first
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no chance to save or close anything; clients see their connections drop."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait for the exit; SIGKILL after `timeout`."""
        terminate(self.process, timeout)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the program wrote so far (the last 40 lines)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            return ""


class RedisServer(_Daemon):
    """A running redis-server, by default on the unix socket `workdir/redis.sock` (mode 700) only,
    with the append-only file on, so that `kill()` (SIGKILL) followed by `restart()` gives back
    the same data.

    `password` sets `requirepass` (and is what `client()` authenticates with); `acl_users` are
    ACL rules added as `user RULE` lines, e.g. `"fleet on >secret ~jailwarden:* +@all"`.
    `port`: listen on 127.0.0.1:`port` instead of the socket, TLS only if `certificates` are
    given (clients are not asked for certificates of their own). `replica_of`: replicate the
    server on 127.0.0.1 at that port. `cluster`: a Redis Cluster node, for form_cluster().
    """

    program = REDIS_SERVER

    def __init__(self, workdir: Path, password: str | None = None, acl_users: Iterable[str] = (), *,
                 port: int | None = None, certificates: Certificates | None = None, replica_of: int | None = None,
                 cluster: bool = False) -> None:
        super().__init__(workdir)
        if certificates is not None and port is None:
            raise ValueError("TLS needs a port")
        self.port = port
        self.certificates = certificates
        self.replica_of = replica_of
        self.cluster = cluster
        self.socket_path = self.workdir / "redis.sock"
        if port is None and len(str(self.socket_path).encode()) > _SOCKET_PATH_MAX:
            raise ValueError(f"{self.socket_path} is longer than a unix socket path may be")
        if port is None:
            self.url = f"unix://{self.socket_path}"
        else:
            self.url = f"{'rediss' if certificates else 'redis'}://{LOOPBACK}:{port}/0"
        self.password = password
        self.acl_users = tuple(acl_users)

    def _config(self) -> str:
        lines = [f"dir {self.workdir}"]  # first: nodes.conf and the data go where it points
        if self.port is None:
            lines += ["port 0", f"unixsocket {self.socket_path}", "unixsocketperm 700"]  # no TCP at all
        elif self.certificates is None:
            lines += [f"bind {LOOPBACK}", f"port {self.port}"]
        else:
            files = self.certificates
            lines += [f"bind {LOOPBACK}", "port 0", f"tls-port {self.port}", f"tls-cert-file {files.certificate}",
                      f"tls-key-file {files.key}", f"tls-ca-cert-file {files.ca}", "tls-auth-clients no"]
        lines += [
            "daemonize no",
            'save ""',
            "appendonly yes",
            # Every write reaches the file before the reply, so nothing the agents were told is
            # stored is missing after a SIGKILL (the default, everysec, may leave the last second out).
            "appendfsync always",
            "protected-mode no",
            'logfile ""',  # to stdout, which goes to redis.log
            "repl-diskless-sync-delay 0",  # a replica's first sync at once, not 5 s later (waiting for more)
        ]
        if self.replica_of is not None:
            lines.append(f"replicaof {LOOPBACK} {self.replica_of}")
        if self.cluster:
            lines += ["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000"]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {rule}" for rule in self.acl_users]
        return "".join(line + "\n" for line in lines)

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        """A synchronous client, authenticated with `password` (else the server's requirepass, if
        any) as `username` (else the default user)."""
        options = {"username": username, "password": password if password is not None else self.password,
                   "socket_timeout": 5}
        if self.port is None:
            return redis.Redis(unix_socket_path=str(self.socket_path), **options)
        if self.certificates is not None:
            options |= {"ssl": True, "ssl_ca_certs": str(self.certificates.ca)}
        return redis.Redis(host=LOOPBACK, port=self.port, **options)

    def info(self, section: str, username: str | None = None, password: str | None = None) -> dict:
        """INFO `section` (e.g. "replication", "commandstats"), as redis-py parses it."""
        with self.client(username, password) as client:
            return client.info(section)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again with the same config, data directory and socket (after stop() or kill())."""
        self.stop()
        self.start(timeout)


class RedisSentinel(_Daemon):
    """A running redis-sentinel on 127.0.0.1:`port` watching the master at 127.0.0.1:`master_port`
    as `service`, alone (quorum 1): it calls the master down after a second without an answer and
    promotes a replica (failover timeout 3 s). Sentinel rewrites its config file with what it
    learns; this one is its own, in `workdir`."""

    program = REDIS_SENTINEL

    def __init__(self, workdir: Path, port: int, master_port: int, service: str = "mymaster") -> None:
        super().__init__(workdir)
        self.port = port
        self.master_port = master_port
        self.service = service

    def _config(self) -> str:
        lines = [
            f"bind {LOOPBACK}", f"port {self.port}", f"dir {self.workdir}", "daemonize no", "protected-mode no",
            'logfile ""',
            f"sentinel monitor {self.service} {LOOPBACK} {self.master_port} 1",
            f"sentinel down-after-milliseconds {self.service} 1000",
            f"sentinel failover-timeout {self.service} 3000",
        ]
        return "".join(line + "\n" for line in lines)

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5)

    def master(self) -> tuple[str, int] | None:
        """The address Sentinel gives for the service's master now."""
        with self.client() as client:
            reply = client.sentinel_get_master_addr_by_name(self.service)
        if reply is None:
            return None
        host = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        return host, int(reply[1])

    def replicas(self) -> list[dict]:
        """What Sentinel knows of the master's replicas (SENTINEL REPLICAS)."""
        with self.client() as client:
            return client.sentinel_slaves(self.service)


def cluster_port() -> int:
    """A free loopback port for a Redis Cluster node: at most 55,535, with the port 10,000 higher,
    the node's cluster bus, free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
        if port > _CLUSTER_PORT_MAX:
            continue
        with socket.socket() as bus:
            try:
                bus.bind((LOOPBACK, port + _CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise AssertionError("no free loopback port with a free cluster bus port")


def form_cluster(nodes: Sequence[RedisServer], timeout: float = 20.0) -> None:
    """Join the running `nodes` (RedisServer(..., port=cluster_port(), cluster=True)) into one Redis Cluster
    with `redis-cli --cluster create`, its 16,384 slots split between them and no replicas; wait
    until each says cluster_state:ok."""
    command = [REDIS_CLI, "--cluster", "create", *(f"{LOOPBACK}:{node.port}" for node in nodes),
               "--cluster-replicas", "0", "--cluster-yes"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"

    def state_ok(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
        return "cluster_state:ok" in (info.decode() if isinstance(info, bytes) else str(info))

    wait_until(lambda: all(state_ok(node) for node in nodes), "cluster_state:ok on every cluster node", timeout,
               interval=0.05)
