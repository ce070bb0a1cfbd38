"""Fail2Ban's configuration dialect, read as Fail2Ban reads filters and jails: the files of one
configuration merged in Fail2Ban's order, each value with the file that set it, and values with
their `%(name)s` references resolved.

A configuration NAME is read from NAME.conf, NAME.d/*.conf, NAME.local and NAME.d/*.local, each
preceded by the files its `[INCLUDES] before` names and followed by those of `after` (relative
to the including file; an included X.conf brings X.local along). Later files override single
keys; the value a key had before being overridden stays reachable as `%(known/KEY)s`. Files that
do not exist are skipped, as Fail2Ban skips them; one that cannot be read raises FilterError, or
with `strict=False` is skipped and described in `problems`.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from parsers.errors import FilterError

DEFAULT = "DEFAULT"
INCLUDES = "INCLUDES"
_KNOWN = "KNOWN/"  # the section holding what a section's keys were before a later file overrode them
_MAX_DEPTH = 10  # nested %(...)s references, as Python's configparser allows
# Characters a value may grow to as its references (here) or tags (fail2ban_options) are
# replaced. Fail2Ban's own filters stay below 5,000; a few lines that repeat each other ten
# levels deep would otherwise expand to more memory than the host has.
MAX_VALUE = 1 << 20
_REFERENCE = re.compile(r"%\(([^)]+)\)s")
# A section whose name carries a condition ("Init?family=inet6") applies to some actions.
_CONDITIONAL = re.compile(r"^(\w+)(\?.+)$")
# `section/option` in <tag> lookups.
SECTION_OPTION = re.compile(r"^([\w\-]+)/([^\s>]+)$")

_Sections = dict[str, dict[str, str]]


@dataclass(slots=True, frozen=True)
class Setting:
    """A value as written (before interpolation) and the file that set it."""

    value: str
    file: str


def config_files(base: Path) -> list[Path]:
    """The files Fail2Ban reads for the configuration at `base` (a path without its suffix, as
    filter.d/sshd or jail), in its order; those that do not exist are left out."""
    drop_in = glob.escape(str(base.with_name(base.name + ".d")))
    candidates = [base.with_name(base.name + ".conf"), *map(Path, sorted(glob.glob(drop_in + "/*.conf"))),
                  base.with_name(base.name + ".local"), *map(Path, sorted(glob.glob(drop_in + "/*.local")))]
    return [path for path in candidates if _exists(path)]


def _exists(path: Path) -> bool:
    """Does `path` exist? One that cannot even be looked up (a name too long, a directory that
    may not be searched) raises FilterError with the reason."""
    try:
        return path.exists()
    except OSError as error:
        raise FilterError(str(path), "", f"cannot read the file ({error.strerror})") from None


def _parse(path: Path) -> _Sections:
    """`path`'s sections, [DEFAULT] among them, each with only the options it sets itself.
    Raises OSError, UnicodeDecodeError or configparser.Error."""
    # The default section gets a name no file uses, so [DEFAULT] is read as a section of its own.
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), default_section="\x00",
                                          interpolation=None, strict=True)
    with path.open(encoding="utf-8") as stream:
        parser.read_file(stream, str(path))
    return {name: dict(parser.items(name)) for name in parser.sections()}


def _unreadable(error: Exception) -> str:
    if isinstance(error, OSError):
        return f"cannot read the file ({error.strerror})"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {error.start})"
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


class Fail2BanConfig:
    """The merged sections of a configuration's files and the `%(...)s` interpolation over them.

    `sections` holds each section's own settings ([DEFAULT]'s are in `defaults`) and, as Fail2Ban
    keeps them, "KNOWN/NAME" sections with the settings of NAME that a later file overrode."""

    def __init__(self, files: Iterable[Path], *, strict: bool = True) -> None:
        self.strict = strict
        self.files: list[Path] = []  # in the order first read, includes in place
        self.problems: list[str] = []  # files skipped (strict=False) and includes that do not exist
        self.defaults: dict[str, Setting] = {}
        self.sections: dict[str, dict[str, Setting]] = {}
        self._parsed: dict[Path, _Sections | None] = {}
        for path in files:
            for included, sections in self._with_includes(path, ()):
                self._merge(included, sections)

    def _read(self, path: Path) -> _Sections | None:
        """`path` parsed, once; None if it cannot be read (strict=False)."""
        if path not in self._parsed:
            try:
                self._parsed[path] = _parse(path)
            except (OSError, UnicodeDecodeError, configparser.Error) as error:
                reason = _unreadable(error)
                if self.strict:
                    syntax = isinstance(error, configparser.Error)
                    raise FilterError(str(path), "", f"invalid syntax: {reason}" if syntax else reason) from None
                self.problems.append(f"{path}: {reason}; {'it' if isinstance(error, OSError) else 'the file'} "
                                     "is skipped")
                self._parsed[path] = None
        return self._parsed[path]

    def _with_includes(self, path: Path, chain: tuple[Path, ...]) -> list[tuple[Path, _Sections]]:
        """`path` parsed, with what it includes before and after it, depth first."""
        own = self._read(path) if _exists(path) else None
        if own is None:
            return []
        before: list[tuple[Path, _Sections]] = []
        after: list[tuple[Path, _Sections]] = []
        for option, found in (("before", before), ("after", after)):
            for entry in own.get(INCLUDES, {}).get(option, "").split("\n"):
                entry = entry.strip()
                if not entry:
                    continue
                # An absolute entry stays as it is; "a/../b" is written "b", so a loop through
                # ".." is seen as one.
                resource = Path(os.path.normpath(path.parent / entry))
                if resource in chain or resource == path:  # an include loop
                    continue
                if not _exists(resource) and not resource.name.endswith(".local"):
                    # Fail2Ban skips it silently; a missing .local is the usual case.
                    self.problems.append(f"{path}: [{INCLUDES}] {option}: {resource} does not exist")
                local = Path(os.path.splitext(resource)[0] + ".local")
                for candidate in [resource] + ([local] if local != resource else []):
                    if candidate not in chain and candidate != path:  # X.local may be the includer
                        found += self._with_includes(candidate, chain + (path,))
        return before + [(path, own)] + after

    def _merge(self, path: Path, sections: _Sections) -> None:
        if path not in self.files:
            self.files.append(path)
        for name, options in sections.items():
            settings = {key: Setting(value, str(path)) for key, value in options.items()}
            if name == DEFAULT:
                self.defaults.update(settings)
                continue
            existing = self.sections.get(name)
            if existing is None:
                self.sections[name] = settings
            else:
                known = self.sections.setdefault(_KNOWN + name, {})
                known.update({key: existing[key] for key in settings if key in existing})
                existing.update(settings)

    def section_names(self) -> list[str]:
        """The sections the files define, in the order first read ([DEFAULT] and [INCLUDES] aside)."""
        return [name for name in self.sections if name != INCLUDES and not name.startswith(_KNOWN)]

    def has_section(self, section: str) -> bool:
        return section == DEFAULT or section in self.sections

    def own_options(self, section: str) -> list[str]:
        """The options a section sets itself (not those of [DEFAULT])."""
        return list(self.defaults if section == DEFAULT else self.sections.get(section, {}))

    def setting(self, section: str, option: str) -> Setting | None:
        """The setting `section` sees for `option`: its own, else [DEFAULT]'s; None if unset."""
        option = option.lower()  # configparser's default: option names are case-insensitive
        if section != DEFAULT:
            own = self.sections.get(section, {}).get(option)
            if own is not None:
                return own
        return self.defaults.get(option)

    def origin(self, section: str, option: str) -> str:
        """The file that set the option (for errors), else the first file read."""
        found = self.setting(section, option)
        if found is not None:
            return found.file
        return str(self.files[0]) if self.files else ""

    def raw(self, section: str, option: str, overrides: dict[str, str] | None = None) -> str | None:
        """The uninterpolated value: an override, the section's own or [DEFAULT]'s; None if unset."""
        if overrides and option.lower() in overrides:
            return overrides[option.lower()]
        found = self.setting(section, option)
        return None if found is None else found.value

    def get(self, section: str, option: str, overrides: dict[str, str] | None = None) -> str | None:
        """The interpolated value of an option (None if it is not set); `overrides` (lower-case
        names) take precedence over the files, like the options a jail passes to its filter.
        A reference that cannot be resolved raises FilterError."""
        if section != DEFAULT and section not in self.sections:
            return None
        value = self.raw(section, option, overrides)
        if value is None:
            return None
        return self.interpolate(section, option, value, overrides or {})

    def interpolate(self, section: str, option: str, value: str, overrides: dict[str, str], depth: int = 1) -> str:
        """`value` with `%%` and `%(name)s` resolved in the context of `section`, so that a
        [DEFAULT] template picks up the section's own values."""
        if "%" not in value:
            return value
        if depth > _MAX_DEPTH:
            raise FilterError(self.origin(section, option), f"[{section}] {option}",
                              f"references nested more than {_MAX_DEPTH} deep (a reference loop?)")
        out: list[str] = []
        size = pos = 0
        while (percent := value.find("%", pos)) >= 0:
            out.append(value[pos:percent])
            following = value[percent + 1:percent + 2]
            if following == "%":
                out.append("%")
                pos = percent + 2
                continue
            reference = _REFERENCE.match(value, percent)
            if following != "(" or reference is None:
                raise FilterError(self.origin(section, option), f"[{section}] {option}",
                                  f"'%' must be followed by '%' or '(name)s', found {value[percent:percent + 12]!r}")
            name = reference.group(1)
            found = self._reference(section, name, overrides)
            if found is None:
                raise FilterError(self.origin(section, option), f"[{section}] {option}",
                                  f"refers to %({name})s, which no file read defines "
                                  f"(read: {', '.join(p.name for p in self.files)})")
            out.append(self.interpolate(section, option, found, overrides, depth + 1))
            size += percent - pos + len(out[-1])
            if size > MAX_VALUE:
                raise FilterError(self.origin(section, option), f"[{section}] {option}",
                                  f"grows beyond {MAX_VALUE:,} characters as its references are resolved "
                                  "(references that repeat each other many times over)")
            pos = reference.end()
        out.append(value[pos:])
        return "".join(out)

    def _reference(self, section: str, name: str, overrides: dict[str, str]) -> str | None:
        if name.lower() == "__name__":
            return section
        direct = self.raw(section, name, overrides)
        if direct is not None or "/" not in name:
            return direct
        # %(section/option)s: another section's raw value, resolved in this section's context;
        # %(known/option)s: the value this section's option had before a later file overrode it;
        # both fall back to [DEFAULT].
        other, _, option = name.partition("/")
        option = option.lower()
        lower = other.lower()
        if lower == "known":
            found = self.sections.get(_KNOWN + section, {}).get(option)
        elif lower == "default":
            found = None
        elif other in self.sections:
            found = self.sections[other].get(option)
        else:
            return None
        found = found if found is not None else self.defaults.get(option)
        return None if found is None else found.value

    def get_qualified(self, section: str, name: str, overrides: dict[str, str]) -> str | None:
        """A value for a `<tag>` lookup: `sec/opt` reads another section (`known/opt` the value
        before an override, then the current one), else the option of `section`."""
        qualified = SECTION_OPTION.match(name) if "/" in name else None
        if qualified is not None:
            other, option = qualified.groups()
            lower = other.lower()
            if lower == "known":
                candidates = [_KNOWN + section, section]
            else:
                candidates = [DEFAULT if lower == "default" else other]
            for candidate in candidates:
                value = self.get(candidate, option)
                if value is not None:
                    return value
        return self.get(section, name, overrides)


def read_filter_config(base: Path) -> Fail2BanConfig:
    """The merged configuration of the filter at `base` (its path without .conf/.local)."""
    files = config_files(base)
    if not files:
        raise FilterError(str(base.with_name(base.name + ".conf")), "", "no such Fail2Ban filter "
                          f"(looked for {base.name}.conf and {base.name}.local in {base.parent})")
    config = Fail2BanConfig(files)
    for name, options in config.sections.items():
        if _CONDITIONAL.match(name):
            raise FilterError(config.origin(name, next(iter(options), "")), f"[{name}]",
                              "conditional sections (NAME?option=value) are not supported in filters (Fail2Ban "
                              "uses them for actions)")
    return config
