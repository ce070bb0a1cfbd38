"""Filter files: reading a filter's TOML, checking it, and finding a filter by name.

`load_filter` turns a file into a `parsers.filter.Filter` compiled for one mode; every
problem is a `FilterError` naming the file, the key (with its list index) and the reason.
`load_reference` also takes Fail2Ban filters ("fail2ban:NAME", a .conf or .local path),
read by `parsers.fail2ban`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Mapping

from parsers.accounts import AccountLookup, uids
from parsers.fail2ban_reference import DEFAULT_DIR as FAIL2BAN_DIR, is_fail2ban_reference
from parsers.errors import FilterError
from parsers.filter import Filter
from parsers.regexlist import Regex

SHIPPED_DIR = Path(__file__).parent / "filters"


def _regex_list(file: str, key: str, value: object) -> list[str | Regex]:
    """A failregex list: strings, or tables {regex = "...", count = false}."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise FilterError(file, key, "expected a list of regexes")
    entries: list[str | Regex] = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            if set(entry) - {"regex", "count"} or not isinstance(entry.get("regex"), str) \
                    or not isinstance(entry.get("count", True), bool):
                raise FilterError(file, f"{key}[{i}]", 'expected {regex = "...", count = true|false}')
            entries.append(Regex(entry["regex"], entry.get("count", True)))
        elif isinstance(entry, str):
            entries.append(entry)
        else:
            raise FilterError(file, f"{key}[{i}]", f"expected a string or a table, got {type(entry).__name__}")
    return entries


def _placed(entries: list[str | Regex], key: str) -> list[Regex]:
    """The entries with their places in the file, so errors name the list they came from."""
    return [Regex(e, True, f"{key}[{i}]") if isinstance(e, str) else Regex(e.regex, e.count, f"{key}[{i}]")
            for i, e in enumerate(entries)]


def _string_list(file: str, key: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FilterError(file, key, "expected a string or a list of strings")
    return value


_JOURNAL_FIELD = re.compile(r"[A-Z0-9_]+")
_TOP_KEYS = {"description", "journal", "syslog", "failregex", "ignoreregex", "modes"}
_MODE_KEYS = {"description", "failregex", "ignoreregex"}


def _journal_matches(file: str, raw: object,
                     accounts: AccountLookup | None = None) -> tuple[dict[str, frozenset[str]], ...]:
    # [journal] is one group of FIELD = [values] (every field must match, any of its values);
    # [[journal]] is a list of such groups, any of which identifies the program.
    groups = raw if isinstance(raw, list) else [raw]
    matches = []
    for index, group in enumerate(groups):
        where = f"journal[{index}]" if isinstance(raw, list) else "journal"
        if not isinstance(group, dict):
            raise FilterError(file, where, "expected a table of FIELD = [values], or an array of such tables")
        match = {}
        for key, values in group.items():
            if not _JOURNAL_FIELD.fullmatch(key):
                raise FilterError(file, f"{where}.{key}", "not a journal field name (A-Z, 0-9 and _)")
            match[key] = frozenset(_string_list(file, f"{where}.{key}", values))
            if not match[key]:
                raise FilterError(file, f"{where}.{key}", "empty: no entry could match")
        if "_UID" in match:
            # An account name stands for that account's uid on this host (parsers.accounts).
            match["_UID"] = uids(file, f"{where}._UID", match["_UID"], accounts)
            if not match["_UID"]:
                continue  # none of its accounts exists on this host: the group can match nothing
        if match:
            matches.append(match)
    return tuple(matches)


def load_filter(path: str | Path, mode: str | None = None, name: str | None = None,
                accounts: AccountLookup | None = None) -> Filter:
    """Read and compile a filter file for `mode` (its default mode when None); `accounts` gives
    the uid of an account named in `_UID`."""
    path = Path(path)
    file = str(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FilterError(file, "", "no such filter file") from None
    except OSError as error:
        raise FilterError(file, "", f"cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise FilterError(file, "", f"invalid TOML: {error}") from None
    return filter_from_dict(data, file=file, mode=mode, name=name or path.stem, accounts=accounts)


def filter_from_dict(data: Mapping[str, object], *, file: str, name: str,
                     mode: str | None = None, accounts: AccountLookup | None = None) -> Filter:
    """Build a Filter from parsed TOML (used by load_filter and by tests)."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise FilterError(file, unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    journal = _journal_matches(file, data.get("journal", {}), accounts)
    syslog = frozenset(_string_list(file, "syslog", data.get("syslog", [])))
    if not journal and not syslog:
        raise FilterError(file, "", "names no program: set `journal` fields and/or `syslog` tags")
    failregex = _regex_list(file, "failregex", data.get("failregex", []))
    ignoreregex = _string_list(file, "ignoreregex", data.get("ignoreregex", []))
    modes = data.get("modes", {})
    if not isinstance(modes, dict):
        raise FilterError(file, "modes", "expected a table of modes")
    mode = mode or "normal"
    if mode != "normal":
        if mode not in modes:
            known = ", ".join(["normal", *sorted(modes)])
            raise FilterError(file, "modes", f"no mode {mode!r} (this filter has: {known})")
        extra = modes[mode]
        if not isinstance(extra, dict) or set(extra) - _MODE_KEYS:
            raise FilterError(file, f"modes.{mode}", f"expected a table with keys {sorted(_MODE_KEYS)}")
        # A mode adds to the base lists; the index in errors counts on from the base list.
        failregex = _placed(failregex, "failregex") + _placed(
            _regex_list(file, f"modes.{mode}.failregex", extra.get("failregex", [])), f"modes.{mode}.failregex")
        ignoreregex = _placed(ignoreregex, "ignoreregex") + _placed(
            _string_list(file, f"modes.{mode}.ignoreregex", extra.get("ignoreregex", [])),
            f"modes.{mode}.ignoreregex")
    if not failregex:
        raise FilterError(file, "failregex", "empty: the filter would never match")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise FilterError(file, "description", "expected a string")
    return Filter(name, description=description, mode=mode, journal=journal, syslog=syslog,
                  failregex=failregex, ignoreregex=ignoreregex, file=file,
                  journal_declared=bool(data.get("journal")))


def modes_of(path: str | Path) -> list[str]:
    """The modes a filter file offers ("normal" first)."""
    with Path(path).open("rb") as f:
        data = tomllib.load(f)
    return ["normal", *sorted(data.get("modes", {}))]


def find_filter(name: str, search: list[Path] | None = None) -> Path:
    """The file for a filter name or path: local filter.d first, then the shipped filters."""
    if "/" in name or name.endswith(".toml"):
        return Path(name)
    dirs = search if search is not None else [Path("/etc/jailwarden/filter.d"), SHIPPED_DIR]
    for directory in dirs:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    raise FilterError(name, "", f"no such filter in {', '.join(map(str, dirs))} "
                                f"(shipped: {', '.join(shipped)})")


def load_reference(reference: str, mode: str | None = None, search: list[Path] | None = None,
                   fail2ban_dir: Path = FAIL2BAN_DIR, require_identity: bool = True,
                   accounts: AccountLookup | None = None) -> Filter:
    """The filter a jail (or test-filter) names: a shipped or local filter's name, a TOML
    file, or a Fail2Ban filter, "fail2ban:NAME[key=value, ...]" (from `fail2ban_dir`/filter.d)
    or the path of its .conf or .local. A Fail2Ban filter that names no program is an error
    when `require_identity` (a jail needs one; test-filter reading a file does not). `accounts`
    gives the uid of an account named in `_UID`, in either kind of filter."""
    if is_fail2ban_reference(reference):
        # Imported here: start-up of test-filter with a TOML filter does not pay for it.
        from parsers.fail2ban import load_fail2ban_filter

        return load_fail2ban_filter(reference, fail2ban_dir, mode=mode, require_identity=require_identity,
                                    accounts=accounts)
    return load_filter(find_filter(reference, search), mode=mode, accounts=accounts)
