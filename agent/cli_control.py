"""The `jailwarden` commands that ask the running agent over its control socket: status, bans,
ban, unban, reload; their readable and --json output and their exit statuses."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_SOCKET = Path("/run/jailwarden/control.sock")
# Exit statuses of the commands that ask the daemon (2, usage errors, is argparse's).
_REFUSED, _NO_DAEMON = 1, 3


def _socket_path(args: argparse.Namespace) -> Path:
    """--socket, else the configuration's [agent] socket, else the default (with a note)."""
    if args.socket is not None:
        return Path(args.socket)
    from agent.config import ConfigErrors, load_config

    try:
        return load_config(args.config).agent.socket
    except ConfigErrors as errors:
        problem = errors.errors[0]
    # The daemon may still run on a configuration edited since (the usual case before `reload`):
    # its [agent] socket is worth trying even when another part of the file is broken.
    socket = _raw_socket_setting(Path(args.config))
    if socket is not None:
        print(f"jailwarden: note: {args.config} has problems (`jailwarden check-config` lists them); "
              f"using its [agent] socket {socket}", file=sys.stderr)
        return socket
    print(f"jailwarden: note: cannot use the configuration ({problem}); using the default socket "
          f"{DEFAULT_SOCKET}", file=sys.stderr)
    return DEFAULT_SOCKET


def _raw_socket_setting(config: Path) -> Path | None:
    import tomllib

    try:
        with open(config, "rb") as stream:
            agent = tomllib.load(stream).get("agent")
    except (OSError, ValueError):
        return None
    socket = agent.get("socket") if isinstance(agent, dict) else None
    return Path(socket) if isinstance(socket, str) and socket.startswith("/") else None


def _ask(args: argparse.Namespace, command: str, **arguments: object) -> tuple[int, object]:
    """(exit status, result) of one request; a refusal or a missing daemon is reported on stderr."""
    from agent.control import ControlClient, ControlError, DaemonUnavailable

    path = _socket_path(args)
    try:
        with ControlClient(path) as client:
            return 0, client.request(command, **{k: v for k, v in arguments.items() if v is not None})
    except ControlError as error:
        print(f"jailwarden: {command}: {error}", file=sys.stderr)
        return _REFUSED, None
    except DaemonUnavailable as error:
        print(f"jailwarden: {error}", file=sys.stderr)
        return _NO_DAEMON, None


def _duration(seconds: float) -> str:
    """The two largest units: "59m 12s", "2h 0m", "3d 4h"."""
    whole = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size or parts or size == 1:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return " ".join(parts[:2])


def _remaining(ban: dict) -> str:
    remaining = ban.get("remaining")
    if remaining is None and ban.get("end") is not None:
        remaining = ban["end"] - time.time()
    return "permanent" if remaining is None else _duration(remaining)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in rows)


def _ban_rows(bans: list, with_jail: bool = True) -> str:
    rows = [(["JAIL"] if with_jail else []) + ["ADDRESS", "REMAINING", "OFFENCE", "REASON"]]
    for ban in bans:
        rows.append(([str(ban.get("jail", "?"))] if with_jail else [])
                    + [str(ban.get("address", "?")), _remaining(ban), str(ban.get("offence", "")),
                       str(ban.get("reason", ""))])
    return _table(rows)


def _count(value: object) -> str:
    return "?" if value is None else str(value)


def _print_status(status: dict) -> None:
    header = f"jailwarden {status.get('version', '?')}"
    if status.get("uptime") is not None:
        header += f", up {_duration(status['uptime'])}"
    print(header + (", dry run: no firewall changes" if status.get("dry_run") else ""))
    jails = status.get("jails") or {}
    if jails:
        rows = [["JAIL", "FILTER", "BACKEND", "BANNED", "TRACKED", "FAILURES", "BANS"]]
        for name, jail in jails.items():
            backend = str(jail.get("backend", "?")) + ("" if jail.get("backend_ok", True) else " (failing)")
            rows.append([name, str(jail.get("filter", "?")), backend, _count(jail.get("active_bans")),
                         _count(jail.get("tracked")), _count(jail.get("failures")), _count(jail.get("bans"))])
        print("\n" + _table(rows), end="")
        for name, jail in jails.items():
            if not jail.get("backend_ok", True):
                print(f"{name}: backend {jail.get('backend', '?')}: {jail.get('backend_error') or 'failing'}")
    else:
        print("\nno jails")
    sources = status.get("sources") or {}
    if sources:
        rows = [["SOURCE", "RUNNING", "LAG", "EVENTS", "DROPPED"]]
        for name, source in sources.items():
            lag = source.get("lag")
            rows.append([name, "yes" if source.get("running") else "no", "-" if lag is None else f"{lag:.2f}s",
                         _count(source.get("events")), _count(source.get("dropped"))])
        print("\n" + _table(rows), end="")
    reports = status.get("reports") or {}
    if reports:
        rows = [["REPORTED ON", "ACCEPTED", "RATE LIMITED"]]
        rows += [[channel, _count(counts.get("accepted")), _count(counts.get("rate_limited"))]
                 for channel, counts in reports.items()]
        print("\n" + _table(rows), end="")


def _print_jail(jail: dict) -> None:
    backend = jail.get("backend", "?")
    state = "ok" if jail.get("backend_ok", True) else f"failing: {jail.get('backend_error') or 'unknown error'}"
    print(f"jail      {jail.get('jail', '?')}\n"
          f"filter    {jail.get('filter', '?')}\n"
          f"backend   {backend} ({state})\n"
          f"bans      {_count(jail.get('active_bans'))} active, {_count(jail.get('bans'))} since start\n"
          f"failures  {_count(jail.get('failures'))} counted, {_count(jail.get('tracked'))} addresses tracked")
    banned = jail.get("banned") or []
    print()
    if banned:
        print(_ban_rows(banned, with_jail=False), end="")
    else:
        print("no active bans")


def _print_json(result: object) -> None:
    print(json.dumps(result))


def cmd_status(args: argparse.Namespace) -> int:
    code, result = _ask(args, "status", jail=args.jail)
    if code == 0:
        if args.json:
            _print_json(result)
        elif args.jail is not None:
            _print_jail(result)
        else:
            _print_status(result)
    return code


def cmd_bans(args: argparse.Namespace) -> int:
    code, result = _ask(args, "bans", jail=args.jail)
    if code == 0:
        if args.json:
            _print_json(result)
        else:
            print(_ban_rows(result) if result else "no active bans\n", end="")
    return code


def cmd_ban(args: argparse.Namespace) -> int:
    code, ban = _ask(args, "ban", jail=args.jail, address=args.address, duration=args.duration)
    if code == 0:
        if args.json:
            _print_json(ban)
        else:
            remaining = _remaining(ban)
            length = "permanently" if remaining == "permanent" else f"for {remaining}"
            print(f"banned {ban.get('address', args.address)} in {ban.get('jail', args.jail)} {length} "
                  f"(offence {ban.get('offence', '?')})")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    if args.socket is None:
        args.socket = _report_socket(Path(args.config))
    code, result = _ask(args, "report", jail=args.jail, address=args.address, reason=args.reason)
    if code == 0:
        if args.json:
            _print_json(result)
        else:
            ban = result.get("ban")
            print(f"{result.get('address')} in {result.get('jail')}: {result.get('outcome')}"
                  + (f"; banned for {_remaining(ban)}" if ban else ""))
    return code


def _report_socket(config: Path) -> str | None:
    """[agent] report_socket of the configuration, read without the whole check (an application
    may not be allowed to read everything the full check reads)."""
    import tomllib

    try:
        with open(config, "rb") as stream:
            value = tomllib.load(stream).get("agent", {}).get("report_socket")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def cmd_unban(args: argparse.Namespace) -> int:
    targets = args.targets
    if args.all and targets:
        args.parser.error("--all lifts every ban (of --jail J); give no address with it")
    if not args.all and not 1 <= len(targets) <= 2:
        args.parser.error("give [JAIL] ADDRESS, or --all")
    jail, address = (targets[0], targets[1]) if len(targets) == 2 else (None, targets[0] if targets else None)
    if jail is not None and args.jail is not None:
        args.parser.error("give the jail once: as JAIL or as --jail")
    jail = jail if jail is not None else args.jail
    code, result = _ask(args, "unban", address=address, jail=jail, all=args.all or None)
    if code == 0:
        if args.json:
            _print_json(result)
        else:
            lifted = result.get("lifted") or []
            print(f"lifted {len(lifted)} ban{'s' * (len(lifted) != 1)}")
            if lifted:
                print(_ban_rows(lifted), end="")
    return code


def cmd_reload(args: argparse.Namespace) -> int:
    code, result = _ask(args, "reload")
    if code == 0:
        if args.json:
            _print_json(result)
        else:
            changes = result.get("changes") or []
            print("reloaded: " + ("no changes" if not changes else f"{len(changes)} change{'s' * (len(changes) != 1)}"))
            for change in changes:
                print(f"  {change}")
    return code


