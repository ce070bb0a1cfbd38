"""Benchmarks the journal path: how long a failure written to the journal takes to be counted in
a jail (and the maxretry-th to become a ban), what the agent costs when idle, and the same for
Fail2Ban 1.0.2 in the same run.

Every measurement gets its own private journald (a journal namespace,
tests/integration/journald.py) and its own fresh process:

- jailwarden: the real agent, `jailwarden run --dry-run` (tests/bench/journal_bench_agent.py,
  which only prefixes each log line with the time it was logged), with one jail `bench` whose
  filter knows the sender by `_EXE` and `_UID=0`, maxretry 5;
- Fail2Ban: `fail2ban-server -f` with a private config (tests/bench/journal_bench_fail2ban.py),
  `backend = systemd[namespace=NAME]`, `journalmatch = _EXE=... _UID=0`, the same regex and
  maxretry; its times come from its log (`Found`, `Ban`) and from a ban action that stamps
  `date +%s.%N`.

A sender process (this script with --send) writes the failures to the namespace's native
socket and takes `time.time()` just before each `sendto`; latency is the time the target
logged the outcome minus that send time, both from the same clock. Patterns:

- burst: 5 failures back to back per address (maxretry), 50 addresses, 100-300 ms between bursts;
- spaced: one failure every 100-700 ms (random), 5 per address, --spaced failures in all.

For each: entry -> counted (every failure; for jailwarden the maxretry-th is counted by its ban
line) and maxretry-th entry -> ban decision; median, p90, p99, max in ms.

The burst and spaced runs use the default poll_interval (agent/config.py); the target is
judged on them.

Idle CPU: one agent per poll_interval (--polls; 5 s stands for "polling off, descriptor
wake-ups only"), one fail2ban-server and two bare loops waking every default poll_interval,
each on its own idle namespace, all at once for --idle seconds; CPU time from
/proc/PID/task/*/schedstat (nanoseconds, all threads) over wall time, as % of one core (a "!"
marks 1% or more). Then each of those agents gets a short spaced run (--poll-spaced failures)
for the latency each setting buys. Peak memory is VmHWM (the process's ru_maxrss) before it
stops.

Other work on the machine shows as "machine busy" (all cores, from /proc/stat) beside each
run: on 2 cores it lengthens latency tails and idle CPU alike.

Prints a table and writes the figures as JSON (with every latency sample) to
tests/bench/data/last_journal.json. A benchmark, not a test: it exits 0 whatever the figures,
1 when a run fails.
Run: .venv/bin/python tests/bench/bench_journal.py  (about 4 min; --quick about 1.5 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import journal_bench_fail2ban as f2b  # noqa: E402 - the repository goes on the path first
from bench_sshd import ensure_fail2ban  # noqa: E402
from journal_bench_agent import AgentRun  # noqa: E402

from agent.config import JournalConfig  # noqa: E402
from tests.integration.journald import JournalNamespace, encode_entry  # noqa: E402

REPORT = REPO / "tests" / "bench" / "data" / "last_journal.json"
MAXRETRY = 5
DEFAULT_POLL = JournalConfig().poll_interval
MESSAGE = "login failed for bench from {address}"
EXE = os.path.realpath(sys.executable)  # journald's _EXE for what this interpreter sends
FILTER = f"""
description = "the benchmark's sender, known by its executable"
syslog = ["jwbench"]
failregex = ['login failed for \\S+ from <HOST>$']
[journal]
_EXE = ["{EXE}"]
_UID = ["0"]
"""
F2B_REGEX = r"login failed for \S+ from <HOST>$"
TARGET = {"median_ms": 15.0, "p99_ms": 50.0, "idle_cpu_percent": 1.0}
WARMUP_ADDRESS = "192.0.2.1"


# ---- what gets sent ---------------------------------------------------------------------------

def address(n: int) -> str:
    """The n-th benchmark address (documentation ranges, never a real host)."""
    return (f"198.51.100.{n + 1}" if n < 254 else f"203.0.113.{n - 253}" if n < 508
            else f"2001:db8::{n:x}")


def burst_plan(rng: random.Random, bursts: int) -> list[tuple[float, str]]:
    """(delay before sending, address): MAXRETRY back to back per address, 100-300 ms apart."""
    plan = []
    for n in range(bursts):
        for k in range(MAXRETRY):
            plan.append((rng.uniform(0.1, 0.3) if k == 0 and n else 0.0, address(n)))
    return plan


def spaced_plan(rng: random.Random, failures: int) -> list[tuple[float, str]]:
    """One failure every 100-700 ms, MAXRETRY per address in turn."""
    addresses = -(-failures // MAXRETRY)
    return [(rng.uniform(0.1, 0.7) if n else 0.0, address(n // MAXRETRY)) for n in range(addresses * MAXRETRY)]


def send_main(socket_path: str) -> int:
    """The sender process: a plan (JSON) on stdin, the send times (JSON) on stdout; then it
    stays alive until stdin closes, so journald can still read its /proc entry (_EXE)."""
    plan = json.loads(sys.stdin.readline())
    datagrams = [encode_entry(MESSAGE.format(address=a), {"SYSLOG_IDENTIFIER": "jwbench"}) for _, a in plan]
    times = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for (delay, _), datagram in zip(plan, datagrams, strict=True):
            if delay:
                time.sleep(delay)
            times.append(time.time())
            sock.sendto(datagram, socket_path)
    sys.stdout.write(json.dumps(times) + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    return 0


def idle_loop_main(kind: str, interval: float) -> int:
    """A baseline for the idle figures: what waking every `interval` costs with nothing to do,
    on an asyncio loop (a call_later timer, as the journal source's poll) or in a plain sleep."""
    if kind == "asyncio":
        import asyncio

        async def tick_forever() -> None:
            loop = asyncio.get_running_loop()

            def tick() -> None:
                loop.call_later(interval, tick)

            tick()
            await asyncio.Event().wait()

        asyncio.run(tick_forever())
    while True:
        time.sleep(interval)


def start_baseline(kind: str, interval: float, stack: contextlib.ExitStack) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, __file__, "--idle-loop", kind, str(interval)])
    stack.callback(stop_baseline, process)
    return process


def stop_baseline(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@contextlib.contextmanager
def sender(namespace: JournalNamespace):
    process = subprocess.Popen([sys.executable, __file__, "--send", namespace.socket_path],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---- measuring --------------------------------------------------------------------------------

def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ordered = sorted(s * 1000 for s in seconds)
    return {"n": len(ordered), "median_ms": round(percentile(ordered, 0.5), 2),
            "p90_ms": round(percentile(ordered, 0.9), 2), "p99_ms": round(percentile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1], 2), "min_ms": round(ordered[0], 2)}


def wait_for(events, kind: str, addr: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(k == kind and a == addr for k, a, _ in events()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {kind} event for {addr} within {timeout} s")
        time.sleep(0.01)


def run_pattern(namespace: JournalNamespace, events, plan: list[tuple[float, str]], settle: float) -> dict:
    """Send `plan`, wait until every address is banned (or `settle` s after the last send),
    and pair each send with the outcome the target logged for it."""
    # Warm up: the target has read something from this namespace before the clock starts.
    namespace.send(MESSAGE.format(address=WARMUP_ADDRESS), SYSLOG_IDENTIFIER="jwbench")
    wait_for(events, "counted", WARMUP_ADDRESS, 10.0)
    addresses = list(dict.fromkeys(a for _, a in plan))
    with sender(namespace) as process:
        process.stdin.write(json.dumps(plan) + "\n")
        process.stdin.flush()
        times = json.loads(process.stdout.readline())
        deadline = time.monotonic() + settle
        while True:
            banned = {a for k, a, _ in events() if k == "banned"}
            if all(a in banned for a in addresses) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    return pair(plan, times, events())


def pair(plan, times, events) -> dict:
    sent: dict[str, list[float]] = {}
    for (_, addr), when in zip(plan, times, strict=True):
        sent.setdefault(addr, []).append(when)
    counted: dict[str, list[float]] = {}
    banned: dict[str, float] = {}
    for kind, addr, when in events:
        if kind == "counted":
            counted.setdefault(addr, []).append(when)
        elif addr not in banned:
            banned[addr] = when
    to_counted, to_ban, missing = [], [], 0
    for addr, sends in sent.items():
        seen = sorted(counted.get(addr, []))
        if len(seen) == len(sends) - 1 and addr in banned:  # jailwarden: the ban line counts the last
            seen.append(banned[addr])
        missing += max(0, len(sends) - len(seen))
        to_counted += [seen_at - sent_at for sent_at, seen_at in zip(sends, seen, strict=False)]
        if addr in banned:
            to_ban.append(banned[addr] - sends[MAXRETRY - 1])
    return {"entry_to_counted": summary(to_counted), "maxretry_to_ban": summary(to_ban),
            "failures_sent": len(plan), "failures_not_seen": missing,
            "addresses_not_banned": sum(1 for a in sent if a not in banned),
            "raw_ms": {"entry_to_counted": [round(s * 1000, 3) for s in to_counted],
                       "maxretry_to_ban": [round(s * 1000, 3) for s in to_ban]}}


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, from the scheduler's nanosecond counters."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_busy() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy the whole machine was meanwhile, % of all cores (other work skews latency)."""
    return round(100 * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


# ---- the runs ---------------------------------------------------------------------------------

def jailwarden_pattern(plan) -> dict:
    before = machine_busy()
    with JournalNamespace() as namespace, AgentRun(namespace.name, FILTER, maxretry=MAXRETRY,
                                                   poll_interval=DEFAULT_POLL) as agent:
        result = run_pattern(namespace, agent.events, plan, settle=5.0)
        result["peak_rss_mib"] = peak_rss_mib(agent.pid)
    result["machine_busy_percent"] = busy_percent(before, machine_busy())
    return result


def fail2ban_pattern(plan) -> dict:
    before = machine_busy()
    with JournalNamespace() as namespace, f2b.Fail2BanServer(namespace.name, EXE, F2B_REGEX, MAXRETRY) as server:
        result = run_pattern(namespace, server.events, plan, settle=15.0)
        result["peak_rss_mib"] = peak_rss_mib(server.pid)
        logged = {a: t for k, a, t in server.events() if k == "banned"}
        actions = server.action_times()
    # The action's own stamp: what running its shell adds to the logged decision.
    result["ban_logged_to_action_ran"] = summary([actions[a] - logged[a] for a in logged if a in actions])
    result["machine_busy_percent"] = busy_percent(before, machine_busy())
    return result


def idle_and_poll_costs(polls: list[float], idle_seconds: float, poll_failures: int, rng: random.Random) -> dict:
    """Idle CPU of one agent per poll_interval and of a fail2ban-server, all at once, each on
    its own idle namespace; then a short spaced run on each agent, one at a time."""
    with contextlib.ExitStack() as stack:
        agents = {}
        for poll in polls:
            namespace = stack.enter_context(JournalNamespace())
            agents[f"jailwarden {poll:g}"] = (namespace, stack.enter_context(
                AgentRun(namespace.name, FILTER, maxretry=MAXRETRY, poll_interval=poll)))
        f2b_namespace = stack.enter_context(JournalNamespace())
        server = stack.enter_context(f2b.Fail2BanServer(f2b_namespace.name, EXE, F2B_REGEX, MAXRETRY))
        baselines = {f"baseline {kind}": start_baseline(kind, DEFAULT_POLL, stack) for kind in ("asyncio", "sleep")}
        time.sleep(2.0)  # past start-up work (imports, history read-back, first checkpoint)
        pids = {name: agent.pid for name, (_, agent) in agents.items()} | {"fail2ban": server.pid} \
            | {name: process.pid for name, process in baselines.items()}
        busy0 = machine_busy()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        wall0 = time.monotonic()
        time.sleep(idle_seconds)
        wall = time.monotonic() - wall0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        busy = busy_percent(busy0, machine_busy())
        idle = {name: {"cpu_percent": round(100 * used / wall, 3), "cpu_seconds": round(used, 4),
                       "wall_seconds": round(wall, 2), "peak_rss_mib": peak_rss_mib(pids[name])}
                for name, used in cpu.items()}
        server.stop()
        for process in baselines.values():
            stop_baseline(process)
        costs = {}
        for name, (namespace, agent) in agents.items():
            costs[name] = run_pattern(namespace, agent.events, spaced_plan(rng, poll_failures), settle=10.0)
            costs[name].pop("raw_ms")
            agent.stop()
    return {"idle": idle, "idle_machine_busy_percent": busy, "spaced_by_setting": costs}


# ---- the report -------------------------------------------------------------------------------

def _row(label: str, stats: dict, target: bool = False) -> str:
    if not stats.get("n"):
        return f"  {label:<42} {'no samples':>8}"
    line = (f"  {label:<42} {stats['n']:>5} {stats['median_ms']:>8.1f} {stats['p90_ms']:>8.1f} "
            f"{stats['p99_ms']:>8.1f} {stats['max_ms']:>8.1f}")
    if target:
        ok = stats["median_ms"] <= TARGET["median_ms"] and stats["p99_ms"] <= TARGET["p99_ms"]
        line += "  meets target" if ok else "  MISSES target"
    return line


def _poll_name(poll: float) -> str:
    return "off (fd only)" if poll >= 1 else f"{poll * 1000:g} ms"


def print_table(report: dict) -> None:
    head = f"  {'':<42} {'n':>5} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)"
    print(f"\njournal -> jail latency; sender's time.time() before sendto -> the target's log record time"
          f"\ntarget: median <= {TARGET['median_ms']:g} ms, p99 <= {TARGET['p99_ms']:g} ms")
    jw = report.get("jailwarden", {})
    if jw:
        print(f"\njailwarden (agent process, dry run, default poll_interval {jw['poll_interval'] * 1000:g} ms)")
        print(head)
        for pattern in ("burst", "spaced"):
            if pattern in jw:
                r = jw[pattern]
                print(_row(f"{pattern}: every entry -> counted", r["entry_to_counted"], True))
                print(_row(f"{pattern}: 5th entry -> ban decision", r["maxretry_to_ban"], True))
                print(f"  {'':<42} not seen {r['failures_not_seen']}, not banned {r['addresses_not_banned']}, "
                      f"machine busy {r['machine_busy_percent']}%")
    fb = report.get("fail2ban", {})
    if fb:
        print(f"\n{fb['version']} (fail2ban-server -f, backend systemd[namespace=...])")
        print(head)
        for pattern in ("burst", "spaced"):
            if pattern in fb:
                r = fb[pattern]
                print(_row(f"{pattern}: every entry -> 'Found'", r["entry_to_counted"]))
                print(_row(f"{pattern}: 5th entry -> 'Ban' logged", r["maxretry_to_ban"]))
                print(_row(f"{pattern}: 'Ban' logged -> action shell ran", r["ban_logged_to_action_ran"]))
                print(f"  {'':<42} not seen {r['failures_not_seen']}, not banned {r['addresses_not_banned']}, "
                      f"machine busy {r['machine_busy_percent']}%")
    if report.get("ratios"):
        print("\njailwarden / Fail2Ban (lower is better)")
        for name, ratio in report["ratios"].items():
            print(f"  {name:<42} median x{ratio['median']:.3f}  p99 x{ratio['p99']:.3f}")
    idle = report.get("idle")
    if idle:
        print(f"\nidle CPU over {idle['seconds']:g} s (% of one core, all threads; all at once, machine busy "
              f"{idle['idle_machine_busy_percent']}%), and the latency each setting gives "
              f"(spaced, every entry -> counted)")
        print(f"  {'':<32} {'idle CPU %':>10} {'n':>5} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)")
        for name, figures in idle["idle"].items():
            if name == "fail2ban":
                label = "fail2ban-server"
            elif name == "baseline asyncio":
                label = f"bare asyncio loop, {DEFAULT_POLL * 1000:g} ms timer"
            elif name == "baseline sleep":
                label = f"bare time.sleep({DEFAULT_POLL:g}) loop"
            else:
                poll = float(name.split()[1])
                label = f"jailwarden, poll {_poll_name(poll)}" + (" (default)" if poll == DEFAULT_POLL else "")
            over = "" if figures["cpu_percent"] < TARGET["idle_cpu_percent"] else "!"
            line = f"  {label:<32} {figures['cpu_percent']:>9.3f}{over:1}"
            cost = idle["spaced_by_setting"].get(name, {}).get("entry_to_counted")
            if cost and cost.get("n"):
                line += (f" {cost['n']:>5} {cost['median_ms']:>8.1f} {cost['p90_ms']:>8.1f} "
                         f"{cost['p99_ms']:>8.1f} {cost['max_ms']:>8.1f}")
            print(line)
    verdict = report.get("verdict")
    if verdict:
        print(f"\ntarget with the default poll_interval ({DEFAULT_POLL * 1000:g} ms): latency "
              f"{'met' if verdict['latency_met'] else 'MISSED'} (both patterns, counted and ban), idle CPU "
              + (f"{verdict['idle_cpu_percent']:.3f}% ({'met' if verdict['idle_met'] else 'MISSED'}, "
                 f"< {TARGET['idle_cpu_percent']:g}%)" if verdict.get("idle_cpu_percent") is not None
                 else "not measured"))
    memory = report.get("peak_rss_mib")
    if memory:
        print("\npeak memory (VmHWM = ru_maxrss of the process, MiB): "
              + ", ".join(f"{k} {v}" for k, v in memory.items()))
    print(f"\nwritten to {REPORT.relative_to(REPO)}")


def ratios(jw: dict, fb: dict) -> dict:
    out = {}
    for pattern in ("burst", "spaced"):
        for key, name in (("maxretry_to_ban", "5th entry -> ban"), ("entry_to_counted", "every entry -> counted")):
            a = jw.get(pattern, {}).get(key, {})
            b = fb.get(pattern, {}).get(key, {})
            if a.get("n") and b.get("n"):
                out[f"{pattern}: {name}"] = {"median": round(a["median_ms"] / b["median_ms"], 4),
                                             "p99": round(a["p99_ms"] / b["p99_ms"], 4)}
    return out


def verdict_of(report: dict) -> dict:
    jw = report.get("jailwarden", {})
    figures = [jw[p][k] for p in ("burst", "spaced") if p in jw for k in ("entry_to_counted", "maxretry_to_ban")]
    latency = len(figures) == 4 and all(
        f.get("n") and f["median_ms"] <= TARGET["median_ms"] and f["p99_ms"] <= TARGET["p99_ms"] for f in figures)
    idle = report.get("idle", {}).get("idle", {}).get(f"jailwarden {DEFAULT_POLL:g}", {}).get("cpu_percent")
    return {"latency_met": bool(latency), "idle_cpu_percent": idle,
            "idle_met": idle is not None and idle < TARGET["idle_cpu_percent"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--send", metavar="SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("--idle-loop", nargs=2, metavar=("KIND", "INTERVAL"), help=argparse.SUPPRESS)
    parser.add_argument("--bursts", type=int, default=50, help="addresses in the burst pattern (default 50)")
    parser.add_argument("--spaced", type=int, default=200, help="failures in the spaced pattern (default 200)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement (default 20)")
    parser.add_argument("--polls", default=f"0.01,{DEFAULT_POLL:g},5",
                        help="poll_interval values (s) for the idle and cost runs; 5 = descriptor wake-ups "
                             "only (default %(default)s: 10 ms, the default, fd only)")
    parser.add_argument("--poll-spaced", type=int, default=25,
                        help="failures in the spaced run per setting (default 25)")
    parser.add_argument("--no-fail2ban", action="store_true", help="skip Fail2Ban")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle and per-poll runs")
    parser.add_argument("--no-latency", action="store_true", help="skip the burst and spaced runs (idle runs only)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples: 20 bursts, 60 spaced, 10 s idle, 20 per setting")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.send:
        return send_main(args.send)
    if args.idle_loop:
        return idle_loop_main(args.idle_loop[0], float(args.idle_loop[1]))
    if args.quick:
        args.bursts, args.spaced, args.idle, args.poll_spaced = 20, 60, 10.0, 20
    if os.geteuid() != 0:
        print("bench_journal: needs root (it starts journald instances)", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so every journald, agent and fail2ban-server started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rng = random.Random(args.seed)
    polls = [float(p) for p in args.polls.split(",") if p]
    report: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
                    "cpus": os.cpu_count(), "python": platform.python_version(), "sender_exe": EXE,
                    "maxretry": MAXRETRY, "target": TARGET,
                    "method": "sender process: time.time() just before sendto on the namespace's native socket; "
                              "target: the time its log record was created (jailwarden: record.created, the "
                              "agent's own clock, right after the pipeline returned the outcome; Fail2Ban: its "
                              "log's asctime, ms resolution, +0.5 ms)",
                    "args": {k: v for k, v in vars(args).items() if k != "send"}}
    started = time.monotonic()
    if not args.no_fail2ban:
        ensure_fail2ban()  # Debian's package and python3-systemd, installed if absent (its service never started)
    try:
        jw = report["jailwarden"] = {"poll_interval": DEFAULT_POLL}
        if args.no_latency:
            args.no_fail2ban = True
        else:
            jw["burst"] = jailwarden_pattern(burst_plan(rng, args.bursts))
            jw["spaced"] = jailwarden_pattern(spaced_plan(rng, args.spaced))
        if not args.no_fail2ban:
            fb = report["fail2ban"] = {"version": f"Fail2Ban {f2b.version() or '(version unknown)'}"}
            fb["burst"] = fail2ban_pattern(burst_plan(rng, args.bursts))
            fb["spaced"] = fail2ban_pattern(spaced_plan(rng, args.spaced))
            report["ratios"] = ratios(jw, fb)
        if not args.no_idle:
            report["idle"] = {"seconds": args.idle, **idle_and_poll_costs(polls, args.idle, args.poll_spaced, rng)}
    except Exception as error:  # report what was measured, then fail
        report["error"] = f"{type(error).__name__}: {error}"
        print(f"bench_journal: {report['error']}", file=sys.stderr)
    report["seconds"] = round(time.monotonic() - started, 1)
    memory = {}
    for pattern in ("burst", "spaced"):
        for side in ("jailwarden", "fail2ban"):
            value = report.get(side, {}).get(pattern, {}).get("peak_rss_mib")
            if value is not None:
                memory[f"{side} {pattern}"] = value
    report["peak_rss_mib"] = memory
    report["verdict"] = verdict_of(report)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
