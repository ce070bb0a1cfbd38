"""Fail2Ban filters (`filter.d/NAME.conf`) used as they are.

`load_fail2ban_filter` reads a filter with its includes and `.local` overrides
(`parsers.fail2ban_ini`), resolves its options for the jail's parameters
(`parsers.fail2ban_options`), compiles its regexes (`parsers.fail2ban_regex`) and its
datepattern (`parsers.dates`), and returns a `Fail2BanFilter` (`parsers.fail2ban_filter`):
a `Filter` whose matching is Fail2Ban's (`parsers.fail2ban_match`). Its identity for the
router comes from `journalmatch` and `_daemon` (`parsers.fail2ban_identity`); references
("fail2ban:NAME[key=value]") are read by `parsers.fail2ban_reference`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from parsers import fail2ban_regex as f2b_regex
from parsers.accounts import AccountLookup
from parsers.dates import DateDetector, DateError
from parsers.fail2ban_filter import Fail2BanFilter, journal_line
from parsers.fail2ban_identity import daemon_tags, journal_groups
from parsers.fail2ban_ini import read_filter_config
from parsers.fail2ban_match import LineMatcher
from parsers.fail2ban_options import FilterOptions, resolve_options
from parsers.fail2ban_reference import DEFAULT_DIR, filter_base, is_fail2ban_reference, parse_reference
from parsers.errors import FilterError

__all__ = ["DEFAULT_DIR", "Fail2BanFilter", "is_fail2ban_reference", "journal_line", "load_fail2ban_filter",
           "parse_reference"]

# The options that make a matcher (a journal matcher is made when they differ for logtype = journal).
_MATCHING_KEYS = ("usedns", "prefregex", "failregex", "ignoreregex", "maxlines")
# A regex line that is only a reference no value replaced: an undefined name (often a mode's).
_REFERENCE_ONLY = re.compile(r"^<([^<> ]+)>$")
# Lines a multi-line filter may buffer per program: every line is searched again with each new
# one, and kept (Fail2Ban's own filters use at most 10).
MAX_MAXLINES = 100


def _integer(options: FilterOptions, key: str, default: int, maximum: int | None = None) -> int:
    value = options.get(key)
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise FilterError(options.origin(key), key, f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise FilterError(options.origin(key), key, f"must be at least 1, got {number}")
    if maximum is not None and number > maximum:
        raise FilterError(options.origin(key), key, f"must be at most {maximum}, got {number}")
    return number


def _regexes(options: FilterOptions, key: str, usedns: str, multiline: bool) -> list[f2b_regex.Fail2BanRegex]:
    compiled = []
    lines = [line for line in (options.get(key) or "").split("\n") if line != ""]
    for index, line in enumerate(lines):
        unresolved = _REFERENCE_ONLY.match(line.strip())
        if unresolved is not None and not f2b_regex.is_tag(unresolved.group(1)):
            name = unresolved.group(1)
            mode = options.parameters.get("mode")
            hint = f" (is {mode!r} one of this filter's modes?)" if mode and mode in name else ""
            raise FilterError(options.origin(key), f"{key}[{index}]", f"<{name}> is not defined{hint}")
        try:
            compiled.append(f2b_regex.compile_regex(line, usedns, multiline))
        except f2b_regex.RegexError as error:
            raise FilterError(options.origin(key), f"{key}[{index}]", f"{error}: {line}") from None
    return compiled


def _matcher(options: FilterOptions, file: str) -> tuple[LineMatcher, list[str]]:
    """The compiled regexes of one set of options, and notes on what of them jailwarden treats
    differently."""
    usedns = (options.get("usedns") or "warn").strip().lower()
    if usedns not in f2b_regex.USEDNS:
        raise FilterError(options.origin("usedns"), "usedns", f"expected one of {', '.join(f2b_regex.USEDNS)}, "
                                                              f"got {usedns!r}")
    maxlines = _integer(options, "maxlines", 1, MAX_MAXLINES)
    prefregex = _regexes(options, "prefregex", usedns, False)
    failregex = _regexes(options, "failregex", usedns, maxlines > 1)
    ignoreregex = _regexes(options, "ignoreregex", usedns, False)
    if not failregex:
        raise FilterError(options.origin("failregex") or file, "failregex", "empty: the filter would never match")
    if len(prefregex) > 1:
        raise FilterError(options.origin("prefregex"), "prefregex", f"{len(prefregex)} lines: a filter has one "
                                                                   "prefregex (multi-line values are not supported)")
    prefix = prefregex[0] if prefregex else None
    for index, regex in enumerate(failregex):
        if not regex.has_failure_id() and not (prefix is not None and prefix.has_failure_id()):
            raise FilterError(options.origin("failregex"), f"failregex[{index}]",
                              "no failure id: the regex has no <HOST>, <ADDR>, <IP4>, <IP6>, <DNS>, <F-ID> "
                              f"or <F-MLFID> (nor has the prefregex): {regex.source}")
    notes = []
    if any(r.uses_subnet for r in failregex):
        notes.append("a failregex uses <CIDR> or <SUBNET>: a match naming a whole network is reported, "
                     "not counted (jailwarden bans single addresses)")
    if usedns in ("yes", "warn") and options.get("usedns") is not None:
        notes.append(f"usedns = {usedns}: jailwarden never resolves host names; a failure naming a host is "
                     "reported as unusable and not counted")
    return LineMatcher(failregex, ignoreregex, prefix, maxlines), notes


def load_fail2ban_filter(reference: str, directory: Path = DEFAULT_DIR, mode: str | None = None,
                         require_identity: bool = True, parameters: Mapping[str, str] | None = None,
                         accounts: AccountLookup | None = None) -> Fail2BanFilter:
    """Read and compile a Fail2Ban filter: "fail2ban:NAME[key=value...]" (in
    `directory`/filter.d) or a path to its .conf/.local. `mode` is the jail's; `parameters`
    add to those in brackets. A filter that names no program (no journalmatch, no literal
    _daemon) is an error when `require_identity`. `accounts` gives the uid of an account
    named in journalmatch's `_UID`."""
    name, given = parse_reference(reference)
    parameters = {**given, **(parameters or {})}
    if mode is not None:
        if parameters.get("mode", mode) != mode:
            raise FilterError(reference, "mode", f"the jail's mode {mode!r} contradicts the filter's "
                                                 f"parameter mode={parameters['mode']!r}")
        parameters["mode"] = mode
    base = filter_base(reference, directory)
    config = read_filter_config(base)
    own = [path for path in config.files if path.parent == base.parent and path.stem == base.name]
    file = str(own[0] if own else config.files[-1])
    options = resolve_options(config, parameters)
    matcher, notes = _matcher(options, file)
    journal_matcher = None
    if "logtype" not in parameters:
        # Fail2Ban reads the journal with logtype = journal (its systemd backend sets it); a
        # filter may match the journal's lines differently, so those get their own regexes.
        journal_options = resolve_options(config, {**parameters, "logtype": "journal"})
        if any(journal_options.get(key) != options.get(key) for key in _MATCHING_KEYS):
            journal_matcher, _ = _matcher(journal_options, file)
    try:
        dates = DateDetector(options.get("datepattern"))
    except DateError as error:
        raise FilterError(options.origin("datepattern"), "datepattern", str(error)) from None
    journalmatch = options.get("journalmatch") or ""
    journal = journal_groups(journalmatch, options.origin("journalmatch"), accounts)
    daemon = (options.get("_daemon") or "").strip()
    syslog = daemon_tags(daemon) if daemon else None
    short = base.name
    if not journalmatch.strip() and not syslog and require_identity:
        raise FilterError(file, "", _no_identity(short, daemon))
    if syslog is None and journalmatch.strip():
        notes.insert(0, f"syslog messages are not routed to this filter: its _daemon '{daemon}' is a pattern, not "
                        f"a program name (name the program's syslog tags: fail2ban:{short}[_daemon=TAG] or "
                        f"[_daemon=\"(?:TAG1|TAG2)\"])")
    return Fail2BanFilter(short, file=file, files=list(config.files), mode=options.get("mode") or "normal",
                          parameters=parameters, journal=journal, journal_declared=bool(journalmatch.strip()),
                          syslog=frozenset(syslog or ()),
                          matcher=matcher, journal_matcher=journal_matcher, dates=dates, notes=tuple(notes))


def _no_identity(name: str, daemon: str) -> str:
    found = f"its _daemon '{daemon}' is a pattern, not a program name" if daemon else "it sets no _daemon"
    return (f"names no program: it has no journalmatch, and {found}, so no journal entry or syslog message "
            f"could be routed to it. Name the program: fail2ban:{name}[_daemon=TAG] (its syslog tag) or "
            f"fail2ban:{name}[journalmatch=\"_SYSTEMD_UNIT=UNIT.service\"], or set them in {name}.local")

