"""Fleet mode on the Redis deployments the [fleet] table offers, each a real server: TLS with an
ACL user (rediss://, ca_file, username, password_file), Sentinel (sentinels + service) through a
failover, and Redis Cluster (cluster = true). Two agents each, in the root network namespace,
reach Redis over loopback TCP. They enforce through the log backend, which touches no firewall
(a dry run would publish and count nothing to the fleet), so their bans are what `jailwarden
bans --json` lists; failures reach them as real syslog datagrams from logger on each one's socket."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from .agent import AgentProcess, fleet_config
from .conftest import require_root, require_tools
from .polling import DEADLINE, wait_until
from .redis_server import (LOOPBACK, OPENSSL, REDIS_CLI, REDIS_SENTINEL, REDIS_SERVER, RedisSentinel, RedisServer,
                           cluster_port, form_cluster, make_certificates)
from .rsyslog import free_port
from .test_fleet import Node, fleet_connected, start_all, wait_for_status, write_key

FLEET_USER, FLEET_PASSWORD = "jw", secrets.token_hex(16)
ADMIN_USER, ADMIN_PASSWORD = "admin", secrets.token_hex(16)  # the test's own view of the server
# What an agent sends to a standalone Redis, and nothing else: XADD and XREAD on the stream of
# bans, EVAL of the count script, whose commands run under the same user (ZADD, ZREMRANGEBYSCORE,
# ZREMRANGEBYRANK, EXPIRE, ZRANGE, TIME), DEL of a count that reached maxretry, TIME and XINFO
# STREAM after each (re)connection (Redis's clock, the stream's newest entry), and PING, redis-py's
# health check of a connection idle for 30 s. Only the fleet's keys; no pub/sub channels. (A
# cluster client also asks each node for CLUSTER SLOTS and COMMAND.)
FLEET_COMMANDS = ("xadd", "xread", "xinfo|stream", "eval", "zadd", "zremrangebyscore", "zremrangebyrank", "expire",
                  "zrange", "time", "del", "ping")
FLEET_ACL = (f"{FLEET_USER} on >{FLEET_PASSWORD} resetchannels ~jailwarden:* -@all "
             + " ".join(f"+{command}" for command in FLEET_COMMANDS))
FAILOVER_SHARE_DEADLINE = 15.0  # seconds from a ban after the failover to the ban on the other agent


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    """A new file holding `text`, with exactly `mode`."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w") as secret:
        secret.write(text + "\n")
    os.chmod(path, mode)  # whatever the umask
    return path


def recorded_bans(node: Node) -> set[str]:
    """The addresses `jailwarden bans --json` lists on the node."""
    result = node.agent.cli("bans", "--json")
    assert result.returncode == 0, f"{node.name}: bans failed ({result.returncode}): {result.stderr}"
    return {ban["address"] for ban in json.loads(result.stdout)}


def wait_for_ban(nodes: list[Node], address: str, what: str, timeout: float = DEADLINE) -> None:
    """Poll until every node lists `address` among its bans; the failure shows their logs."""
    try:
        wait_until(lambda: all(address in recorded_bans(node) for node in nodes), what, timeout, interval=0.05)
    except AssertionError as timeout_error:
        logs = "\n".join(f"--- {node.name} logged:\n" + "\n".join(node.agent.lines[-25:]) for node in nodes)
        raise AssertionError(f"{timeout_error}\n{logs}") from None


def ban(node: Node, address: str) -> None:
    """`jailwarden ban sshd ADDRESS` through the node's control socket."""
    result = node.agent.cli("ban", "sshd", address)
    assert result.returncode == 0, f"{node.name}: ban failed ({result.returncode}): {result.stderr}"


class Agents:
    """Starts agents (log backend, root network namespace) sharing one key file; each is stopped
    on teardown by the ExitStack, also when the test fails."""

    def __init__(self, stack: ExitStack, tmp_path: Path) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self.key_file = write_key(tmp_path / "fleet.key")

    def start(self, fleet: str, names: tuple[str, ...] = ("node-a", "node-b"), maxretry: int = 5,
              fleet_count: bool = False, key_file: Path | None = None, connected: bool = True) -> list[Node]:
        """Agents named `names` with the [fleet] settings `fleet`, running, and (`connected`)
        each with the fleet connection up."""
        nodes = []
        for name in names:
            workdir = self.tmp_path / name
            workdir.mkdir()
            config = fleet_config(workdir, fleet, name, key_file or self.key_file, maxretry=maxretry,
                                  fleet_count=fleet_count)
            agent = AgentProcess(workdir, config, dry_run=False)
            self.stack.callback(agent.stop)
            nodes.append(Node(name, None, agent))  # no network namespace of its own
        start_all([node.agent for node in nodes])
        if connected:
            for node in nodes:
                wait_for_status(node, fleet_connected, "the fleet connected")
        return nodes


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Where a test enters its servers and agents: all taken down at its end, failed or not."""
    require_root()
    require_tools(REDIS_SERVER, "logger")
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def agents(stack, tmp_path) -> Agents:
    return Agents(stack, tmp_path)


# -- TLS and an ACL user


@pytest.fixture
def tls_redis(stack, tmp_path) -> RedisServer:
    """A redis-server speaking only TLS on a loopback port, with a certificate signed by a CA made
    for the test; no default user, the fleet's ACL user and an admin for the test's own checks."""
    require_tools(OPENSSL)
    certificates = make_certificates(tmp_path / "tls")
    return stack.enter_context(RedisServer(
        tmp_path / "redis", port=free_port(), certificates=certificates,
        acl_users=["default off", FLEET_ACL, f"{ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all"]))


def tls_fleet(server: RedisServer, password_file: Path) -> str:
    """The [fleet] settings for `server` as the fleet's ACL user, its password in `password_file`."""
    return (f'url = "{server.url}"\nca_file = "{server.certificates.ca}"\nusername = "{FLEET_USER}"\n'
            f'password_file = "{password_file}"')


def test_agents_share_bans_and_counts_over_tls_as_an_acl_user_allowed_only_the_commands_they_send(
        tls_redis, agents, tmp_path):
    password_file = write_secret(tmp_path / "redis.password", FLEET_PASSWORD)
    a, b = agents.start(tls_fleet(tls_redis, password_file), maxretry=3, fleet_count=True)
    counted, manual = "203.0.113.20", "203.0.113.21"

    # 2 + 1 failures: neither agent reaches maxretry 3 alone; the count in Redis does.
    a.fail(counted, 2)
    b.fail(counted)
    wait_for_ban([a, b], counted, f"{counted} banned on both agents after 2 + 1 failures")
    ban(a, manual)
    wait_for_ban([b], manual, f"node-a's ban of {manual} on node-b")

    with tls_redis.client(ADMIN_USER, ADMIN_PASSWORD) as admin:
        refused = admin.acl_log()
    used = {name.removeprefix("cmdstat_") for name, stats in
            tls_redis.info("commandstats", ADMIN_USER, ADMIN_PASSWORD).items() if stats["calls"]}
    assert refused == [], f"the ACL refused the agents: {refused}"
    # Each command granted was needed: the agents sent them all but PING, which redis-py sends
    # only on a connection idle for 30 s.
    assert set(FLEET_COMMANDS) - {"ping"} <= used, f"commands run on the server: {sorted(used)}"
    print(f"the fleet's ACL user: user {FLEET_ACL.replace(FLEET_PASSWORD, '<password>')}")


def test_an_agent_with_a_wrong_redis_password_says_so_once_and_runs_on_banning_locally(tls_redis, agents, tmp_path):
    password_file = write_secret(tmp_path / "redis.password", "not-" + FLEET_PASSWORD)
    (node,) = agents.start(tls_fleet(tls_redis, password_file), names=("node-w",), connected=False)

    refused = node.agent.wait_for(r"fleet: Redis at .* refuses this agent .*(WRONGPASS|invalid username-password pair)")
    print(f"the agent logged: {refused[0]}")
    tried = failed_logins(tls_redis)
    wait_until(lambda: failed_logins(tls_redis) > tried, "the agent trying Redis again after saying so", interval=0.05)
    status = node.status()
    assert status["fleet"]["connected"] is False
    ban(node, "203.0.113.22")
    assert "203.0.113.22" in recorded_bans(node)
    node.assert_running()
    assert len(node.agent.matching(r"WRONGPASS|invalid username-password pair")) == 1, "\n".join(node.agent.lines)


def failed_logins(server: RedisServer) -> int:
    """How many logins as the fleet's user Redis refused (its ACL LOG counts them)."""
    with server.client(ADMIN_USER, ADMIN_PASSWORD) as admin:
        return sum(int(entry["count"]) for entry in admin.acl_log()
                   if entry["reason"] == "auth" and entry["username"] == FLEET_USER)


@pytest.mark.parametrize("secret", ["key_file", "password_file"])
def test_a_secret_file_readable_by_others_turns_fleet_mode_off_saying_chmod_600_and_the_agent_runs_on(
        secret, tls_redis, agents, tmp_path):
    password_file = write_secret(tmp_path / "redis.password", FLEET_PASSWORD, 0o600 if secret == "key_file" else 0o644)
    key_file = write_secret(tmp_path / "open.key", secrets.token_hex(32), 0o644 if secret == "key_file" else 0o600)
    readable = key_file if secret == "key_file" else password_file
    (node,) = agents.start(tls_fleet(tls_redis, password_file), names=("node-o",), key_file=key_file,
                           connected=False)

    refusal = node.agent.wait_for(rf"{re.escape(str(readable))}.*chmod 600")
    print(f"the agent logged: {refusal[0]}")
    assert "0644" in refusal[0]
    assert node.status()["fleet"] is None
    node.assert_running()


# -- Sentinel


def test_bans_share_through_the_master_sentinel_names_and_again_after_it_fails_over_to_the_replica(
        stack, agents, tmp_path, record_property):
    require_tools(REDIS_SENTINEL)
    master = stack.enter_context(RedisServer(tmp_path / "master", port=free_port()))
    replica = stack.enter_context(RedisServer(tmp_path / "replica", port=free_port(), replica_of=master.port))
    wait_until(lambda: replica.info("replication").get("master_link_status") == "up",
               "the replica in sync with the master", interval=0.05)
    sentinel = stack.enter_context(RedisSentinel(tmp_path / "sentinel", free_port(), master.port))
    # Sentinel learns of the replica from the master's INFO; it can only promote one it knows.
    wait_until(lambda: [r for r in sentinel.replicas() if r["port"] == replica.port and r["is_slave"]
                        and not r["is_disconnected"]], "Sentinel knowing the replica", interval=0.05)
    a, b = agents.start(f'sentinels = ["{LOOPBACK}:{sentinel.port}"]\nservice = "{sentinel.service}"')
    before, after = "203.0.113.30", "203.0.113.31"

    ban(a, before)
    wait_for_ban([b], before, f"node-a's ban of {before} on node-b")

    master.kill()
    killed = time.monotonic()
    wait_until(lambda: sentinel.master() == (LOOPBACK, replica.port), "Sentinel naming the replica the master",
               timeout=15, interval=0.05)
    failover = time.monotonic() - killed
    ban(a, after)
    asked = time.monotonic()
    wait_for_ban([b], after, f"node-a's ban of {after} on node-b after the failover", FAILOVER_SHARE_DEADLINE)
    shared = time.monotonic() - asked
    print(f"from SIGKILL of the master to Sentinel naming the replica: {failover:.2f} s; "
          f"from the ban after it to the ban on node-b: {shared:.2f} s")
    record_property("sentinel_failover_s", round(failover, 2))
    record_property("ban_shared_after_failover_s", round(shared, 2))
    for node in (a, b):
        node.assert_running()
    with replica.client() as client:
        assert client.xlen("jailwarden:bans") >= 2  # both bans, in the stream of the promoted replica


# -- Cluster


def count_key(address: str) -> str:
    return f"jailwarden:failures:{{sshd:{address}}}"  # the fleet's count for `address` in jail sshd


def test_failures_split_over_two_agents_ban_on_both_through_a_redis_cluster_and_bans_share(stack, agents, tmp_path):
    require_tools(REDIS_CLI)
    nodes = [stack.enter_context(RedisServer(tmp_path / f"cluster-{index}", port=cluster_port(), cluster=True))
             for index in range(3)]
    form_cluster(nodes)
    with RedisCluster(host=LOOPBACK, port=nodes[0].port) as cluster:
        def count_node(address: str) -> RedisServer:
            """The node that holds the slot of the address's count key."""
            port = cluster.get_node_from_key(count_key(address)).port
            return next(node for node in nodes if node.port == port)

        # An address whose count lives on a node other than the one in the agents' url: the
        # client must follow the cluster's slot map, not just talk to the node it was given.
        counted = next(address for address in (f"203.0.113.{last}" for last in range(40, 100))
                       if count_node(address) is not nodes[0])
        holder = count_node(counted)
    manual = "198.51.100.40"
    a, b = agents.start(f'url = "redis://{LOOPBACK}:{nodes[0].port}/0"\ncluster = true',
                        maxretry=3, fleet_count=True)

    a.fail(counted, 2)
    b.fail(counted)
    wait_for_ban([a, b], counted, f"{counted} banned on both agents after 2 + 1 failures")
    zadds = {node.port: node.info("commandstats").get("cmdstat_zadd", {}).get("calls", 0) for node in nodes}
    assert zadds == {node.port: 3 if node is holder else 0 for node in nodes}, (
        f"ZADDs per node (by port): {zadds}; {count_key(counted)} lives on {holder.port}")
    with holder.client() as client:
        assert client.exists(count_key(counted)) == 0  # deleted at the ban: the window starts again

    ban(b, manual)
    wait_for_ban([a], manual, f"node-b's ban of {manual} on node-a")
    for node in (a, b):
        node.assert_running()
