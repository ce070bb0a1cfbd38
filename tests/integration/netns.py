"""Network namespaces for firewall tests: every firewall change happens inside a namespace the
test created, never in the root namespace, and the namespace is deleted afterwards.

`NetworkNamespace.python(code)` runs Python code inside the namespace (a child process under
`ip netns exec`, since python-iptables and libnftables act on the namespace of the process
that calls them) with the namespace's `interpreter` (this test run's by default, or Debian's
/usr/bin/python3 with the distribution's pyroute2 and python-iptables) and returns what the
code printed as JSON on its last line; `run_python` returns the finished process instead. `run(*argv)`
runs a command there, such as `ipset list` or `nft -j list ruleset`, to read the kernel's own view.
`Link` joins two namespaces with a veth pair for tests that send real packets, and
`listening_pair` gives such a pair with TCP listeners in the first and `connect()` from the second.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NO_NET_ADMIN = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-all")  # a run_python wrapper


class NetworkNamespace:
    def __init__(self, prefix: str = "jwfw", interpreter: str = sys.executable) -> None:
        self.name = f"{prefix}-{secrets.token_hex(3)}"
        self.interpreter = interpreter
        self.created = False

    def __enter__(self) -> NetworkNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        self.run("ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.created:
            # Kill what still runs inside (listeners of packet tests), then the namespace.
            pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def run_python(self, code: str, *, wrapper: tuple[str, ...] = (),
                   timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `code` with the namespace's interpreter and the repository importable, under
        `wrapper` (e.g. setpriv dropping a capability); the finished process, whatever its status."""
        prelude = f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        return self.run(*wrapper, self.interpreter, "-c", prelude + code, check=False, timeout=timeout)

    def python(self, code: str, timeout: float = 60):
        """Run `code` as run_python does; returns the JSON value on the last line it printed (None
        if it printed nothing). Raises with its stderr on failure."""
        result = self.run_python(code, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"code in namespace {self.name} failed ({result.returncode}):\n{result.stderr}")
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)


class Link:
    """A veth pair between namespaces `a` and `b`, with 10.251.X.1/24 + fd00:251:X::1/64 on `a`
    and .2 / ::2 on `b` (X random)."""

    def __init__(self, a: NetworkNamespace, b: NetworkNamespace) -> None:
        subnet = 1 + secrets.randbelow(254)
        self.a, self.b = a, b
        self.a4, self.b4 = f"10.251.{subnet}.1", f"10.251.{subnet}.2"
        self.a6, self.b6 = f"fd00:251:{subnet:x}::1", f"fd00:251:{subnet:x}::2"
        tag = secrets.token_hex(3)
        subprocess.run(["ip", "link", "add", f"jwa{tag}", "netns", a.name, "type", "veth", "peer", "name",
                        f"jwb{tag}", "netns", b.name], check=True, capture_output=True)
        for ns, link, v4, v6 in ((a, f"jwa{tag}", self.a4, self.a6), (b, f"jwb{tag}", self.b4, self.b6)):
            ns.run("ip", "addr", "add", f"{v4}/24", "dev", link)
            ns.run("ip", "-6", "addr", "add", f"{v6}/64", "dev", link, "nodad")
            ns.run("ip", "link", "set", link, "up")

    def connect(self, address: str, port: int = 8022, timeout: float = 0.4) -> str:
        """A TCP connection from `b` to `address`: "connected", or the exception's name
        ("TimeoutError" for dropped packets, "ConnectionRefusedError" for a reject)."""
        return self.b.python(_CONNECT.format(address=address, port=port, timeout=timeout))


# A dual-stack TCP listener that accepts and closes every connection.
_SERVER = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", {port})); s.listen(64)
while True:
    s.accept()[0].close()
"""

_CONNECT = """
import json, socket
s = socket.socket(socket.AF_INET6 if ":" in {address!r} else socket.AF_INET)
s.settimeout({timeout})
try:
    s.connect(({address!r}, {port})); print(json.dumps("connected"))
except OSError as e:
    print(json.dumps(type(e).__name__))
"""


@contextmanager
def listening_pair(prefix: str, interpreter: str = sys.executable,
                   ports: tuple[int, ...] = (8022, 8023)) -> Iterator[Link]:
    """Namespaces `a` (firewall code runs there under `interpreter`) and `b` joined by a Link, with
    a listener on each port in `a`, each answering on IPv4 and IPv6 before this yields."""
    from .polling import wait_until

    with NetworkNamespace(f"{prefix}a", interpreter) as a, NetworkNamespace(f"{prefix}b") as b:
        link = Link(a, b)
        servers = [a.popen(sys.executable, "-c", _SERVER.format(port=port), stdout=subprocess.DEVNULL)
                   for port in ports]
        try:
            for port in ports:
                for address in (link.a4, link.a6):
                    wait_until(lambda address=address, port=port: link.connect(address, port) == "connected",
                               f"listener on [{address}]:{port}")
            yield link
        finally:
            for server in servers:
                server.kill()
                server.wait()
