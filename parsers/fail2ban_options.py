"""A Fail2Ban filter's options for one set of jail parameters: the `[Definition]` keys a
filter uses, with `%(name)s` references and then `<name>` tags resolved as Fail2Ban does.

Parameters (`mode`, `logtype`, or any other, as in `sshd[mode=aggressive]`) take precedence
over the files wherever they are referenced. `[Init]` values join them (as parameters
that the jail's own do override), and each is also reachable as `known/NAME`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from parsers.fail2ban_ini import MAX_VALUE, Fail2BanConfig
from parsers.errors import FilterError

DEFINITION = "Definition"
# The [Definition] keys Fail2Ban reads for a filter; any other key is only there to be referenced.
FILTER_KEYS = ("usedns", "prefregex", "ignoreregex", "failregex", "maxlines", "datepattern", "journalmatch")
# Also resolved, for jailwarden's use: the program name (syslog routing) and the mode.
_EXTRA_KEYS = ("_daemon", "mode")
_TAG = re.compile(r"<([^ <>]+)>")
_MAX_REPLACEMENTS = 25  # of one tag within one value: more means the tags refer to each other
_CONDITIONAL = re.compile(r"^(\w+)(\?.+)$")


@dataclass(slots=True, frozen=True)
class FilterOptions:
    """The resolved values (None: not set) and, for errors, the file each came from."""

    values: Mapping[str, str | None]
    origins: Mapping[str, str]
    parameters: Mapping[str, str]

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def origin(self, key: str) -> str:
        return self.origins.get(key, "")


def resolve_options(config: Fail2BanConfig, parameters: Mapping[str, str]) -> FilterOptions:
    """The filter's options with `parameters` (the jail's `name[key=value]` options) applied."""
    if not config.has_section(DEFINITION):
        raise FilterError(str(config.files[0]), "[Definition]", "missing: a Fail2Ban filter defines its "
                                                                 "failregex in a [Definition] section")
    overrides = {key.lower(): value for key, value in parameters.items()}
    combined: dict[str, str] = {}
    origins: dict[str, str] = {}
    for key in FILTER_KEYS + _EXTRA_KEYS:
        if key in overrides:
            continue
        value = config.get(DEFINITION, key, overrides)
        if value is not None:
            combined[key] = value
            origins[key] = config.origin(DEFINITION, key)
    # [Init] values are parameters with the lowest precedence, each also kept as known/NAME.
    initial = dict(parameters)
    for option in config.own_options("Init") if config.has_section("Init") else ():
        if option.startswith("known/"):
            continue
        value = config.get("Init", option)
        initial[f"known/{option}"] = value
        initial.setdefault(option, value)
    combined.update(initial)
    for key in parameters:
        origins[key] = "jail parameters"
    cache: dict[str, str | None] = {}

    def definition_value(name: str) -> str | None:
        if name not in cache:
            cache[name] = config.get_qualified(DEFINITION, name, overrides)
        return cache[name]

    resolved = substitute_tags(combined, definition_value, lambda key: origins.get(key, str(config.files[0])))
    values = {key: resolved.get(key) for key in FILTER_KEYS + _EXTRA_KEYS}
    return FilterOptions(values, origins, dict(parameters))


def substitute_tags(values: dict[str, str], lookup: Callable[[str], str | None],
                    origin: Callable[[str], str]) -> dict[str, str]:
    """Each value with its `<name>` tags replaced by the value of that name (another key of
    `values`, else `lookup(name)`), repeatedly, until none that can be replaced is left.
    Tags with no value (`<HOST>`, `<F-USER>`) stay as they are."""
    result = dict(values)
    ignore = {key for key in result if _CONDITIONAL.match(key)}
    finished: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    again = True
    while again:
        again = False
        for key in list(result):
            if key in ignore or key in finished:
                continue
            value = original = result[key]
            replaced = counts.setdefault(key, {})
            found = _TAG.search(value)
            while found is not None:
                tag = found.group(1)
                if tag in ignore:
                    found = _TAG.search(value, found.end())
                    continue
                if tag == key or replaced.get(tag, 0) >= _MAX_REPLACEMENTS:
                    raise FilterError(origin(key), key, f"<{tag}> refers back to itself "
                                                        "(tags that refer to each other cannot be resolved)")
                replacement = result.get(tag)
                if replacement is None:
                    replacement = lookup(tag)
                if replacement is None:
                    found = _TAG.search(value, found.end())
                    continue
                pattern = f"<{tag}>"
                if len(value) + value.count(pattern) * (len(replacement) - len(pattern)) > MAX_VALUE:
                    raise FilterError(origin(key), key, f"grows beyond {MAX_VALUE:,} characters as its tags are "
                                                        "replaced (tags that repeat each other many times over)")
                value = value.replace(pattern, replacement)
                replaced[tag] = replaced.get(tag, 0) + 1
                # The replacement's own tags are next.
                found = _TAG.search(value, found.start())
            if value != original:
                again = again or _TAG.search(value) is not None
                result[key] = value
            if "<" not in value:
                finished.add(key)
    return result
