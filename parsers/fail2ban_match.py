"""Fail2Ban's matching of one line (date already cut out) against a filter's regexes.

The order is Fail2Ban's: an early ignoreregex check on the whole buffer (when there are
fewer ignoreregexes than failregexes minus two), the prefregex (whose <F-CONTENT> the
failregexes then see instead of the line), each failregex searched in turn, the first match
checked against the ignoreregexes, and multi-line failure ids (<F-MLFID>) merged with what
earlier lines of the same id said. Regexes are searched, not matched: `^` anchors them.

State (the buffer of `maxlines` lines, the failures pending per <F-MLFID>) is kept per key,
the program that wrote the lines, so that one program's lines never complete another's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, NamedTuple

from parsers.fail2ban_regex import Fail2BanRegex, buffer_text, split_lines

# Fail2Ban keeps a multi-line failure id this long and this many of them.
MLFID_SECONDS = 300.0
MLFID_ENTRIES = 100
# Programs with buffered state; the least recently seen is dropped beyond this.
MAX_KEYS = 1024


class Outcome(NamedTuple):
    """What one line came to: kind is "fail" (with the groups naming the failure), "nofail"
    (matched, but said to be no failure), "pending" (a failure of a multi-line id whose
    address is not known yet), "ignored" or "miss"."""

    kind: str
    groups: dict | None = None


MISS = Outcome("miss")
IGNORED = Outcome("ignored")


@dataclass(slots=True)
class _ProgramState:
    lines: list[tuple[str, float]] = field(default_factory=list)
    pending: OrderedDict = field(default_factory=OrderedDict)  # mlfid -> (time set, groups)


class LineMatcher:
    """The compiled regexes of one filter and the per-program state of its multi-line parts."""

    def __init__(self, failregex: list[Fail2BanRegex], ignoreregex: list[Fail2BanRegex],
                 prefregex: Fail2BanRegex | None, maxlines: int) -> None:
        self.failregex = failregex
        self.ignoreregex = ignoreregex
        self.prefregex = prefregex
        self.maxlines = maxlines
        self._early_ignore = bool(ignoreregex) and len(ignoreregex) < len(failregex) - 2
        self._states: OrderedDict[Hashable, _ProgramState] = OrderedDict()

    def _state(self, key: Hashable) -> _ProgramState:
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= MAX_KEYS:
                self._states.popitem(last=False)
            state = self._states[key] = _ProgramState()
        else:
            self._states.move_to_end(key)
        return state

    def process(self, text: str, when: float, key: Hashable = "") -> Outcome:
        """The outcome of one line (its date cut out), written at `when` by program `key`."""
        multiline = self.maxlines > 1
        state = None
        if multiline:
            state = self._state(key)
            state.lines.append((text, when))
            del state.lines[:-self.maxlines]
            original = list(state.lines)
            buffer: str | None = buffer_text([entry[0] for entry in original])
        else:
            original = [(text, when)]
            buffer = text + "\n"
        working = original
        if self._early_ignore and any(r.regex.search(buffer) for r in self.ignoreregex):
            return IGNORED
        before: dict = {}
        if self.prefregex is not None:
            m = self.prefregex.regex.search(buffer)
            if m is None:
                return MISS
            before = self.prefregex.groups(m)
            content = before.pop("content", None)
            if content:
                working = [(content, when)]
                buffer = None
                if multiline:
                    state.lines = working
        for regex in self.failregex:
            if buffer is None:
                buffer = buffer_text([entry[0] for entry in working])
            literal = regex.literal
            if literal is not None and literal not in buffer:
                continue
            m = regex.regex.search(buffer)
            if m is None:
                continue
            used, left = split_lines(m, regex.skiplines, original)
            if self.ignoreregex:
                checked = buffer_text([entry[0] for entry in used]) if multiline else buffer
                if any(r.regex.search(checked) for r in self.ignoreregex):
                    if multiline:
                        state.lines = left
                    return IGNORED
            if multiline:
                state.lines = left
            groups = {**before, **regex.groups(m)} if before else regex.groups(m)
            mlfid = groups.get("mlfid")
            if mlfid is not None:
                groups = self._merge(state or self._state(key), mlfid, groups, when)
                if groups.get("nofail"):
                    return Outcome("nofail", groups)
            if all(groups.get(name) is None for name in ("ip4", "ip6", "dns", "fid")):
                # A failure of this connection whose address a later line will give.
                groups["mlfpending"] = 1
                return Outcome("pending", groups)
            return Outcome("fail", groups)
        return MISS

    def _merge(self, state: _ProgramState, mlfid: str, groups: dict, when: float) -> dict:
        """The groups of this line merged with what earlier lines of the same multi-line id
        left, and the id's entry kept, updated or forgotten, as Fail2Ban does."""
        gained = bool(groups.get("mlfgained"))
        if gained and not groups.get("nofail"):
            groups["nofail"] = groups["mlfgained"]
        forget = bool(groups.pop("mlfforget", None))
        user = groups.get("user")
        cached = self._pending(state, mlfid, when)
        if cached is not None:
            users = _add_user(cached, user)
            cached.pop("nofail", None)
            cached.pop("mlfgained", None)
            if gained:
                cached.pop("mlfpending", None)  # a success ends what was pending
            cached.update((name, value) for name, value in groups.items() if value is not None)
            groups = cached
            if forget:
                state.pending.pop(mlfid, None)
        else:
            users = _add_user(groups, user) if not forget else groups.get("users")
            if not forget:
                if len(state.pending) >= MLFID_ENTRIES:
                    state.pending.popitem(last=False)
                state.pending[mlfid] = (when, groups)
        # A failure pending for this id, or a second user name, makes it a failure after all.
        if groups.pop("mlfpending", 0) or (users and len(users) > 1):
            groups.pop("nofail", None)
            groups.pop("mlfgained", None)
        return groups

    @staticmethod
    def _pending(state: _ProgramState, mlfid: str, when: float) -> dict | None:
        entry = state.pending.get(mlfid)
        if entry is None:
            return None
        since, groups = entry
        if abs(when - since) > MLFID_SECONDS:
            del state.pending[mlfid]
            return None
        return groups


def _add_user(groups: dict, user: str | None) -> set | None:
    users = groups.get("users")
    if user:
        if not users:
            users = groups["users"] = set()
        users.add(user)
    return users
