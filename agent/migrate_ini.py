"""Reading Fail2Ban's jail configuration as Fail2Ban does: jail.conf, jail.d/*.conf, jail.local,
jail.d/*.local, their [INCLUDES], and its `%(name)s` interpolation, remembering each value's file.

Used only by `jailwarden import-fail2ban`; nothing here runs anything a file says.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_DEFAULT = "DEFAULT"
_INCLUDES = "INCLUDES"
_MAX_DEPTH = 10  # as configparser's BasicInterpolation, which Fail2Ban builds on
_REFERENCE = re.compile(r"%\(([^)]*)\)s")


@dataclass(slots=True, frozen=True)
class Setting:
    value: str  # as written, before interpolation
    file: str


@dataclass(slots=True, frozen=True)
class Location:
    """Where a jail's value was set: its own section, or [DEFAULT] (then `jail` names the user)."""

    file: str
    section: str
    key: str
    jail: str | None = None

    def __str__(self) -> str:
        used_by = f" (jail {self.jail})" if self.jail and self.jail != self.section else ""
        return f"{self.file}: [{self.section}] {self.key}{used_by}"


class InterpolationError(ValueError):
    """A `%(name)s` reference that cannot be resolved; the message says which and why."""


@dataclass(slots=True)
class _File:
    defaults: dict[str, str]
    sections: dict[str, dict[str, str]]


@dataclass(slots=True)
class JailFiles:
    """The merged configuration: later files override single keys of earlier ones, and the value
    a key had before (`known/KEY`) is kept per section."""

    directory: Path
    files: list[Path] = field(default_factory=list)  # in the order read, includes in place
    problems: list[str] = field(default_factory=list)  # unreadable and broken files
    defaults: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, dict[str, Setting]] = field(default_factory=dict)
    known: dict[str, dict[str, Setting]] = field(default_factory=dict)

    def jail_names(self) -> list[str]:
        return [name for name in self.sections if name != _INCLUDES]

    def setting(self, section: str, key: str) -> Setting | None:
        """The raw setting `section` sees for `key`: its own, else [DEFAULT]'s."""
        own = self.sections.get(section, {}).get(key) if section != _DEFAULT else None
        return own if own is not None else self.defaults.get(key)

    def has_own(self, section: str, key: str) -> bool:
        return key in self.sections.get(section, {})

    def location(self, section: str, key: str) -> Location:
        if self.has_own(section, key):
            return Location(self.sections[section][key].file, section, key, section)
        setting = self.defaults.get(key)
        file = setting.file if setting is not None else str(self.directory / "jail.conf")
        return Location(file, _DEFAULT, key, section if section != _DEFAULT else None)

    def get(self, section: str, key: str) -> str | None:
        """The interpolated value of `key` in `section` (or [DEFAULT]), None if it is not set.
        Raises InterpolationError for a reference that cannot be resolved."""
        setting = self.setting(section, key)
        if setting is None:
            return None
        return self._interpolate(section, setting.value, 1)

    def _interpolate(self, section: str, text: str, depth: int) -> str:
        if "%" not in text:
            return text
        if depth > _MAX_DEPTH:
            raise InterpolationError(f"more than {_MAX_DEPTH} levels of %(...)s references (a loop?)")
        parts, position = [], 0
        while (start := text.find("%", position)) >= 0:
            parts.append(text[position:start])
            if text.startswith("%%", start):
                parts.append("%")
                position = start + 2
                continue
            reference = _REFERENCE.match(text, start)
            if reference is None:
                raise InterpolationError(f"'%' must be followed by '%' or '(name)s': {text[start:start + 20]!r}")
            # Names are case-insensitive, as configparser lowercases option names.
            value = self._reference(section, reference[1].lower())
            parts.append(self._interpolate(section, value, depth + 1))
            position = reference.end()
        parts.append(text[position:])
        return "".join(parts)

    def _reference(self, section: str, name: str) -> str:
        """The raw value `%(name)s` stands for in `section`; nested references are then resolved
        in `section` too, so a [DEFAULT] template picks up the jail's own values."""
        if name == "__name__":
            return section
        owner, slash, key = name.partition("/")
        if not slash:
            setting = self.setting(section, name)
        elif owner == "default":
            setting = self.defaults.get(key)
        elif owner == "known":
            setting = self.known.get(section, {}).get(key) or self.defaults.get(key)
        else:
            other = next((s for n, s in self.sections.items() if n.lower() == owner), None)
            setting = None if other is None else other.get(key) or self.defaults.get(key)
        if setting is None:
            raise InterpolationError(f"%({name})s is not defined")
        return setting.value


def read_jail_files(directory: Path) -> JailFiles:
    """Read `directory`'s jail configuration in Fail2Ban's order; broken files are skipped and
    listed in `problems`."""
    base = str(directory / "jail")
    top = [base + ".conf", *sorted(glob.glob(glob.escape(base + ".d") + "/*.conf")),
           base + ".local", *sorted(glob.glob(glob.escape(base + ".d") + "/*.local"))]
    config = JailFiles(directory)
    parsed: dict[str, _File | None] = {}
    for name in top:
        if os.path.exists(name):
            for path in _with_includes(name, [], parsed, config.problems):
                _merge(config, parsed[path], path)
                config.files.append(Path(path))
    # Fail2Ban adds these before interpolating jails (jail.conf uses them in ignorecommand and actions).
    config.defaults["fail2ban_confpath"] = Setting(str(directory), "(Fail2Ban)")
    config.defaults["fail2ban_version"] = Setting("unknown", "(Fail2Ban)")
    return config


def _with_includes(path: str, chain: list[str], parsed: dict, problems: list[str]) -> list[str]:
    """`path` with the files its [INCLUDES] name before and after it (each followed by its
    .local twin, when there is one), recursively; files that cannot be read are left out."""
    if path not in parsed:
        parsed[path] = _parse(path, problems)
    file = parsed[path]
    if file is None:
        return []
    lists: dict[str, list[str]] = {"before": [], "after": []}
    for option, found in lists.items():
        for included in file.sections.get(_INCLUDES, {}).get(option, "").splitlines():
            included = included.strip()
            if not included:
                continue
            target = os.path.join(os.path.dirname(path), included)
            if target in chain or target == path:
                continue
            if not os.path.exists(target):
                # Fail2Ban skips missing includes silently; a missing .local is the usual case.
                if not target.endswith(".local"):
                    problems.append(f"{path}: [{_INCLUDES}] {option}: {target} does not exist")
                continue
            twin = os.path.splitext(target)[0] + ".local"
            for name in [target] + ([twin] if twin != target and os.path.exists(twin) else []):
                found += _with_includes(name, chain + [path], parsed, problems)
    return lists["before"] + [path] + lists["after"]


def _parse(path: str, problems: list[str]) -> _File | None:
    # [DEFAULT] is read as an ordinary section (no section is named "\0"), so that each section
    # lists only the keys it sets itself.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",), default_section="\0")
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream, source=path)
    except OSError as error:
        problems.append(f"{path}: cannot read the file ({error.strerror}); it is skipped")
        return None
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not UTF-8 text (bad byte at offset {error.start}); the file is skipped")
        return None
    except configparser.Error as error:
        problems.append(f"{path}: {_describe(error)}; the file is skipped")
        return None
    sections = {name: dict(parser.items(name, raw=True)) for name in parser.sections()}
    return _File(sections.pop(_DEFAULT, {}), sections)


def _describe(error: configparser.Error) -> str:
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: a value before the first [section]: {error.line.strip()!r}"
    if isinstance(error, configparser.ParsingError):
        return "; ".join(f"line {line}: not `key = value`, a [section] or a comment: {text.strip()!r}"
                         for line, text in error.errors)
    if isinstance(error, configparser.DuplicateSectionError):
        return f"line {error.lineno}: section [{error.section}] appears twice in this file"
    if isinstance(error, configparser.DuplicateOptionError):
        return f"line {error.lineno}: [{error.section}] {error.option} is set twice in this section"
    return str(error).replace("\n", " ")


def _merge(config: JailFiles, file: _File, path: str) -> None:
    for key, value in file.defaults.items():
        config.defaults[key] = Setting(value, path)
    for name, values in file.sections.items():
        merged = config.sections.setdefault(name, {})
        known = {key: merged[key] for key in values if key in merged}
        if known:
            config.known.setdefault(name, {}).update(known)
        merged.update({key: Setting(value, path) for key, value in values.items()})
