"""Benchmarks the sqlite store (agent/store.py) at flood scale: commit and load times and the
size on disk of a 1,000,000-ban history.

Steps, each through Store's public methods on a fresh file in a temporary directory:

- ban 1,000,000 distinct addresses (90% IPv4, 10% IPv6) in commits of --batch bans, as the
  daemon does during a flood; then lift them all in commits of the same size (history);
- ban --active of them again (offence 2), so the store holds that many active bans on top of the
  1,000,000-row history, and commit one jail's failure windows for --windows addresses;
- close, reopen and load (what a restart costs; the page cache is warm);
- prune the older half of the history, then VACUUM; the size on disk after each.

Prints a table and writes it as JSON to tests/bench/data/last_store.json. A benchmark, not a
test: it exits 0 whatever the numbers.
Run: .venv/bin/python tests/bench/bench_store.py  (about a minute)
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.bans import Ban  # noqa: E402 - the repository goes on the path first
from agent.store import Changes, Store  # noqa: E402

REPORT = REPO / "tests" / "bench" / "data" / "last_store.json"
T0 = 1_700_000_000.0
BANTIME = 3600.0


def addresses(count: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """`count` distinct addresses, one in ten IPv6, spread like a botnet's rather than sequential."""
    v6 = count // 10
    v4 = [ipaddress.IPv4Address(0x0B000000 + (n * 2654435761) % (1 << 28)) for n in range(count - v6)]
    base = int(ipaddress.IPv6Address("2001:db8::"))
    return v4 + [ipaddress.IPv6Address(base + (n << 64) + n * 7919) for n in range(v6)]


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(directory: Path, history: int, active: int, batch: int, windows: int) -> dict:
    path = directory / "jailwarden.db"
    report: dict = {"history": history, "active": active, "batch": batch, "windows": windows}
    now = write(path, report, history, active, batch, windows)
    report["size_bytes"] = size_of(path)
    # Load as a restarting agent would: without the million addresses built by write() in memory.
    gc.collect()

    store = Store(path)
    loaded = None

    def load() -> None:
        nonlocal loaded
        loaded = store.load(now)

    report["load_s"] = round(timed(load), 3)
    report["loaded"] = {"bans": len(loaded.bans), "ended": len(loaded.ended), "history": len(loaded.history),
                        "window_addresses": sum(len(w) for w in loaded.windows.values())}
    del loaded

    pruned = 0

    def prune() -> None:
        nonlocal pruned
        pruned = store.prune(released_before=T0 + history / 2 + BANTIME)

    report["prune_s"] = round(timed(prune), 3)
    report["pruned"] = pruned
    report["size_after_prune_bytes"] = store.size()
    report["vacuum_s"] = round(timed(store.vacuum), 3)
    report["size_after_vacuum_bytes"] = store.size()
    store.close()
    return report


def write(path: Path, report: dict, history: int, active: int, batch: int, windows: int) -> float:
    """The flood and its aftermath, timed into `report`; returns the time to load at."""
    pool = addresses(history)
    assert len(set(pool)) == history
    store = Store(path)
    ban_seconds, lift_seconds = [], []
    for first in range(0, history, batch):
        chunk = pool[first:first + batch]
        # Start times one second apart, so "the older half" pruned later is half the rows.
        bans = {("sshd", a): Ban("sshd", a, T0 + first + i, T0 + first + i + BANTIME, 1, "5 sshd failures")
                for i, a in enumerate(chunk)}
        ban_seconds.append(timed(lambda bans=bans: store.commit(Changes(bans=bans))))
        lifted = {key: (1, ban.end) for key, ban in bans.items()}
        lift_seconds.append(timed(lambda lifted=lifted: store.commit(Changes(lifted=lifted))))
    report["commit_bans_s"] = summary(ban_seconds, batch)
    report["commit_lifted_s"] = summary(lift_seconds, batch)

    now = T0 + history + BANTIME
    rebans = {("sshd", a): Ban("sshd", a, now, now + BANTIME, 2, "5 sshd failures") for a in pool[:active]}
    report["commit_active_s"] = round(timed(lambda: store.commit(Changes(bans=rebans))), 3)
    window = {a: [now - 20.0, now - 10.0, now] for a in pool[-windows:]}
    report["commit_windows_s"] = round(timed(lambda: store.commit(Changes(windows={"sshd": window}))), 3)
    store.close()
    return now


def summary(seconds: list[float], batch: int) -> dict:
    total = sum(seconds)
    return {"total": round(total, 3), "per_batch_max": round(max(seconds), 3),
            "per_s": round(len(seconds) * batch / total)}


def size_of(path: Path) -> int:
    store = Store(path)
    try:
        return store.size()
    finally:
        store.close()


def mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def print_table(r: dict) -> None:
    rows = [
        (f"commit {r['history']:,} bans, {r['batch']:,} a commit",
         f"{r['commit_bans_s']['total']} s (max {r['commit_bans_s']['per_batch_max']} s a commit, "
         f"{r['commit_bans_s']['per_s']:,}/s)"),
        (f"commit {r['history']:,} lifted (history)",
         f"{r['commit_lifted_s']['total']} s (max {r['commit_lifted_s']['per_batch_max']} s a commit, "
         f"{r['commit_lifted_s']['per_s']:,}/s)"),
        (f"commit {r['active']:,} active bans at once", f"{r['commit_active_s']} s"),
        (f"commit windows of {r['windows']:,} addresses", f"{r['commit_windows_s']} s"),
        ("size on disk", mb(r["size_bytes"])),
        (f"load {r['loaded']['bans']:,} bans + {r['loaded']['history']:,} history", f"{r['load_s']} s"),
        (f"prune {r['pruned']:,} history rows", f"{r['prune_s']} s"),
        ("size after prune", mb(r["size_after_prune_bytes"])),
        ("vacuum", f"{r['vacuum_s']} s"),
        ("size after vacuum", mb(r["size_after_vacuum_bytes"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="distinct addresses banned and lifted")
    parser.add_argument("--active", type=int, default=100_000, help="active bans at the end")
    parser.add_argument("--batch", type=int, default=25_000, help="bans per commit")
    parser.add_argument("--windows", type=int, default=100_000, help="addresses in the failure windows")
    parser.add_argument("--dir", type=Path, help="where to put the database (default: a temporary directory)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=options.dir) as directory:
        report = run(Path(directory), options.history, options.active, options.batch, options.windows)
    print_table(report)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
