"""python-iptables plumbing for the iptables backend: loading the library, one committed
transaction per filter table under the xtables lock, reading a chain's source-address rules
straight from libiptc's entries, and building ban and jump rules.

python-iptables writes legacy xtables (what `iptables-legacy -S` shows).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from . import BackendError
from ._xtables import TABLE_LOCK, import_iptc
from .targets import Network

T = TypeVar("T")
NAME = "iptables"
VERDICTS = {"drop": "DROP", "reject": "REJECT"}
# Our rules carry one of these targets; a rule with another target in our chain is not a ban.
BAN_TARGETS = frozenset(VERDICTS.values())
LOCK_WAIT = 10.0  # seconds to wait for another iptables user to release the xtables lock
COMMIT_ATTEMPTS = 3  # the kernel refuses a commit when the table changed since our snapshot


def load_iptc():
    """The `iptc` module, or a BackendError saying what is missing."""
    try:
        iptc = import_iptc()
    except ImportError as error:
        raise BackendError(NAME, "load python-iptables", f"{error}; install python-iptables "
                           "(Debian: python3-iptables) or choose another backend") from None
    except Exception as error:  # noqa: BLE001 - iptc raises its own XTablesError/OSError for missing libraries
        raise BackendError(NAME, "load python-iptables", f"{error}; python-iptables needs libxtables and "
                           "libiptc from the iptables package (Debian: apt install iptables)") from None
    return iptc


def explain(error: BaseException, version: int) -> str:
    """libiptc's message plus what to do about it."""
    text = str(error)
    module = "ip_tables" if version == 4 else "ip6_tables"
    if "Permission denied" in text or "Operation not permitted" in text:
        return f"{text}: needs CAP_NET_ADMIN (run the agent as root)"
    if "insmod" in text or "does not exist" in text or "Address family not supported" in text:
        hint = f"the kernel has no legacy xtables for IPv{version} (load module {module} and "
        hint += "iptable_filter)" if version == 4 else "ip6table_filter, or set ipv6=False)"
        return f"{text}: {hint}, or use the nftables backend"
    return text


@contextmanager
def xtables_lock(action: str, path: str | None = None) -> Iterator[None]:
    """Hold the lock iptables(8) takes (flock on /run/xtables.lock), so an administrator's
    iptables command never interleaves with our read-modify-commit of a whole table."""
    path = path or os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # no /run to coordinate through: then no iptables command can take the lock either
        return
    if not _flock_within(fd, LOCK_WAIT):
        raise BackendError(NAME, action, f"another process has held the xtables lock {path} for over "
                           f"{LOCK_WAIT:g} s: find it with `fuser {path}`")
    try:
        yield
    finally:
        os.close(fd)


def _flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on `fd` within `timeout` seconds (False: `fd` is closed, later).

    A blocking flock, as `iptables -w` takes it, in a helper thread: the kernel wakes blocked
    waiters on release, whereas polling with LOCK_NB loses every time to a process that
    re-locks at once (a loop of iptables commands). Python cannot interrupt a blocking flock,
    so on timeout the helper is left to close `fd`, and so release the lock, once it gets it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    taken, guard, abandoned = threading.Event(), threading.Lock(), []

    def take() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned:
                os.close(fd)
            else:
                taken.set()

    threading.Thread(target=take, name="xtables-lock", daemon=True).start()
    if taken.wait(timeout):
        return True
    with guard:
        if taken.is_set():
            return True
        abandoned.append(True)
    return False


class Tables:
    """The IPv4 and IPv6 filter tables of one process (python-iptables caches them per process),
    and rule classes bound to them."""

    def __init__(self, iptc) -> None:
        self.iptc = iptc

        # python-iptables checks whether a rule's target is a chain in every table its Rule.tables
        # lists (filter, nat, mangle, raw, security), and opening a table creates it in the
        # kernel: a jump (with 1.0.1 even a DROP) would leave four empty legacy tables hooked
        # into the namespace. Our rules live in filter only.
        class FilterRule(iptc.Rule):
            tables = property(lambda rule: [iptc.Table(iptc.Table.FILTER)])

        class FilterRule6(iptc.Rule6):
            tables = property(lambda rule: [iptc.Table6(iptc.Table6.FILTER)])

        self.rule = {4: FilterRule, 6: FilterRule6}

    def table(self, version: int, action: str):
        cls = self.iptc.Table if version == 4 else self.iptc.Table6
        try:
            return cls(cls.FILTER)
        except self.iptc.IPTCError as error:
            raise BackendError(NAME, action, explain(error, version)) from None

    def read(self, version: int, action: str, reader: Callable[[object], T]) -> T:
        """`reader(table)` on a fresh snapshot of the table, changing nothing."""
        with TABLE_LOCK:
            table = self.table(version, action)
            autocommit = table.autocommit
            table.autocommit = False  # so refresh() drops the old handle instead of committing it
            try:
                table.refresh()
                return reader(table)
            except self.iptc.IPTCError as error:
                raise BackendError(NAME, action, explain(error, version)) from None
            finally:
                table.autocommit = autocommit

    def change(self, version: int, action: str, change: Callable[[object], T]) -> T:
        """`change(table)` on a fresh snapshot, committed once: one kernel write for any number
        of rules (with autocommit, python-iptables rewrites the whole table after every rule)."""
        with TABLE_LOCK, xtables_lock(action):
            table = self.table(version, action)
            autocommit = table.autocommit
            table.autocommit = False
            try:
                attempt = 1
                while True:
                    table.refresh()
                    try:
                        result = change(table)
                    except self.iptc.IPTCError as error:
                        raise BackendError(NAME, action, explain(error, version)) from None
                    try:
                        table.commit()
                        return result
                    except self.iptc.IPTCError as error:
                        # EAGAIN: a writer that ignores the lock changed the table since our snapshot.
                        if attempt == COMMIT_ATTEMPTS:
                            raise BackendError(NAME, action, f"commit refused {COMMIT_ATTEMPTS} times: "
                                               f"{explain(error, version)}") from None
                    attempt += 1
            finally:
                table.refresh()  # drop the committed (or failed) handle without committing it again
                table.autocommit = autocommit


def banned_sources(table, chain: str) -> dict[Network, list]:
    """{source network: its rules' libiptc entries} for the rules in `chain` that drop or reject
    a source and match nothing else (a rule an administrator added with a protocol, interface,
    destination or match is not a ban of ours). Reads the entries directly: a python-iptables
    Rule costs ~60 us to build, this ~2 us."""
    found: dict[Network, list] = {}
    entry = table.first_rule(chain)
    while entry:
        header = entry.ipv6 if hasattr(entry, "ipv6") else entry.ip  # ip6t_entry / ipt_entry
        mask = int.from_bytes(bytes(header.smsk), "big")
        width, bits = 8 * len(bytes(header.smsk)), bin(mask).count("1")
        plain = (entry.target_offset == ctypes.sizeof(entry) and not header.proto and not header.flags
                 and not header.invflags and not any(bytes(header.dmsk)) and not header.iniface
                 and not header.outiface)
        if (plain and bits and (table.get_target(entry) or b"").decode() in BAN_TARGETS
                and mask == ((1 << width) - 1) ^ ((1 << (width - bits)) - 1)):
            address = ipaddress.ip_address(bytes(header.src))
            # Not strict: a source written with host bits set (libiptc keeps them) is its network.
            found.setdefault(ipaddress.ip_network((address, bits), strict=False), []).append(entry)
        entry = table.next_rule(entry)
    return found


def jumps_to(iptc, rule_class, table, parent: str, chain: str) -> list:
    """The rules in `parent` that jump to `chain`, as python-iptables Rules (only those are built)."""
    owner = iptc.Chain(table, parent)
    rules = []
    entry = table.first_rule(parent)
    while entry:
        if (table.get_target(entry) or b"").decode() == chain:
            rules.append(rule_class(entry, owner))
        entry = table.next_rule(entry)
    return rules


def ban_rule(iptc, rule_class, network: Network, verdict: str):
    rule = rule_class()
    rule.src = network.with_prefixlen
    rule.target = iptc.Target(rule, verdict)
    return rule


def jump_rule(iptc, rule_class, chain: str, protocol: str | None, ports: tuple[int, ...]):
    rule = rule_class()
    if protocol:
        rule.protocol = protocol
    if ports:
        match = rule.create_match("multiport")
        match.dports = ",".join(map(str, ports))
    rule.target = iptc.Target(rule, chain)  # the chain must exist in the table's handle already
    return rule
