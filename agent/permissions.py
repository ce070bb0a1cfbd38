"""Who could have written the configuration: the agent refuses to start on a config file, jail.d
or filter.d entry, or filter file that a user other than root (or the user running the agent)
could have written or replaced. The agent holds CAP_NET_ADMIN and does what these files say —
which regex picks the address to ban, which addresses are ignored, which Python plug-in is
imported — so write access to any of them is power over the firewall, and over the agent.

A file, and the directory holding it, must be owned by root or the running user and writable by
neither group nor others. The directories above must be owned the same way and not writable by
others, unless they have the sticky bit (like /tmp: there others can add entries, but not
rename or remove ours). Paths are checked as resolved, so a symlink cannot lead around it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from parsers.fail2ban_reference import is_fail2ban_reference, parse_reference

if TYPE_CHECKING:
    from agent.config import Config


def load_trusted_config(path: Path, **options: object) -> Config:
    """load_config(path, **options), refused as well (ConfigErrors) when a user other than root
    could have written any of it: what the agent loads to run, check-config and reload."""
    from agent.config import ConfigErrors, load_config

    config = load_config(path, **options)
    unsafe = configuration_problems(path, config)
    if unsafe:
        raise ConfigErrors(unsafe)
    return config


def configuration_problems(config_path: Path, config: Config) -> list[str]:
    """What of the configuration at `config_path` (its file, jail.d, filter.d, and the filters
    its jails name by path or from Fail2Ban's filter.d) others could have written."""
    config_dir = Path(config_path).parent
    files, directories = [Path(config_path)], [config_dir / "jail.d", config_dir / "filter.d"]
    for jail in config.jails.values():
        if is_fail2ban_reference(jail.filter):
            name = parse_reference(jail.filter)[0]
            # Its [INCLUDES] come from the same directory: all of it counts.
            directories.append(Path(name).parent if "/" in name else jail.fail2ban_dir / "filter.d")
        elif "/" in jail.filter or jail.filter.endswith(".toml"):
            files.append(Path(jail.filter))
    return unsafe_paths(files, directories)


def unsafe_paths(files: Iterable[Path], directories: Iterable[Path] = (), uid: int | None = None) -> list[str]:
    """One line per problem with `files` (each checked with its directory and the directories
    above) and `directories` (checked, with every entry in them, and the directories above); a
    path that does not exist is not a problem here (loading it reports that)."""
    uid = os.geteuid() if uid is None else uid
    problems: dict[Path, str] = {}
    checked: set[Path] = set()

    def check(path: Path, strict: bool) -> None:
        if path in checked:
            return
        checked.add(path)
        try:
            info = os.stat(path)
        except OSError:
            return
        problem = _problem(path, info, uid, strict)
        if problem is not None:
            problems[path] = problem

    def check_with_parents(path: Path) -> None:
        check(path, strict=True)
        check(path.parent, strict=True)
        for parent in list(path.parents)[1:]:
            check(parent, strict=False)

    for file in files:
        check_with_parents(Path(file).resolve())
    for directory in directories:
        directory = Path(directory).resolve()
        if not directory.is_dir():
            continue
        check_with_parents(directory)
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            check_with_parents(entry.resolve())
    return [problems[path] for path in sorted(problems)]


def _problem(path: Path, info: os.stat_result, uid: int, strict: bool) -> str | None:
    kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, uid):
        return (f"{path}: the {kind} belongs to uid {info.st_uid}, who could change what the agent does: "
                f"chown root {path}")
    if strict and mode & 0o022:
        return f"{path}: the {kind} is writable by {_who(mode)} (mode {mode:04o}): chmod go-w {path}"
    if not strict and mode & 0o002 and not mode & stat.S_ISVTX:
        return f"{path}: the directory is writable by others (mode {mode:04o}), who could replace what is in it: " \
               f"chmod o-w {path}"
    return None


def _who(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
