"""The multi-line state of a Fail2Ban matcher, and its bound.

Per key (the program that wrote the lines, see `parsers.fail2ban_match`) there are the
buffered lines (`maxlines`) and the failures pending per multi-line id (<F-MLFID>). All keys
of one matcher share one budget of entries and bytes, so that no flood of programs, ids or
long captures can grow it: past the budget the least recently seen programs are forgotten.
A pending failure keeps only the groups the matching and the verdict use, each cut to
`MAX_CAPTURE` characters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

# Fail2Ban keeps a multi-line failure id this long, and this many of them (here: per program).
MLFID_SECONDS = 300.0
MLFID_ENTRIES = 100
# Per matcher: programs with state, pending failures in all, and the bytes of both.
MAX_KEYS = 1024
MAX_PENDING = 10_000
MAX_STATE_BYTES = 4 << 20
# Characters kept of each value of a pending failure, and user names kept (more than one is
# all the matching asks).
MAX_CAPTURE = 256
MAX_USERS = 4
# What a stored line, value or entry costs beyond its characters (object headers, slots).
_LINE_COST = 96
_VALUE_COST = 64
_ENTRY_COST = 256


def _chars(text: str) -> int:
    # A non-ASCII character may take up to four bytes in a str.
    return len(text) if text.isascii() else 4 * len(text)


def short(text: str) -> str:
    return text if len(text) <= MAX_CAPTURE else text[:MAX_CAPTURE]


class Budget:
    """What all the states of one matcher hold."""

    __slots__ = ("bytes", "entries")

    def __init__(self) -> None:
        self.bytes = 0
        self.entries = 0

    def exceeded(self) -> bool:
        return self.bytes > MAX_STATE_BYTES or self.entries > MAX_PENDING


class ProgramState:
    """One program's buffered lines and pending failures, charged to the matcher's budget."""

    __slots__ = ("budget", "lines", "pending", "_line_bytes", "_pending_bytes")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.lines: list[tuple[str, float]] = []
        # mlfid -> (time set, groups, bytes charged)
        self.pending: OrderedDict[str, tuple[float, dict, int]] = OrderedDict()
        self._line_bytes = 0
        self._pending_bytes = 0

    def set_lines(self, lines: list[tuple[str, float]]) -> None:
        size = sum(_chars(text) + _LINE_COST for text, _ in lines)
        self.budget.bytes += size - self._line_bytes
        self._line_bytes = size
        self.lines = lines

    def get(self, mlfid: str, when: float) -> dict | None:
        """The groups pending for this id, unless they are older than MLFID_SECONDS."""
        entry = self.pending.get(mlfid)
        if entry is None:
            return None
        if abs(when - entry[0]) > MLFID_SECONDS:
            self.drop(mlfid)
            return None
        return entry[1]

    def put(self, mlfid: str, when: float, groups: dict) -> None:
        """Keep `groups` as they are until `compact`: the line's matching may still mark them."""
        if len(self.pending) >= MLFID_ENTRIES:
            self.drop(next(iter(self.pending)))
        self.pending[mlfid] = (when, groups, 0)
        self.budget.entries += 1

    def compact(self, mlfid: str, kept: frozenset[str]) -> None:
        """Replace what is pending for this id by the groups in `kept`, cut short, and charge it."""
        entry = self.pending.get(mlfid)
        if entry is None:
            return
        since, groups, charged = entry
        stored = {}
        size = _ENTRY_COST
        # One pass: this runs for every line of a multi-line id.
        for name, value in groups.items():
            if value is None or name not in kept:
                continue
            if value.__class__ is str:
                if len(value) > MAX_CAPTURE:
                    value = value[:MAX_CAPTURE]
                size += _VALUE_COST + (len(value) if value.isascii() else 4 * len(value))
            else:
                size += _VALUE_COST
            stored[name] = value
        users = groups.get("users")
        if users:
            kept_users = stored["users"] = {short(user) for user in list(users)[:MAX_USERS]}
            for user in kept_users:
                size += _VALUE_COST + _chars(user)
        self.pending[mlfid] = (since, stored, size)
        self._pending_bytes += size - charged
        self.budget.bytes += size - charged

    def drop(self, mlfid: str) -> None:
        entry = self.pending.pop(mlfid, None)
        if entry is not None:
            self._pending_bytes -= entry[2]
            self.budget.bytes -= entry[2]
            self.budget.entries -= 1

    def release(self) -> None:
        """Give back all this state holds (it is being forgotten)."""
        self.budget.bytes -= self._line_bytes + self._pending_bytes
        self.budget.entries -= len(self.pending)
        self.lines, self.pending = [], OrderedDict()
        self._line_bytes = self._pending_bytes = 0


class States:
    """The states of one matcher by key, least recently seen first, within one budget."""

    def __init__(self) -> None:
        self.budget = Budget()
        self._states: OrderedDict[Hashable, ProgramState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def values(self) -> Iterable[ProgramState]:
        return self._states.values()

    def get(self, key: Hashable) -> ProgramState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = ProgramState(self.budget)
            self.enforce(state)
        else:
            self._states.move_to_end(key)
        return state

    def enforce(self, current: ProgramState) -> None:
        """Forget the least recently seen programs (then `current`'s oldest pending failures)
        until the budget holds."""
        while len(self._states) > MAX_KEYS or self.budget.exceeded():
            key, oldest = next(iter(self._states.items()))
            if oldest is not current:
                del self._states[key]
                oldest.release()
            elif current.pending:
                current.drop(next(iter(current.pending)))
            else:
                break  # its own lines alone: at most maxlines cut lines, bounded by the loader
