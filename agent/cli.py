"""The `jailwarden` command line."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import TextIO

from agent import __version__
from agent.host import account_uid
from agent.cli_control import cmd_ban, cmd_bans, cmd_reload, cmd_report, cmd_status, cmd_unban
from agent.parallel import available_cpus, count_file
from agent.testfilter import FilterTester, Summary
from parsers.errors import FilterError
from parsers.filter import Verdict
from parsers.filterfile import FAIL2BAN_DIR, load_reference

DEFAULT_CONFIG = "/etc/jailwarden/jailwarden.toml"
_TOP = 20


def _open_input(name: str) -> TextIO:
    if name == "-":
        return open(sys.stdin.fileno(), encoding="utf-8", errors="replace", newline="\n", closefd=False)
    return open(name, encoding="utf-8", errors="replace", newline="\n")


def _progress_printer(err: TextIO, stream: TextIO | None = None):
    """show(lines, fraction): lines read so far and, where known, the fraction of the input
    (read from `stream`'s position when not given)."""
    try:
        size = os.fstat(stream.fileno()).st_size if stream is not None else 0
        raw = stream.buffer if stream is not None else None
        if raw is not None:
            raw.tell()
    except (OSError, AttributeError, ValueError):
        size, raw = 0, None
    started = time.monotonic()

    def show(lines: int, fraction: float | None = None) -> None:
        if fraction is None and size and raw is not None:
            fraction = raw.tell() / size
        rate = lines / max(time.monotonic() - started, 1e-9)
        done = f" {100 * fraction:5.1f}%" if fraction is not None else ""
        err.write(f"\r{lines:>12,} lines{done} {rate:>12,.0f} lines/s")
        err.flush()

    return show


def _verbose_reporter(out: TextIO):
    def report(lineno: int, line: str, verdict: Verdict) -> None:
        if verdict.kind == "skip":
            return
        detail = str(verdict.address) if verdict.kind == "fail" else verdict.detail
        if verdict.captures:
            detail += " " + " ".join(f"{k}={v}" for k, v in verdict.captures.items())
        if verdict.kind == "fail" and verdict.repeat != 1:
            detail += f" (x{verdict.repeat})"
        if verdict.kind == "fail" and not verdict.counts:
            detail += " (not counted)"
        out.write(f"{lineno:>8} {verdict.kind.upper():<7} {detail:<40} | {line.rstrip()}\n")

    return report


def _json_reporter(out: TextIO, name: str):
    dumps = json.dumps

    def report(lineno: int, line: str, verdict: Verdict) -> None:
        if verdict.kind == "skip":
            return
        failed = verdict.kind == "fail"
        record = {"lineno": lineno, "match": failed, "host": str(verdict.address) if failed else None,
                  "filter": name, "verdict": verdict.kind}
        if failed and not verdict.counts:
            record["counted"] = False
        if failed and verdict.repeat != 1:
            record["repeat"] = verdict.repeat
        if verdict.captures:
            record["captures"] = verdict.captures
        if verdict.kind == "error":
            record["reason"] = verdict.detail
        out.write(dumps(record) + "\n")

    return report


def _print_summary(out: TextIO, flt, path: Path, s: Summary, elapsed: float, verbose: bool) -> None:
    out.write(f"filter     {flt.name} (mode {flt.mode}), {path}\n")
    out.write(f"lines      {s.lines:,} read: {s.matched:,} matched, {s.ignored:,} ignored, "
              f"{s.missed:,} missed, {s.other:,} from other programs, "
              f"{s.skipped:,} blank or comment, {s.errors:,} unparsable\n")
    if s.too_long:
        from parsers.fail2ban_filter import MAX_LINE  # only Fail2Ban filters leave lines unsearched

        out.write(f"           {s.too_long:,} of the missed lines are longer than {MAX_LINE:,} characters, more than "
                  f"the filter's regexes search\n")
    if s.uncounted:
        out.write(f"           {s.uncounted:,} of the matched lines do not count towards maxretry "
                  f"(the service logs the same attempt in another line)\n")
    out.write(f"addresses  {len(s.addresses):,} distinct; per address: matched lines, "
              f"failures counted towards maxretry\n")
    listed = s.addresses.most_common(None if verbose else _TOP)
    for address, count in listed:
        out.write(f"           {str(address):<39} {count:>9,} {s.counted[address]:>9,}\n")
    if len(listed) < len(s.addresses):
        out.write(f"           ... {len(s.addresses) - len(listed):,} more (-v lists all)\n")
    rate = s.lines / elapsed if elapsed > 0 else 0.0
    out.write(f"time       {elapsed:.3f} s, {rate:,.0f} lines/s\n")


def cmd_test_filter(args: argparse.Namespace) -> int:
    try:
        # Reading a file needs no program identity, so a Fail2Ban filter for a web server's log is fine here.
        flt = load_reference(args.filter, mode=args.mode, fail2ban_dir=args.fail2ban_dir, require_identity=False,
                             accounts=account_uid)
    except FilterError as error:
        print(f"jailwarden: {error}", file=sys.stderr)
        return 2
    path = Path(flt.file)
    for note in flt.notes:
        print(f"jailwarden: note: {note}", file=sys.stderr)
    try:
        stream = _open_input(args.file)
    except OSError as error:
        print(f"jailwarden: {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.json:
        report = _json_reporter(out, flt.name)
    elif args.verbose:
        report = _verbose_reporter(out)
    else:
        report = None
    jobs = args.jobs if args.jobs is not None else available_cpus()
    started = time.perf_counter()
    # A filter whose verdicts depend on earlier lines (Fail2Ban's maxlines, <F-MLFID>) reads in one piece.
    jobs = 1 if flt.stateful else jobs
    if report is None and jobs > 1 and args.file != "-" and stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        # A summary of a regular file can be counted in parts, one process per CPU.
        stream.close()
        progress = _progress_printer(sys.stderr) if sys.stderr.isatty() else None
        summary = count_file(Path(args.file), flt, time.time(), jobs, progress=progress)
    else:
        progress = _progress_printer(sys.stderr, stream) if sys.stderr.isatty() else None
        tester = FilterTester(flt, now=time.time(), report=report, progress=progress)
        with stream:
            summary = tester.run(stream)
    elapsed = time.perf_counter() - started
    if progress is not None:
        sys.stderr.write("\r\033[K")
    if not args.json:
        _print_summary(out, flt, path, summary, elapsed, args.verbose)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    # Imported here: test-filter, whose start-up time counts in every benchmark, needs none of it.
    from agent.config import ConfigErrors
    from agent.jails import filter_warnings, load_jail_filter
    from agent.permissions import load_trusted_config
    from agent.regexprobe import check_user_filter

    path = Path(args.config)
    filters = {}

    def filter_problem(jail) -> str | None:
        # The filter as the daemon loads it; kept for the warnings once the whole config is known.
        try:
            filters[jail.name] = load_jail_filter(jail, path.parent / "filter.d")
        except (FilterError, OSError) as error:
            return str(error)
        return None

    try:
        config = load_trusted_config(path, check_filter=filter_problem)
    except ConfigErrors as errors:
        for error in errors.errors:
            print(error, file=sys.stderr)
        count = len(errors.errors)
        print(f"jailwarden: {count} problem{'s' * (count != 1)} in the configuration", file=sys.stderr)
        return 1
    # What the daemon would log at start: the configuration works, but not all of it as one may expect.
    probed: dict[tuple, str | None] = {}
    for name, flt in filters.items():
        for warning in filter_warnings(config.jails[name], flt, config.sources.journal.enabled):
            print(f"warning: {warning}", file=sys.stderr)
        # A user's filter whose regexes backtrack on long lines (probed once per file and mode).
        key = (tuple(flt.files), flt.mode)
        if key not in probed:
            probed[key] = check_user_filter(flt)
        if probed[key] is not None:
            print(f"warning: jail {name}: {probed[key]}", file=sys.stderr)
    enabled = [name for name, jail in config.jails.items() if jail.enabled]
    print(f"{path}: OK, {len(enabled)} jail{'s' * (len(enabled) != 1)} enabled"
          f"{': ' + ', '.join(enabled) if enabled else ''}; read {', '.join(map(str, config.files))}")
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    from agent.teardown import teardown

    return teardown(Path(args.config), sys.stdout, sys.stderr)


def cmd_import_fail2ban(args: argparse.Namespace) -> int:
    from agent.migrate import import_fail2ban

    return import_fail2ban(Path(args.directory), sys.stdout, sys.stderr)


class _StderrFormat(logging.Formatter):
    """No timestamps (journald adds its own); under systemd, a `<N>` syslog-priority prefix
    so journald files each line at its level."""

    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journal:
            return f"<{self._PRIORITY.get(record.levelno, 6)}>{text}"
        return f"{record.levelname.lower()}: {text}"


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from agent.config import ConfigErrors
    from agent.daemon import Agent
    from agent.permissions import load_trusted_config

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormat())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    # Debug output of libraries (pyroute2 dumps every netlink message) is not the agent's.
    logging.getLogger("jailwarden").setLevel(getattr(logging, args.log_level.upper()))
    path = Path(args.config)
    try:
        config = load_trusted_config(path)
    except ConfigErrors as errors:
        for error in errors.errors:
            print(error, file=sys.stderr)
        print(f"jailwarden: not starting: {len(errors.errors)} problem(s) in the configuration "
              f"(`jailwarden check-config --config {path}` lists them)", file=sys.stderr)
        return 1
    agent = Agent(config, filter_dir=path.parent / "filter.d", dry_run=args.dry_run, config_path=path)
    # Worker threads (the store, firewall calls) run Python too; handing the interpreter back to
    # the event loop after 1 ms rather than 5 keeps the control socket quick during a flood.
    sys.setswitchinterval(0.001)
    # The agent keeps many small long-lived objects (failure windows, bans): collecting the young
    # generation less often means far fewer full collections, each a pause of the whole loop.
    gc.set_threshold(20_000, 20, 20)
    # What is loaded by now (modules, compiled filters, config) lives as long as the process:
    # set aside, full collections no longer walk it.
    gc.freeze()
    return asyncio.run(agent.run())


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jailwarden", description="Intrusion-prevention agent.")
    parser.add_argument("--version", action="version", version=f"jailwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    test = commands.add_parser(
        "test-filter", help="run a filter over a log and report what it matches",
        description="Run FILTER over FILE (classic syslog lines, RFC 5424 lines or "
                    "`journalctl -o json` lines, detected per line) and report what it matches.")
    test.add_argument("filter", metavar="FILTER",
                      help="a shipped filter name, a filter file, or a Fail2Ban filter: fail2ban:NAME[key=value, ...] "
                           "or the path of its .conf or .local")
    test.add_argument("file", metavar="FILE", help="the log to read, - for standard input")
    test.add_argument("--mode", default=None, help="the filter mode (default: normal)")
    test.add_argument("--fail2ban-dir", type=Path, default=FAIL2BAN_DIR, metavar="DIR",
                      help=f"where fail2ban:NAME filters are read from, DIR/filter.d (default {FAIL2BAN_DIR})")
    test.add_argument("--json", action="store_true", help="one JSON object per data line")
    test.add_argument("-v", "--verbose", action="store_true", help="print each line's verdict")
    test.add_argument("--jobs", "-j", type=_positive, default=None, metavar="N",
                      help="processes counting a large file's summary (default: one per CPU)")
    test.set_defaults(func=cmd_test_filter)

    check = commands.add_parser(
        "check-config", help="report every problem in the configuration",
        description="Load the configuration and its jail.d files, and each enabled jail's filter, "
                    "and report every problem found (exit status 1 if there is any).")
    check.add_argument("--config", default=DEFAULT_CONFIG, help=f"main config file (default {DEFAULT_CONFIG})")
    check.set_defaults(func=cmd_check_config)

    migrate = commands.add_parser(
        "import-fail2ban", help="convert Fail2Ban's jail configuration to jailwarden's",
        description="Read Fail2Ban's jail.conf, jail.local and jail.d/ in DIR and write the enabled jails as "
                    "jailwarden TOML to standard output. What cannot be converted is a '# fail2ban:' comment "
                    "and a warning on stderr (exit status 1); no jail.conf in DIR: exit status 2.")
    migrate.add_argument("directory", metavar="DIR", nargs="?", default="/etc/fail2ban",
                         help="Fail2Ban's configuration directory (default /etc/fail2ban)")
    migrate.set_defaults(func=cmd_import_fail2ban)

    run = commands.add_parser(
        "run", help="run the agent",
        description="Run the agent in the foreground: read the configured sources, count failures in "
                    "the jails and decide bans. Stops on SIGTERM or SIGINT, saving its position.")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"main config file (default {DEFAULT_CONFIG})")
    run.add_argument("--dry-run", action="store_true",
                     help="log each failure and ban decision; change no firewall")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=cmd_run)
    def control(name: str, func, help: str, description: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help, description=description)
        command.add_argument("--config", default=DEFAULT_CONFIG,
                             help=f"main config file, for the socket's path (default {DEFAULT_CONFIG})")
        command.add_argument("--socket", default=None, metavar="PATH",
                             help="the daemon's control socket (instead of the config's)")
        command.add_argument("--json", action="store_true", help="print the result as one JSON document")
        command.set_defaults(func=func, parser=command)
        return command

    status = control("status", cmd_status, "show the running agent's jails and sources",
                     "Ask the running agent for its jails, sources and counts; with JAIL, that jail and its bans.")
    status.add_argument("jail", metavar="JAIL", nargs="?", default=None)
    bans = control("bans", cmd_bans, "list active bans", "List the running agent's active bans.")
    bans.add_argument("--jail", default=None, metavar="JAIL", help="only this jail's bans")
    ban = control("ban", cmd_ban, "ban an address in a jail",
                  "Ban ADDRESS in JAIL now, for the jail's bantime (with its increment for repeat "
                  "offences) or the given duration.")
    ban.add_argument("jail", metavar="JAIL")
    ban.add_argument("address", metavar="ADDRESS")
    ban.add_argument("--for", dest="duration", default=None, metavar="DURATION",
                     help='how long: 600, "10m", "1h30m", or "permanent"')
    unban = control("unban", cmd_unban, "lift bans",
                    "Lift the bans of ADDRESS (in every jail, or in JAIL), or with --all every ban "
                    "(of --jail J).")
    unban.usage = "jailwarden unban [options] [JAIL] ADDRESS | --all [--jail JAIL]"
    unban.add_argument("targets", metavar="[JAIL] ADDRESS", nargs="*")
    unban.add_argument("--all", action="store_true", help="lift every ban (of --jail J)")
    unban.add_argument("--jail", default=None, metavar="JAIL", help="only in this jail")
    report = control("report", cmd_report, "report a failed attempt from an address",
                     "Count one failure from ADDRESS in JAIL, as a log line would (the jail's ignore list, "
                     "findtime and maxretry apply). For applications and scripts: it uses [agent] "
                     "report_socket when the configuration sets one (root and report_group may write to it), "
                     "else the control socket.")
    report.add_argument("jail", metavar="JAIL")
    report.add_argument("address", metavar="ADDRESS")
    report.add_argument("--reason", default=None, metavar="TEXT", help="what failed, for the log")
    control("reload", cmd_reload, "reload the configuration",
            "Make the running agent re-read its configuration and filters; a configuration with "
            "problems is refused and the running one kept.")
    teardown = commands.add_parser(
        "teardown", help="remove the agent's firewall objects, bans included",
        description="Remove what the agent made in the firewall (sets, chains, tables, hook rules, and so every "
                    "ban) for each configured jail and each jail the store remembers, through the backends "
                    "themselves. Stop the agent first. Exit status 1 if something could not be removed.")
    teardown.add_argument("--config", default=DEFAULT_CONFIG, help=f"main config file (default {DEFAULT_CONFIG})")
    teardown.set_defaults(func=cmd_teardown)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # `jailwarden test-filter ... | head` is normal use, not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
