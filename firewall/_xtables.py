"""Hook rules in the (legacy) xtables filter table through python-iptables: one rule per family
that matches the sources in an ip set and drops or rejects them, found again by the set it uses.

python-iptables writes legacy xtables (`iptables-legacy -S` shows the rules). Changes happen in
one libiptc transaction per call, under the xtables lock `iptables-legacy` takes too.
"""

from __future__ import annotations

import fcntl
import os
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOCK_TIMEOUT = 10.0  # seconds to wait for another iptables user to release the xtables lock


class XtablesError(Exception):
    """The hook rule could not be read or written; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class HookRule:
    """`[-p PROTOCOL -m multiport --dports PORTS] -m set --match-set SET src -j TARGET`."""

    set_name: str
    target: str  # "DROP" or "REJECT"
    protocol: str | None = None  # "tcp" or "udp" when ports are given
    ports: tuple[int, ...] = ()


# python-iptables keeps one Table object per family for the whole process, shared by every
# backend instance and thread; a refresh() in one thread frees the libiptc handle another is
# using. The xtables flock does not cover that (no lock file, reads), so this lock does.
TABLE_LOCK = threading.RLock()


def import_iptc():
    """The `iptc` module. Its import asks `ldconfig -v` (a process) where the xtables extensions
    are unless XTABLES_LIBDIR says so, so say so where the usual directory exists. It also
    imports `distutils.sysconfig`, which setuptools' shim (where setuptools is installed) turns
    into an import of setuptools and pkg_resources: 15 MB of memory for one function. Python
    3.11's own distutils serves it instead (3.12 has none, and python-iptables then does without)."""
    if "XTABLES_LIBDIR" not in os.environ:
        multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
        for directory in (f"/usr/lib/{multiarch}/xtables", "/usr/lib64/xtables", "/usr/lib/xtables"):
            if os.path.isdir(directory):
                os.environ["XTABLES_LIBDIR"] = directory
                break
    if "distutils" not in sys.modules:
        try:
            import _distutils_hack

            _distutils_hack.remove_shim()
        except (ImportError, AttributeError):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "distutils is deprecated"
        import iptc

    return iptc


def _iptc():
    try:
        iptc = import_iptc()
    except Exception as error:  # OSError or iptc.XTablesError when libxtables / libiptc are missing
        raise XtablesError(f"python-iptables is not usable ({error}): install python-iptables and iptables "
                           "(it loads libxtables and libiptc)") from error
    return iptc


@contextmanager
def _xtables_lock() -> Iterator[None]:
    # iptables-legacy serialises table replacements with flock on this file (shared by all
    # network namespaces); without it a concurrent `iptables` could undo our commit or we its.
    path = os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # no /run to coordinate through: nothing else can take the lock either
        return
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise XtablesError(f"another program has held the xtables lock {path} for over "
                                       f"{LOCK_TIMEOUT:g} s: find it with `fuser {path}`") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(descriptor)


def _explain(error: Exception, version: int) -> str:
    text = str(error)
    tool = "iptables" if version == 4 else "ip6tables"
    if "Permission denied" in text or "Operation not permitted" in text:
        return f"{text}: needs CAP_NET_ADMIN in this network namespace (run as root)"
    if "No chain/target/match by that name" in text:
        return (f"{text}: the kernel lacks a module the rule needs: xt_set (set match), xt_multiport (ports) "
                f"or {'ipt' if version == 4 else 'ip6t'}_REJECT (action reject); load it with modprobe")
    if "can't initialize" in text:
        return (f"{text}: the legacy {tool} filter table is not available: load kernel modules "
                f"{'ip_tables and iptable_filter' if version == 4 else 'ip6_tables and ip6table_filter'}")
    return text


@contextmanager
def _filter_table(version: int):
    """The filter table of `version` (4 or 6), refreshed; committed if the block succeeds."""
    iptc = _iptc()
    with TABLE_LOCK, _xtables_lock():
        try:
            table = iptc.Table(iptc.Table.FILTER) if version == 4 else iptc.Table6(iptc.Table6.FILTER)
            previous = table.autocommit
            table.autocommit = False  # python-iptables caches one Table per process: restore it after
            table.refresh()
        except iptc.IPTCError as error:
            raise XtablesError(_explain(error, version)) from error
        try:
            yield iptc, table
            table.commit()
        except iptc.IPTCError as error:
            raise XtablesError(_explain(error, version)) from error
        finally:
            try:
                table.refresh()  # drops what was not committed
            finally:
                table.autocommit = previous


def _uses_set(rule, set_name: str) -> bool:
    return any(match.name == "set" and match.get_all_parameters().get("match-set") == [set_name, "src"]
               for match in rule.matches)


def _is(rule, hook: HookRule) -> bool:
    """Whether an existing rule is exactly `hook` (so setup leaves it in place)."""
    matches = {match.name: match.get_all_parameters() for match in rule.matches}
    ports = matches.pop("multiport", {}).get("dports")
    wanted_ports = [",".join(map(str, hook.ports))] if hook.ports else None
    protocol = rule.protocol if rule.protocol not in ("ip", "", None) else None
    return (set(matches) == {"set"} and ports == wanted_ports and protocol == (hook.protocol if hook.ports else None)
            and rule.target.name == hook.target)


def _build(iptc, version: int, hook: HookRule):
    rule = iptc.Rule() if version == 4 else iptc.Rule6()
    if hook.ports:
        rule.protocol = hook.protocol
        ports = rule.create_match("multiport")
        ports.dports = ",".join(map(str, hook.ports))  # the cheap test first, the set lookup second
    match = rule.create_match("set")
    try:
        match.match_set = [hook.set_name, "src"]  # libxt_set looks the set up in the kernel here
    except (ValueError, iptc.XTablesError) as error:
        raise XtablesError(f"the set match does not find set {hook.set_name} ({error}): is the set there "
                           "(`ipset list -n`) and kernel module ip_set loaded?") from error
    rule.create_target(hook.target)
    return rule


def ensure(version: int, chain_name: str, hook: HookRule) -> bool:
    """Make `hook` the one rule in `chain_name` using its set: keep it if it is already there
    (wherever it is), otherwise replace the rules using the set by `hook` at the top of the
    chain. True if the chain was changed."""
    with _filter_table(version) as (iptc, table):
        if not table.is_chain(chain_name):
            raise XtablesError(f"chain {chain_name} does not exist in the legacy {'ip' if version == 4 else 'ip6'}"
                               "tables filter table: create it or choose another chain (option chain); chains "
                               "made with iptables-nft are not visible to python-iptables")
        chain = iptc.Chain(table, chain_name)
        ours = [rule for rule in chain.rules if _uses_set(rule, hook.set_name)]
        if len(ours) == 1 and _is(ours[0], hook):
            return False
        for rule in ours:
            chain.delete_rule(rule)
        chain.insert_rule(_build(iptc, version, hook))
        return True


def remove(version: int, chain_name: str, set_name: str) -> int:
    """Delete the rules in `chain_name` that use `set_name`; how many there were."""
    with _filter_table(version) as (iptc, table):
        if not table.is_chain(chain_name):
            return 0
        chain = iptc.Chain(table, chain_name)
        ours = [rule for rule in chain.rules if _uses_set(rule, set_name)]
        for rule in ours:
            chain.delete_rule(rule)
        return len(ours)


def chains_using(version: int, set_name: str) -> list[str]:
    """The filter-table chains with a rule that uses `set_name` (to name what blocks a destroy)."""
    with _filter_table(version) as (iptc, table):
        return [chain.name for chain in table.chains if any(_uses_set(rule, set_name) for rule in chain.rules)]
