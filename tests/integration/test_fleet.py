"""Fleet mode with a real Redis: three agents, each in a network namespace of its own and
enforcing with the ipset backend, share bans, unbans and failure counts through a private
redis-server on a unix socket (which every namespace reaches). Failures reach an agent as real
syslog datagrams from util-linux logger on the agent's unix socket; what each test checks is
the kernel's ipset inside each node's namespace."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from .agent import AgentProcess, fleet_config
from .conftest import DISTRIBUTION_PYTHON, require_root, require_tools
from .netns import NetworkNamespace
from .polling import wait_until
from .redis_server import REDIS_SERVER, RedisServer
from .rsyslog import run_logger
from .test_firewall_ipset import saved

MAXRETRY = 5
SHARE_LATENCY = 1.0  # seconds from a ban logged on one node to the ban in the other nodes' kernels
STREAM = "jailwarden:bans"  # the fleet's stream of signed bans and unbans (prefix "jailwarden")
IPSET = "jw-sshd-4"  # the ipset backend's IPv4 set for jail sshd


@dataclass
class Node:
    name: str  # its [fleet] node name
    namespace: NetworkNamespace
    agent: AgentProcess

    def fail(self, address: str, times: int = 1) -> None:
        """`times` sshd password failures from `address`, sent by logger to the agent's syslog socket."""
        socket = str(self.agent.workdir / "syslog.sock")
        for _ in range(times):
            port = 1024 + secrets.randbelow(60000)
            run_logger("-u", socket, "-d", "--rfc5424", "-t", "sshd", "-p", "auth.notice",
                       f"Failed password for root from {address} port {port} ssh2")

    def kernel_bans(self) -> dict[str, int]:
        """The addresses in the node's kernel ipset for jail sshd, with their timeouts in seconds."""
        return saved(self.namespace)[1].get(IPSET, {})

    def status(self) -> dict:
        """`jailwarden status --json` through the node's control socket."""
        result = self.agent.cli("status", "--json")
        assert result.returncode == 0, f"{self.name}: status failed ({result.returncode}): {result.stderr}"
        return json.loads(result.stdout)

    def assert_running(self) -> None:
        process = self.agent.process
        assert process is not None and process.poll() is None, (
            f"{self.name}'s agent exited ({None if process is None else process.returncode}):\n"
            + "\n".join(self.agent.lines[-30:]))


@dataclass
class Fleet:
    redis: RedisServer
    nodes: list[Node]

    def banned_everywhere(self, address: str, nodes: list[Node] | None = None) -> bool:
        return all(address in node.kernel_bans() for node in nodes or self.nodes)

    def banned_nowhere(self, address: str) -> bool:
        return not any(address in node.kernel_bans() for node in self.nodes)


def find_values(document: object, wanted: Callable[[str, object], bool], path: str = "") -> dict[str, object]:
    """Every value in a JSON document whose key and value `wanted` accepts, by its dotted path."""
    found: dict[str, object] = {}
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if wanted(str(key), value):
                found[where] = value
            found |= find_values(value, wanted, where)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found |= find_values(value, wanted, f"{path}[{index}]")
    return found


def fleet_connected(status: dict) -> bool:
    """Whether a node's status says its fleet connection is up (a key "connected" anywhere)."""
    return any(find_values(status, lambda key, value: key == "connected" and value is True))


def signature_rejections(status: dict) -> int:
    """The sum of a node's counters whose name contains "signature"."""
    counters = find_values(status, lambda key, value: "signature" in key.lower()
                           and isinstance(value, int) and not isinstance(value, bool))
    return sum(counters.values())


def wait_for_status(node: Node, condition: Callable[[dict], bool], what: str) -> dict:
    """Poll the node's status until `condition` holds; the failure shows the last status."""
    last: dict = {}

    def holds() -> dict | None:
        last["status"] = node.status()
        return last["status"] if condition(last["status"]) else None

    try:
        return wait_until(holds, f"{what} on {node.name}", interval=0.05)
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; its `status --json`:\n{json.dumps(last.get('status'), indent=1)}") from None


def write_key(path: Path) -> Path:
    """The fleet's signing key, 32 random bytes as hex text, readable by root only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as key:
        key.write(secrets.token_hex(32) + "\n")
    return path


@pytest.fixture
def start_fleet(tmp_path) -> Iterator[Callable[..., Fleet]]:
    """start_fleet(fleet_count=False, jail_extra="" (or per node name), interpreter=this run's): a Redis and three
    agents (node-a, node-b, node-c), each in a network namespace of its own, running and
    connected to the fleet. Everything is taken down afterwards, also when the test fails:
    agents stopped, namespaces deleted, Redis stopped."""
    require_root()
    require_tools("ip", "ipset", "iptables-legacy", "logger", REDIS_SERVER)
    with ExitStack() as stack:
        def start(fleet_count: bool = False, jail_extra: str | dict[str, str] = "",
                  interpreter: str = sys.executable) -> Fleet:
            redis = stack.enter_context(RedisServer(tmp_path / "redis"))
            key_file = write_key(tmp_path / "fleet.key")
            nodes = []
            for letter in "abc":
                name = f"node-{letter}"
                namespace = stack.enter_context(NetworkNamespace("jwfleet"))
                workdir = tmp_path / name
                workdir.mkdir()
                # A lock of our own: /run/xtables.lock is one for every namespace on the host.
                extra = jail_extra.get(name, "") if isinstance(jail_extra, dict) else jail_extra
                config = fleet_config(workdir, f'url = "{redis.url}"', name, key_file, backend="ipset",
                                      maxretry=MAXRETRY, fleet_count=fleet_count, jail_extra=extra)
                agent = AgentProcess(workdir, config,
                                   dry_run=False, netns=namespace.name, interpreter=interpreter,
                                   env={"XTABLES_LOCKFILE": str(workdir / "xtables.lock")})
                stack.callback(agent.stop)
                nodes.append(Node(name, namespace, agent))
            start_all([node.agent for node in nodes])
            # An agent knows Redis is there from its first reply (up to a second after its start,
            # when the first blocking read of the empty stream returns); until then its failures
            # are counted locally only, which the tests here are not about.
            for node in nodes:
                wait_for_status(node, fleet_connected, "the fleet connected")
            return Fleet(redis, nodes)

        yield start


def start_all(agents: list[AgentProcess]) -> None:
    """Start the agents side by side (each takes about a second to come up); raise the first failure."""
    errors: list[Exception] = []

    def start(agent: AgentProcess) -> None:
        try:
            agent.start()
        except Exception as error:  # handed to the test thread below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def assert_never_banned(fleet: Fleet, address: str, seconds: float) -> None:
    """No node's kernel holds `address` at any time in the next `seconds`: long enough for a
    ban that one node wrongly decided to reach every kernel."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        banned = [node.name for node in fleet.nodes if address in node.kernel_bans()]
        assert not banned, f"{address} is banned on {banned}"
        time.sleep(0.05)


def test_a_ban_on_one_node_is_in_the_others_kernels_within_a_second_and_its_unban_lifts_it_there(
        start_fleet, record_property):
    fleet = start_fleet()
    a, b, c = fleet.nodes
    address = "203.0.113.5"

    a.fail(address, MAXRETRY)
    logged = a.agent.logged_at(rf"jail sshd: ban {re.escape(address)} for 1h")
    arrived: dict[str, float] = {}

    def in_other_kernels() -> bool:
        for node in (b, c):
            if node.name not in arrived and address in node.kernel_bans():
                arrived[node.name] = time.monotonic()
        return len(arrived) == 2

    wait_until(in_other_kernels, f"the ban of {address} in node-b's and node-c's kernels")
    latency = {name: round(seen - logged, 3) for name, seen in arrived.items()}
    print(f"from node-a logging the ban to the ban in the other nodes' kernels: {latency} s")
    record_property("fleet_share_latency_s", latency)
    assert max(latency.values()) <= SHARE_LATENCY, f"sharing took {latency} s, more than {SHARE_LATENCY:g} s"
    assert address in a.kernel_bans()
    for node in (b, c):
        assert 3590 <= node.kernel_bans()[address] <= 3600, f"{node.name}: {node.kernel_bans()}"  # the hour left

    unban = a.agent.cli("unban", "sshd", address)
    assert unban.returncode == 0, unban.stderr
    asked = time.monotonic()
    wait_until(lambda: fleet.banned_nowhere(address), f"{address} lifted from every node's kernel")
    print(f"from the unban on node-a to the ban gone from every kernel: {time.monotonic() - asked:.3f} s")


def test_failures_spread_over_three_nodes_ban_everywhere_once_the_fleet_total_reaches_maxretry(start_fleet):
    fleet = start_fleet(fleet_count=True)
    a, b, c = fleet.nodes
    address = "203.0.113.6"

    a.fail(address, 2)
    b.fail(address, 2)
    for node in (a, b):
        node.agent.wait_for(rf"jail sshd: failure from {re.escape(address)} ", count=2)
    # 4 of 5, on the fleet and on each node: a node that counted a failure twice (its own, read
    # back from Redis) or banned on another node's count alone would ban now.
    assert_never_banned(fleet, address, SHARE_LATENCY)

    c.fail(address)
    wait_until(lambda: fleet.banned_everywhere(address), f"{address} banned on every node after the 5th failure")
    for node in fleet.nodes:
        assert 3590 <= node.kernel_bans()[address] <= 3600, f"{node.name}: {node.kernel_bans()}"


def test_a_node_back_from_a_stop_applies_the_bans_still_running_with_their_time_left_and_not_the_ended_one(
        start_fleet):
    fleet = start_fleet()
    a, b, c = fleet.nodes
    ended, running = "203.0.113.7", "203.0.113.8"

    c.agent.stop()
    # The short ban goes into the stream first: by the time node-c applies the long one, it has
    # read the short one too.
    short = a.agent.cli("ban", "sshd", ended, "--for", "3s")
    assert short.returncode == 0, short.stderr
    long = a.agent.cli("ban", "sshd", running, "--json")
    assert long.returncode == 0, long.stderr
    end = json.loads(long.stdout)["end"]
    wait_until(lambda: {ended, running} <= set(b.kernel_bans()), "both bans on node-b while node-c is stopped")
    a.agent.wait_for(rf"jail sshd: unban {re.escape(ended)} \(ban ended\)")

    c.agent.start()
    timeout = wait_until(lambda: c.kernel_bans().get(running), f"node-c applying the ban of {running}")
    left = end - time.time()
    # The short ban's 3 s and node-c's start have passed since the ban (about 4 s here): a fresh
    # hour would be that far off.
    assert abs(timeout - left) <= 1.5, f"node-c's ipset timeout is {timeout} s; the ban has {left:.1f} s left"
    assert ended not in c.kernel_bans()
    assert c.agent.matching(rf"\bban {re.escape(ended)}\b") == []


def test_agents_outlive_a_redis_kill_ban_locally_meanwhile_and_share_again_once_redis_is_back(start_fleet):
    """With fleet_count on: the count that goes through Redis must not be what stops a local ban."""
    fleet = start_fleet(fleet_count=True)
    a, b, c = fleet.nodes
    during, after = "203.0.113.9", "203.0.113.10"

    fleet.redis.kill()
    a.fail(during, MAXRETRY)
    a.agent.wait_for(rf"jail sshd: ban {re.escape(during)} for 1h")
    wait_until(lambda: during in a.kernel_bans(), f"node-a's own ban of {during} in its kernel, Redis down")
    for node in fleet.nodes:
        node.assert_running()

    fleet.redis.restart()
    a.fail(after, MAXRETRY)
    a.agent.wait_for(rf"jail sshd: ban {re.escape(after)} for 1h")
    # The ban decided during the outage waited in node-a's buffer; it is published now too.
    wait_until(lambda: {during, after} <= set(b.kernel_bans()), "both bans on node-b once Redis is back")
    for node in fleet.nodes:
        node.assert_running()


def test_an_event_with_a_bad_signature_written_into_the_stream_bans_nowhere_and_is_counted(start_fleet):
    fleet = start_fleet()
    a, b, c = fleet.nodes
    forged, witness = "198.51.100.77", "203.0.113.11"

    now = time.time()
    event = json.dumps({"v": 1, "kind": "ban", "jail": "sshd", "address": forged, "start": now, "end": now + 3600,
                        "reason": "forged", "node": "node-x", "time": now}, separators=(",", ":"), sort_keys=True)
    # Signed as an agent signs, but with a key that is not the fleet's.
    signature = hmac.new(secrets.token_bytes(32), event.encode(), hashlib.sha256).hexdigest()
    with fleet.redis.client() as client:
        client.xadd(STREAM, {"event": event, "signature": signature})
    # A real ban after it in the stream: a node that applied the witness has read past the forgery.
    banned = a.agent.cli("ban", "sshd", witness)
    assert banned.returncode == 0, banned.stderr
    wait_until(lambda: fleet.banned_everywhere(witness), f"the ban of {witness} (after the forged entry) everywhere")

    assert fleet.banned_nowhere(forged)
    for node in fleet.nodes:
        wait_for_status(node, lambda status: signature_rejections(status) >= 1,
                        'a counter named "...signature..." counting the forged entry')
        assert node.agent.matching(rf"\bban {re.escape(forged)}\b") == []


def test_addresses_of_one_prefix_banned_on_different_nodes_ban_the_prefix_on_every_node(start_fleet):
    fleet = start_fleet(jail_extra='aggregate = { bans = 3, window = "1h" }')
    a, b, c = fleet.nodes
    for node, address in ((a, "198.51.100.1"), (b, "198.51.100.2"), (c, "198.51.100.3")):
        result = node.agent.cli("ban", "sshd", address)
        assert result.returncode == 0, result.stderr
    prefix = "198.51.100.0/24"
    wait_until(lambda: fleet.banned_everywhere(prefix), f"{prefix} banned on every node")
    for node in fleet.nodes:
        assert 3590 <= node.kernel_bans()[prefix] <= 3600, f"{node.name}: {node.kernel_bans()}"


def test_a_unique_address_flood_stays_within_redis_maxmemory_and_never_costs_the_ban_stream(start_fleet):
    fleet = start_fleet(fleet_count=True)
    a, b, _ = fleet.nodes
    client = fleet.redis.client()
    a.agent.cli("ban", "sshd", "198.51.100.40")
    wait_until(lambda: fleet.banned_everywhere("198.51.100.40"), "the first ban everywhere")
    stream_before = client.xlen(STREAM)
    limit = client.info("memory")["used_memory"] + 2 * 1024 * 1024
    client.config_set("maxmemory", limit)
    client.config_set("maxmemory-policy", "volatile-ttl")  # what the README tells administrators
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for n in range(30_000):
        address = ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8::")) + (n << 64) + 1)  # one /64 each
        message = f"<38>1 - flood sshd 4 - - Failed password for root from {address} port 4242 ssh2".encode()
        while True:
            try:
                sender.sendto(message, str(a.agent.workdir / "syslog.sock"))
                break
            except OSError:  # the agent's socket buffer is full: it is busy with the flood
                time.sleep(0.001)
    try:
        wait_until(lambda: (lambda s: s["counted"] + s["count_dropped"] >= 30_000)(a.status()["fleet"]),
                   "node-a to have counted or dropped every failure", timeout=60)
    except AssertionError:
        print(json.dumps(a.status(), indent=1)[:4000], "\n".join(a.agent.lines[-20:]))
        raise
    memory = client.info("memory")
    counts = a.status()["fleet"]
    print(f"30,000 unique addresses: {counts['counted']} counted, {counts['count_dropped']} dropped by node-a; Redis "
          f"{memory['used_memory']} bytes of maxmemory {limit}, {client.info('stats')['evicted_keys']} counts evicted")
    assert memory["used_memory"] <= limit * 1.05, memory
    assert client.info("stats")["evicted_keys"] > 0  # counts went, as the policy says
    assert client.xlen(STREAM) == stream_before  # the stream of bans has no expiry: never evicted
    a.agent.cli("ban", "sshd", "198.51.100.41")
    wait_until(lambda: fleet.banned_everywhere("198.51.100.41", [b]), "a ban shared after the flood")
    for node in fleet.nodes:
        node.assert_running()


def test_agents_on_the_distributions_python_libraries_share_bans_and_counts(start_fleet):
    """The packaged agent runs on Debian 12's python3-redis 4.3.4, python3-pyroute2 0.7.2 and
    python3-iptables 1.0.1, not the venv's PyPI releases."""
    probe = subprocess.run([DISTRIBUTION_PYTHON, "-c", "import redis, pyroute2, iptc; print(redis.__version__, "
                            "redis.__file__)"], capture_output=True, text=True)
    if probe.returncode != 0 or "/usr/lib/python3/dist-packages/" not in probe.stdout:
        pytest.skip(f"{DISTRIBUTION_PYTHON} lacks the distribution's python3-redis, python3-pyroute2 or "
                    f"python3-iptables ({probe.stderr.strip()[-200:]}); packaging/deps.sh installs them")
    print(f"{DISTRIBUTION_PYTHON}: redis {probe.stdout.split()[0]}")
    fleet = start_fleet(fleet_count=True, interpreter=DISTRIBUTION_PYTHON)
    a, b, c = fleet.nodes
    a.fail("203.0.113.30", MAXRETRY)
    wait_until(lambda: fleet.banned_everywhere("203.0.113.30"), "a ban on node-a in every kernel")
    for node, times in ((a, 2), (b, 2), (c, 1)):
        node.fail("203.0.113.31", times)
    wait_until(lambda: fleet.banned_everywhere("203.0.113.31"), "2 + 2 + 1 failures banned in every kernel")


def test_a_nodes_ignore_list_wins_over_a_fleet_ban_and_an_event_delivered_twice_changes_nothing(start_fleet):
    fleet = start_fleet(jail_extra={"node-b": 'ignore = ["203.0.113.50"]'})
    a, b, c = fleet.nodes
    assert a.agent.cli("ban", "sshd", "203.0.113.50").returncode == 0
    wait_until(lambda: fleet.banned_everywhere("203.0.113.50", [a, c]), "the ban on node-a and node-c")
    wait_for_status(b, lambda status: status["fleet"]["protected"] >= 1, "node-b to refuse the ban")
    assert "203.0.113.50" not in b.kernel_bans()
    b.agent.wait_for(r"not applying node node-a's ban of 203\.0\.113\.50: it is on jail sshd's ignore list")
    client = fleet.redis.client()
    (_, fields), = client.xrevrange(STREAM, count=1)
    before = c.status()["fleet"]
    client.xadd(STREAM, fields)  # the same signed event again, as a redelivery would bring it
    wait_for_status(c, lambda status: status["fleet"]["duplicate"] == before["duplicate"] + 1,
                    "node-c to see the event twice")
    assert c.status()["fleet"]["applied"] == before["applied"]
    assert 3590 <= c.kernel_bans()["203.0.113.50"] <= 3600


def test_a_node_back_from_a_stop_does_not_keep_a_ban_lifted_while_it_was_away(start_fleet):
    fleet = start_fleet()
    a, b, c = fleet.nodes
    lifted, kept = "203.0.113.60", "203.0.113.61"
    c.agent.stop()
    for address in (lifted, kept):
        assert a.agent.cli("ban", "sshd", address).returncode == 0
    wait_until(lambda: fleet.banned_everywhere(lifted, [b]), "the ban on node-b")
    time.sleep(1.1)  # the unban is a second younger than the ban, as when node-c reads it late
    assert a.agent.cli("unban", "sshd", lifted).returncode == 0
    wait_until(lambda: lifted not in b.kernel_bans(), "the unban on node-b")
    c.agent.start()
    wait_until(lambda: kept in c.kernel_bans(), f"node-c applying the ban of {kept}")
    c.agent.wait_for(rf"unban {re.escape(lifted)} \(unbanned on node node-a\)")
    assert lifted not in c.kernel_bans()


def test_a_signed_ban_copied_back_into_the_stream_after_its_unban_bans_nowhere(start_fleet):
    fleet = start_fleet()
    a, b, c = fleet.nodes
    address = "203.0.113.62"
    assert a.agent.cli("ban", "sshd", address).returncode == 0
    wait_until(lambda: fleet.banned_everywhere(address), "the ban everywhere")
    client = fleet.redis.client()
    (_, ban_fields), = client.xrevrange(STREAM, count=1)
    assert a.agent.cli("unban", "sshd", address).returncode == 0
    wait_until(lambda: fleet.banned_nowhere(address), "the unban everywhere")
    client.xadd(STREAM, ban_fields)  # what someone with write access to Redis, but no key, can do
    for node in (b, c):
        wait_for_status(node, lambda status: status["fleet"]["replayed"] >= 1, "the copy refused as a replay")
    assert fleet.banned_nowhere(address)


def test_count_members_written_without_the_key_do_not_count_towards_a_ban(start_fleet):
    fleet = start_fleet(fleet_count=True)
    a, b, _ = fleet.nodes
    address = "203.0.113.63"
    client = fleet.redis.client()
    key = f"jailwarden:failures:{{sshd:{address}}}"
    now = client.time()[0]
    client.zadd(key, {f"node-x|{n}|{'0' * 32}": now for n in range(MAXRETRY - 1)})  # 4 forged failures
    a.fail(address)
    a.agent.wait_for(rf"jail sshd: failure from {re.escape(address)} ")
    wait_for_status(a, lambda status: status["fleet"]["counted"] >= 1, "node-a to count the failure in Redis")
    assert_never_banned(fleet, address, SHARE_LATENCY)
    a.fail(address, MAXRETRY - 2)
    b.fail(address)  # 5 real failures over two nodes
    wait_until(lambda: fleet.banned_everywhere(address), f"{address} banned after 5 real failures")


def test_a_stream_that_lost_its_entries_is_read_again_from_its_start(start_fleet):
    """Redis restarted without its data (or another Redis): the stored position is beyond every
    entry, and a node reading from it would never see a ban again."""
    fleet = start_fleet()
    a, b, c = fleet.nodes
    assert a.agent.cli("ban", "sshd", "203.0.113.64").returncode == 0
    wait_until(lambda: fleet.banned_everywhere("203.0.113.64"), "the first ban everywhere")
    c.agent.stop()
    client = fleet.redis.client()
    client.delete(STREAM)
    client.xadd(STREAM, {"note": "an entry older than node-c's position"}, id="1-0")
    c.agent.start()
    wait_for_status(c, lambda status: status["fleet"]["position_reset"] == 1, "node-c to read from the start")
    assert a.agent.cli("ban", "sshd", "203.0.113.65").returncode == 0
    wait_until(lambda: "203.0.113.65" in c.kernel_bans(), "a new ban on node-c")
