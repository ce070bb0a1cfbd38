"""Fail2Ban's matching of one line (date already cut out) against a filter's regexes.

The order is Fail2Ban's: an early ignoreregex check on the whole buffer (when there are
fewer ignoreregexes than failregexes minus two), the prefregex (whose <F-CONTENT> the
failregexes then see instead of the line), each failregex searched in turn, the first match
checked against the ignoreregexes, and multi-line failure ids (<F-MLFID>) merged with what
earlier lines of the same id said. Regexes are searched, not matched: `^` anchors them.

State (the buffer of `maxlines` lines, the failures pending per <F-MLFID>) is kept per key,
the program that wrote the lines and whether that writer is proven (`parsers.fail2ban_filter`),
so that one program's lines never complete another's and a forged entry never touches what a
trusted one left; all keys share one bounded budget (`parsers.fail2ban_state`).
"""

from __future__ import annotations

from typing import Hashable, NamedTuple

from parsers.fail2ban_regex import FAILURE_ID_GROUPS, Fail2BanRegex, buffer_text, split_lines
from parsers.fail2ban_state import ProgramState, States, short

# The groups a pending failure keeps besides the regexes' data: the address, and the marks
# the merging of later lines reads.
_KEPT_GROUPS = frozenset(FAILURE_ID_GROUPS) | {"cidr", "nofail", "mlfgained", "mlfpending"}


class Outcome(NamedTuple):
    """What one line came to: kind is "fail" (with the groups naming the failure), "nofail"
    (matched, but said to be no failure), "pending" (a failure of a multi-line id whose
    address is not known yet), "ignored" or "miss"."""

    kind: str
    groups: dict | None = None


MISS = Outcome("miss")
IGNORED = Outcome("ignored")


class LineMatcher:
    """The compiled regexes of one filter and the per-program state of its multi-line parts."""

    def __init__(self, failregex: list[Fail2BanRegex], ignoreregex: list[Fail2BanRegex],
                 prefregex: Fail2BanRegex | None, maxlines: int) -> None:
        self.failregex = failregex
        self.ignoreregex = ignoreregex
        self.prefregex = prefregex
        self.maxlines = maxlines
        self._early_ignore = bool(ignoreregex) and len(ignoreregex) < len(failregex) - 2
        self._states = States()
        regexes = [r for r in [prefregex, *failregex] if r is not None]
        self._kept = _KEPT_GROUPS | {group for r in regexes for group in r.captures} | {
            base for r in regexes for _, base in r.alternates}

    def process(self, text: str, when: float, key: Hashable = "") -> Outcome:
        """The outcome of one line (its date cut out), written at `when` by program `key`."""
        multiline = self.maxlines > 1
        state = None
        if multiline:
            state = self._states.get(key)
            state.set_lines((state.lines + [(text, when)])[-self.maxlines:])
            original = state.lines
            buffer: str | None = buffer_text([entry[0] for entry in original])
        else:
            original = [(text, when)]
            buffer = text + "\n"
        outcome, mlfid, state = self._match(buffer, original, when, state, key)
        if mlfid is not None:
            state.compact(mlfid, self._kept)
        if state is not None:
            self._states.enforce(state)
        return outcome

    def _match(self, buffer: str, original: list, when: float, state: ProgramState | None,
               key: Hashable) -> tuple[Outcome, str | None, ProgramState | None]:
        """The outcome, the multi-line id whose pending failure the line touched, and the state
        of `key` if the line used it."""
        multiline = state is not None
        working = original
        if self._early_ignore and any(r.regex.search(buffer) for r in self.ignoreregex):
            return IGNORED, None, state
        before: dict = {}
        if self.prefregex is not None:
            m = self.prefregex.regex.search(buffer)
            if m is None:
                return MISS, None, state
            before = self.prefregex.groups(m)
            content = before.pop("content", None)
            if content:
                working = [(content, when)]
                buffer = None
                if multiline:
                    state.set_lines(working)
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
                        state.set_lines(left)
                    return IGNORED, None, state
            if multiline:
                state.set_lines(left)
            groups = {**before, **regex.groups(m)} if before else regex.groups(m)
            mlfid = groups.get("mlfid")
            if mlfid is not None:
                state = state or self._states.get(key)
                groups = self._merge(state, mlfid, groups, when)
                if groups.get("nofail"):
                    return Outcome("nofail", groups), mlfid, state
            if all(groups.get(name) is None for name in ("ip4", "ip6", "dns", "fid")):
                # A failure of this connection whose address a later line will give.
                groups["mlfpending"] = 1
                return Outcome("pending", groups), mlfid, state
            return Outcome("fail", groups), mlfid, state
        return MISS, None, state

    def _merge(self, state: ProgramState, mlfid: str, groups: dict, when: float) -> dict:
        """The groups of this line merged with what earlier lines of the same multi-line id
        left, and the id's entry kept, updated or forgotten, as Fail2Ban does."""
        gained = bool(groups.get("mlfgained"))
        if gained and not groups.get("nofail"):
            groups["nofail"] = groups["mlfgained"]
        forget = bool(groups.pop("mlfforget", None))
        user = groups.get("user")
        cached = state.get(mlfid, when)
        if cached is not None:
            users = _add_user(cached, user)
            cached.pop("nofail", None)
            cached.pop("mlfgained", None)
            if gained:
                cached.pop("mlfpending", None)  # a success ends what was pending
            cached.update((name, value) for name, value in groups.items() if value is not None)
            groups = cached
            if forget:
                state.drop(mlfid)
        else:
            users = _add_user(groups, user) if not forget else groups.get("users")
            if not forget:
                state.put(mlfid, when, groups)
        # A failure pending for this id, or a second user name, makes it a failure after all.
        if groups.pop("mlfpending", 0) or (users and len(users) > 1):
            groups.pop("nofail", None)
            groups.pop("mlfgained", None)
        return groups


def _add_user(groups: dict, user: str | None) -> set | None:
    users = groups.get("users")
    if user:
        if not users:
            users = groups["users"] = set()
        users.add(short(user))  # as kept: a long name compares equal to itself later
    return users
