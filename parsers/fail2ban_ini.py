"""Fail2Ban's configuration dialect: the files one filter is read from, merged in Fail2Ban's
order, and values with their `%(name)s` references resolved.

A filter NAME in a directory is read from NAME.conf, NAME.d/*.conf, NAME.local and
NAME.d/*.local, each preceded by the files its `[INCLUDES] before` names and followed by
those of `after` (relative to the including file; an included X.conf brings X.local along).
Later files override single keys; the value a key had before being overridden stays
reachable as `%(known/KEY)s`. Files that do not exist are skipped, as Fail2Ban skips them.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

from parsers.filter import FilterError

DEFAULT = "DEFAULT"
_INCLUDES = "INCLUDES"
_MAX_DEPTH = 10  # nested %(...)s references, as Python's configparser allows
_REFERENCE = re.compile(r"%\(([^)]+)\)s")
# A section whose name carries a condition ("Init?family=inet6") applies to some actions.
_CONDITIONAL = re.compile(r"^(\w+)(\?.+)$")
# `section/option` in <tag> lookups.
SECTION_OPTION = re.compile(r"^([\w\-]+)/([^\s>]+)$")


def _option_name(name: str) -> str:
    # configparser's default: option names are case-insensitive, stored in lower case.
    return name.lower()


def filter_files(base: Path) -> list[Path]:
    """The files Fail2Ban reads for the filter at `base` (a path without its suffix)."""
    candidates = [base.with_name(base.name + ".conf")]
    drop_in = base.with_name(base.name + ".d")
    if drop_in.is_dir():
        candidates += sorted(drop_in.glob("*.conf"))
    candidates.append(base.with_name(base.name + ".local"))
    if drop_in.is_dir():
        candidates += sorted(drop_in.glob("*.local"))
    return [path for path in candidates if path.is_file()]


def _read_one(path: Path) -> configparser.RawConfigParser:
    # The default section gets a name no file uses, so [DEFAULT] is read as a section of its
    # own and each section's options are only its own.
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), default_section="\x00",
                                          interpolation=None, strict=True)
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream, str(path))
    except OSError as error:
        raise FilterError(str(path), "", f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise FilterError(str(path), "", f"not UTF-8 text (bad byte at offset {error.start})") from None
    except configparser.Error as error:
        reason = " ".join(str(error).replace(repr(str(path)), "").split())
        raise FilterError(str(path), "", f"invalid syntax: {reason}") from None
    return parser


@dataclass(slots=True)
class _File:
    path: Path
    sections: dict[str, dict[str, str]]


class Fail2BanConfig:
    """The merged sections of a filter's files and the `%(...)s` interpolation over them."""

    def __init__(self, files: list[Path]) -> None:
        self.files: list[Path] = []
        self.defaults: dict[str, str] = {}
        self.sections: dict[str, dict[str, str]] = {}
        self.origins: dict[tuple[str, str], str] = {}  # (section, option) -> the file that set it
        for path in files:
            for included in self._with_includes(path, []):
                self._merge(included)

    def _with_includes(self, path: Path, chain: list[Path]) -> list[_File]:
        """`path` parsed, with what it includes before and after it, depth first."""
        if not path.is_file():
            return []
        parser = _read_one(path)
        own = _File(path, {name: dict(parser.items(name)) for name in parser.sections()})
        before: list[_File] = []
        after: list[_File] = []
        includes = own.sections.get(_INCLUDES, {})
        for option, target in (("before", before), ("after", after)):
            for entry in includes.get(option, "").split("\n"):
                entry = entry.strip()
                if not entry:
                    continue
                resource = Path(entry) if Path(entry).is_absolute() else path.parent / entry
                if resource in chain or resource == path:  # an include loop
                    continue
                local = resource.with_suffix(".local")
                for candidate in [resource] + ([local] if local != resource else []):
                    target.extend(self._with_includes(candidate, chain + [path]))
        return before + [own] + after

    def _merge(self, parsed: _File) -> None:
        if parsed.path not in self.files:
            self.files.append(parsed.path)
        file = str(parsed.path)
        for name, options in parsed.sections.items():
            if _CONDITIONAL.match(name):
                raise FilterError(file, f"[{name}]", "conditional sections (NAME?option=value) are not supported "
                                                     "in filters (Fail2Ban uses them for actions)")
            if name == DEFAULT:
                self.defaults.update(options)
            else:
                existing = self.sections.get(name)
                if existing is None:
                    self.sections[name] = dict(options)
                else:
                    # What is overridden stays reachable as %(known/option)s.
                    known = self.sections.setdefault(f"KNOWN/{name}", {})
                    known.update({key: existing[key] for key in options if key in existing})
                    existing.update(options)
            for key in options:
                self.origins[(name, key)] = file

    def has_section(self, section: str) -> bool:
        return section == DEFAULT or section in self.sections

    def own_options(self, section: str) -> list[str]:
        """The options a section sets itself (not those of [DEFAULT])."""
        return list(self.defaults if section == DEFAULT else self.sections.get(section, {}))

    def origin(self, section: str, option: str) -> str:
        """The file that set the option (for errors), else the first file read."""
        key = (section, _option_name(option))
        if key in self.origins:
            return self.origins[key]
        if (DEFAULT, key[1]) in self.origins:
            return self.origins[(DEFAULT, key[1])]
        return str(self.files[0]) if self.files else ""

    def raw(self, section: str, option: str, overrides: dict[str, str] | None = None) -> str | None:
        """The uninterpolated value: an override, the section's own or [DEFAULT]'s; None if unset."""
        option = _option_name(option)
        if overrides and option in overrides:
            return overrides[option]
        if section != DEFAULT:
            own = self.sections.get(section, {})
            if option in own:
                return own[option]
        return self.defaults.get(option)

    def get(self, section: str, option: str, overrides: dict[str, str] | None = None) -> str | None:
        """The interpolated value of an option (None if it is not set); `overrides` (lower-case
        names) take precedence over the files, like the options a jail passes to its filter."""
        if section != DEFAULT and section not in self.sections:
            return None
        value = self.raw(section, option, overrides)
        if value is None:
            return None
        return self.interpolate(section, option, value, overrides or {})

    def interpolate(self, section: str, option: str, value: str, overrides: dict[str, str], depth: int = 0) -> str:
        """`value` with `%%` and `%(name)s` resolved in the context of `section`."""
        if "%" not in value:
            return value
        if depth > _MAX_DEPTH:
            raise FilterError(self.origin(section, option), f"[{section}] {option}",
                              f"references nested more than {_MAX_DEPTH} deep (a reference loop?)")
        out: list[str] = []
        pos = 0
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
            pos = reference.end()
        out.append(value[pos:])
        return "".join(out)

    def _reference(self, section: str, name: str, overrides: dict[str, str]) -> str | None:
        if name == "__name__":
            return section
        direct = self.raw(section, name, overrides)
        if direct is not None or "/" not in name:
            return direct
        # %(section/option)s: another section's raw value, resolved in this section's context;
        # %(known/option)s: the value this section's option had before a later file overrode it;
        # both fall back to [DEFAULT].
        other, _, option = name.partition("/")
        option = _option_name(option)
        lower = other.lower()
        if lower == "known":
            value = self.sections.get(f"KNOWN/{section}", {}).get(option)
        elif lower == "default":
            value = None
        elif other in self.sections:
            value = self.sections[other].get(option)
        else:
            return None
        return value if value is not None else self.defaults.get(option)

    def get_qualified(self, section: str, name: str, overrides: dict[str, str]) -> str | None:
        """A value for a `<tag>` lookup: `sec/opt` reads another section (`known/opt` the value
        before an override, then the current one), else the option of `section`."""
        qualified = SECTION_OPTION.match(name) if "/" in name else None
        if qualified is not None:
            other, option = qualified.groups()
            lower = other.lower()
            if lower == "known":
                candidates = [f"KNOWN/{section}", section]
            else:
                candidates = [DEFAULT if lower == "default" else other]
            for candidate in candidates:
                value = self.get(candidate, option)
                if value is not None:
                    return value
        return self.get(section, name, overrides)


def read_filter_config(base: Path) -> Fail2BanConfig:
    """The merged configuration of the filter at `base` (its path without .conf/.local)."""
    files = filter_files(base)
    if not files:
        raise FilterError(str(base.with_name(base.name + ".conf")), "", "no such Fail2Ban filter "
                          f"(looked for {base.name}.conf and {base.name}.local in {base.parent})")
    return Fail2BanConfig(files)
