"""Adversarial messages for a regex: long lines shaped to make a backtracking engine work hard.

This module only builds the messages; timing a filter's regexes on them is
`agent.regexprobe`'s job (parsers have no clock).

Where a backtracking engine (Python's `re`) spends its time: a repeat that can take many
characters (`.*`, `\\S+`, `(?:[^"\\\\]|\\\\.)*`) tries every way of taking them each time what
follows it fails, and when what follows is itself a repeat, or the repeat is nested in
another one, those tries multiply. A line costs most when it leads the regex up to a repeat,
feeds the repeat a long run of what it accepts, keeps looking as if the rest were about to
match, and then fails at the very end. So the messages are built from the regex's own
structure (`regex_shapes`): for each repeat that can take more than a few characters, a
prefix that matches everything before it (an example of the text the regex expects there),
then a long run of

- each character the repeat accepts that means something in the text that must follow it
  (a separator, a bracket, a quote, a colon or dot of an address), plus a letter, a digit, a
  space, a dot and a colon;
- the repeat's own example (`1.` for `(?:\\d+\\.)+`, each alternative of its body);
- the text that must follow the repeat, over and over (" from " + address + " port 1": the
  regex finds what it is looking for everywhere and must try each), alone and after a letter;

each ending in a newline and a letter (`.` does not cross the newline, so a `.*$` fails only
there, after every earlier try), and the single characters also in the text that completes a
match; and every regex gets its whole example followed by such a run. Lines of a sample log
are stretched the same way (`sample_shapes`): each of their variable words (a user name, a
URL, a user agent; any word the regexes do not spell out and that is no number or address)
grown to the full length by repeating it or the rest of the line after it, ending in the
rest of the line (a matching line whose attacker-controlled field is huge) or in a newline
(a line that fails at the very end).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# re's own parser gives the pattern's structure (as in parsers.regexlits). It is private:
# should a later Python move it, only the shapes that need the structure are lost.
try:
    from re import _constants as _c, _parser as _p
except ImportError:  # pragma: no cover - no such Python yet
    _c = _p = None

# Characters tried in every repeat that accepts them, besides the regex's own punctuation and
# the first character of what follows the repeat: a word, a number, a gap, the pieces of an
# address.
_ALWAYS = "a1 .:"
# Preferred example characters for a character class, in order.
_PREFERRED = "a1 .:-_/=,;@[]()\"'"
# Longest text taken from what follows a repeat (a unit of its run).
_CONTINUATION = 64
# A bounded repeat up to this many takes too few characters to matter alone (`\d{1,3}`,
# `[a-z]{2}`); nested in a longer repeat, that one is probed.
_SHORT_REPEAT = 32
# What ends a run that should fail late: a newline, which `.` does not cross (so every
# `.*...$` fails, and only at the end), then a letter, which keeps `$` from matching before it.
_ENDING = "\na"
_BRANCHES = 8  # alternatives of one alternation followed; the rest are rarely different in kind
_SAMPLE_WORDS = 4  # variable words stretched per sample message
# Words no attacker chooses the shape of (the regexes' own lines stretch addresses and numbers).
_NUMBER_OR_ADDRESS = re.compile(r"[^A-Za-z]*|\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?[:,;]?")


@dataclass(slots=True, frozen=True)
class Shape:
    """A message of any length: `prefix`, `unit` repeated (and cut) to the length asked, `suffix`."""

    label: str
    prefix: str
    unit: str
    suffix: str = ""
    sample: str = ""  # the sample message it stretches, if it is made of one

    @property
    def fixed(self) -> int:
        """Characters of the message that are not the run."""
        return len(self.prefix) + len(self.suffix)

    def message(self, run: int) -> str:
        """The message with a run of `run` characters."""
        return self.prefix + (self.unit * (run // len(self.unit) + 1))[:run] + self.suffix


@dataclass(slots=True, frozen=True)
class _Cut:
    prefix: str  # text matching the regex up to the repeat
    body: list  # the repeat's parsed body
    rest: str  # example text of what follows the repeat
    flags: int


def regex_shapes(pattern: re.Pattern[str]) -> list[Shape]:
    """The adversarial shapes for one compiled regex (none if its structure cannot be read)."""
    if _p is None:
        return []
    try:
        parsed = _p.parse(pattern.pattern, pattern.flags)
    except (re.error, RecursionError):
        return []
    walker = _Walker(parsed.state.flags)
    walker.walk(list(parsed), "", "", parsed.state.flags)
    shapes: dict[tuple[str, str, str], Shape] = {}

    def add(label: str, prefix: str, unit: str, suffix: str) -> None:
        if unit and (prefix, unit, suffix) not in shapes:
            shapes[prefix, unit, suffix] = Shape(label, prefix, unit, suffix)

    # The regex's whole example with junk after it: a line for every regex, repeats or not.
    whole = walker.example(list(parsed))
    add(f"{_short(whole)}, then 'a' repeated, then a newline", whole, "a", _ENDING)
    for cut in walker.cuts:
        rest = cut.rest[:_CONTINUATION]
        # The characters that make a run costly are those of what follows the repeat: each
        # one in the run is a place where the rest might begin.
        significant = set(_ALWAYS) | {ch for ch in rest if not ch.isalnum()} | set(rest[:1])
        chars = [ch for ch in sorted(significant) if _seq_first(cut.body, ch, cut.flags)]
        examples = {walker.example(branch) for branch in _branches(cut.body)} | {walker.example(cut.body)}
        word = rest.split(" ", 2)[1] if rest.startswith(" ") and rest.count(" ") > 1 else ""
        units = [(repr(ch), ch) for ch in chars]
        units += [(f"example {example!r}", example) for example in sorted(examples) if len(example) > 1]
        units += [(f"what follows {text!r}", text) for text in dict.fromkeys((rest, f" {word} " if word else ""))]
        units += [(f"'a' + what follows {rest!r}", "a" + rest)] if rest else []
        at = f"after {_short(cut.prefix)}"
        for name, unit in units:
            add(f"{at}: {name} repeated, then a newline", cut.prefix, unit, _ENDING)
        for name, unit in units[:len(chars)]:
            add(f"{at}: {name} repeated, then what follows", cut.prefix, unit, cut.rest)
    return list(shapes.values())


def sample_shapes(messages: Iterable[str], fixed_words: set[str]) -> list[Shape]:
    """Shapes made of real messages: each word not in `fixed_words` (the regexes' own text) nor
    a number or an address, stretched by repeating it or the rest of the message after it,
    with the rest kept (the line still matches if it did) or a newline (it fails at the end)."""
    shapes: dict[tuple[str, str, str], Shape] = {}
    skeletons = set()
    for message in messages:
        words = [m for m in re.finditer(r"\S+", message)
                 if m.group() not in fixed_words and not _NUMBER_OR_ADDRESS.fullmatch(m.group())]
        # Messages that differ only in their variable words stretch the same way.
        skeleton = re.sub(r"\S+", lambda m: m.group() if m.group() in fixed_words else "~", message)
        if skeleton in skeletons:
            continue
        skeletons.add(skeleton)
        for m in words[:_SAMPLE_WORDS]:
            prefix, word, rest = message[:m.end()], m.group(), message[m.end():]
            label = f"sample {_short(message)}: {word!r}"
            units = [("repeated", word)] + ([("+ rest of the line repeated", rest)] if rest else [])
            for name, unit in units:
                for suffix, ending in ((rest, ", rest kept"), (_ENDING, ", then a newline")):
                    if (prefix, unit, suffix) not in shapes:
                        shapes[prefix, unit, suffix] = Shape(f"{label} {name}{ending}", prefix, unit, suffix,
                                                             message)
    return list(shapes.values())


def literal_words(pattern: re.Pattern[str]) -> set[str]:
    """The words of a regex's literal text ("Failed", "from", "port"...), which a sample line
    shares with every other line the regex matches and so are not the attacker's."""
    if _p is None:
        return set()
    try:
        parsed = _p.parse(pattern.pattern, pattern.flags)
    except (re.error, RecursionError):
        return set()
    runs: list[str] = []
    _literal_runs(list(parsed), runs, [])
    return {word for run in runs for word in run.split()}


def _literal_runs(seq: list, runs: list[str], current: list[str]) -> None:
    for op, av in seq:
        if op is _c.LITERAL:
            current.append(chr(av))
            continue
        runs.append("".join(current))
        current.clear()
        for sub in _children(op, av):
            _literal_runs(sub, runs, current)
            runs.append("".join(current))
            current.clear()
    runs.append("".join(current))
    current.clear()


def _short(text: str, width: int = 40) -> str:
    return repr(text) if len(text) <= width else repr(text[:width - 3] + "...")


_REPEATS = () if _c is None else (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT)


def _children(op: object, av: object) -> list[list]:
    """The sub-sequences of one parsed item."""
    if op in _REPEATS:
        return [list(av[2])]
    if op is _c.SUBPATTERN:
        return [list(av[3])]
    if op is _c.ATOMIC_GROUP:
        return [list(av)]
    if op is _c.BRANCH:
        return [list(branch) for branch in av[1]]
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [list(av[1])]
    if op is _c.GROUPREF_EXISTS:
        return [list(branch) for branch in av[1:] if branch is not None]
    return []


def _branches(body: list) -> list[list]:
    """The alternatives of a repeat's body, seen through plain groups."""
    while len(body) == 1 and body[0][0] in (_c.SUBPATTERN, _c.ATOMIC_GROUP):
        op, av = body[0]
        body = list(av[3] if op is _c.SUBPATTERN else av)
    if len(body) == 1 and body[0][0] is _c.BRANCH:
        return [list(branch) for branch in body[0][1][1][:_BRANCHES]]
    return [body]


class _Walker:
    """Finds every repeat of a parsed regex with an example of the text before and after it."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.cuts: list[_Cut] = []
        self._groups: dict[int, str] = {}

    def walk(self, seq: list, prefix: str, tail: str, flags: int) -> None:
        for index, (op, av) in enumerate(seq):
            here = prefix + self.example(seq[:index])
            rest = self.example(seq[index + 1:]) + tail
            if op in _REPEATS:
                low, high, body = av
                if high == _c.MAXREPEAT or high > _SHORT_REPEAT:
                    self.cuts.append(_Cut(here, list(body), rest, flags))
                self.walk(list(body), here, rest, flags)
            elif op is _c.SUBPATTERN:
                self.walk(list(av[3]), here, rest, (flags | av[1]) & ~av[2])
            elif op is _c.BRANCH:
                for branch in av[1][:_BRANCHES]:
                    self.walk(list(branch), here, rest, flags)
            else:
                for sub in _children(op, av):
                    self.walk(sub, here, rest, flags)

    def example(self, seq: list) -> str:
        """Text that matches `seq` (as far as a quick guess goes: look-arounds are not honoured)."""
        parts = []
        for op, av in seq:
            if op is _c.LITERAL:
                parts.append(chr(av))
            elif op is _c.NOT_LITERAL:
                parts.append("a" if chr(av) != "a" else "b")
            elif op is _c.ANY:
                parts.append("a")
            elif op is _c.IN:
                parts.append(next((ch for ch in _PREFERRED if _in_accepts(av, ch, 0)), _first_listed(av)))
            elif op in _REPEATS:
                low, high, body = av
                # An optional part is left out; a repeat is taken once (at least as often as it must).
                parts.append(self.example(list(body)) * (0 if high == 1 and low == 0 else max(low, 1)))
            elif op is _c.SUBPATTERN:
                text = self.example(list(av[3]))
                if av[0] is not None:
                    self._groups[av[0]] = text
                parts.append(text)
            elif op is _c.ATOMIC_GROUP:
                parts.append(self.example(list(av)))
            elif op is _c.BRANCH:
                parts.append(self.example(list(av[1][0])))
            elif op is _c.GROUPREF:
                parts.append(self._groups.get(av, ""))
            elif op is _c.GROUPREF_EXISTS:
                parts.append(self.example(list(av[1])))
        return "".join(parts)


def _first_listed(items: list) -> str:
    for kind, code in items:
        if kind is _c.LITERAL:
            return chr(code)
        if kind is _c.RANGE:
            return chr(code[0])
    return "a"


def _in_accepts(items: list, ch: str, flags: int) -> bool:
    """Does the character class `[...]` accept `ch`?"""
    negate = bool(items) and items[0][0] is _c.NEGATE
    variants = {ch, ch.lower(), ch.upper()} if flags & re.IGNORECASE else {ch}
    found = any(_class_item_accepts(kind, code, c) for kind, code in items for c in variants)
    return found != negate


def _class_item_accepts(kind: object, code: object, ch: str) -> bool:
    if kind is _c.LITERAL:
        return chr(code) == ch
    if kind is _c.RANGE:
        return code[0] <= ord(ch) <= code[1]
    if kind is _c.CATEGORY:
        name = str(code)
        if "DIGIT" in name:
            result = ch.isdecimal()
        elif "SPACE" in name:
            result = ch.isspace()
        elif "WORD" in name:
            result = ch.isalnum() or ch == "_"
        else:
            return False
        return result != ("NOT_" in name)
    return False


def _seq_first(seq: list, ch: str, flags: int) -> bool:
    """Can a match of `seq` start with `ch`?"""
    for op, av in seq:
        accepts, nullable = _item_first(op, av, ch, flags)
        if accepts:
            return True
        if not nullable:
            return False
    return False


def _nullable(seq: list) -> bool:
    return all(_item_first(op, av, "\0", 0)[1] for op, av in seq)


def _item_first(op: object, av: object, ch: str, flags: int) -> tuple[bool, bool]:
    """(can the item's match start with `ch`, can it match nothing)"""
    icase = flags & re.IGNORECASE
    if op is _c.LITERAL:
        return (chr(av) == ch or bool(icase) and chr(av).lower() == ch.lower()), False
    if op is _c.NOT_LITERAL:
        return chr(av) != ch, False
    if op is _c.ANY:
        return ch != "\n" or bool(flags & re.DOTALL), False
    if op is _c.IN:
        return _in_accepts(av, ch, flags), False
    if op in _REPEATS:
        body = list(av[2])
        return _seq_first(body, ch, flags), av[0] == 0 or _nullable(body)
    if op is _c.SUBPATTERN:
        body = list(av[3])
        return _seq_first(body, ch, (flags | av[1]) & ~av[2]), _nullable(body)
    if op is _c.ATOMIC_GROUP:
        return _seq_first(list(av), ch, flags), _nullable(list(av))
    if op is _c.BRANCH:
        branches = [list(branch) for branch in av[1]]
        return any(_seq_first(b, ch, flags) for b in branches), any(_nullable(b) for b in branches)
    if op is _c.GROUPREF_EXISTS:
        branches = [list(branch) for branch in av[1:] if branch is not None]
        return any(_seq_first(b, ch, flags) for b in branches), True
    # Anchors, look-arounds and back-references take no characters of their own (or
    # unknown ones: a back-reference may well be empty).
    return False, True
