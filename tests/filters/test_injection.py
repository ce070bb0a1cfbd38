"""Log injection: the text a client writes into every shipped filter's failing sample lines is
rewritten to name another address, and the filter must still report the address the service
wrote, or nothing. A miss is acceptable (the line is not one the service wrote); a different
address never is: it would let anyone who can type a user name ban whom they like.

Where a client writes, and what the service does to that text before logging it, is the
table in attacker_fields.py, drawn from each filter's own comment: the filter's named
captures (user, path, agent, request, helo...) and the uncaptured text its service takes from
the client (URLs, user agents, Referer and Host headers in the web filters; HELO names and
envelope addresses in the mail filters; certificate IDs, banners, query names...). Every
capture of every failing line must be in that table.

Each field gets crafted payloads, sent through the service's rendering: bare addresses of both
families; fragments imitating the services' address context (" from A port 22", "rhost=A",
"client: A", "rip=A,", "[A]", "(A)", "user=<x>, rip=A"...), alone and around the field's own
value; the service's own text from the field up to and past its address, again, with the
address replaced; a whole forged message or line of the same service after a line break,
CR, NUL, an rsyslog escape (#012) or sshd's "\\n"; non-ASCII digits and invisible characters;
and (in a test of its own) 64 KiB values. Every rewritten line goes, in every mode of the
filter, through the daemon's path (the line parsed into a LogEvent, then Filter.match),
through a LogEvent carrying the rewritten message as journald hands it over (raw NUL and line
breaks included), and through test-filter's (FilterTester). test-filter gets a rewritten line
as one record: a log file would split it at a line break, but a service that writes raw line
breaks into a file forges lines itself (sshd escapes them; rsyslog writes #012).

The property-based half generates the client's text with hypothesis, from dangerous fragments
and pieces of the line itself, for the sshd, nginx, postfix and dovecot filters.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, strategies as st
from attacker_fields import FIELDS, AttackerField
from test_samples import HERE, NOW, Sample, compiled, read_samples

from agent.events import LogEvent
from agent.lines import LineError, event_from_line
from agent.testfilter import FilterTester
from parsers.filter import Verdict
from parsers.filterfile import find_filter, modes_of

INJECTED_V4 = "198.51.100.66"
INJECTED_V6 = "2001:db8::66"
INJECTED_TEXT = (INJECTED_V4, INJECTED_V6)
INJECTED = tuple(ipaddress.ip_address(text) for text in INJECTED_TEXT)

ADDRESSES = (INJECTED_V4, INJECTED_V6, f"::ffff:{INJECTED_V4}", f"[{INJECTED_V4}]", f"[{INJECTED_V6}]",
             f"{INJECTED_V4}:22", f"[{INJECTED_V6}]:22", f"{INJECTED_V6}:22", f"::{INJECTED_V4}")
FRAGMENTS = (
    f" from {INJECTED_V4} port 22", f" from {INJECTED_V6} port 22", f" from {INJECTED_V4}", f" {INJECTED_V4} port 22",
    f"rhost={INJECTED_V4}", f"rhost={INJECTED_V6} ", f"client: {INJECTED_V4}", f"client: {INJECTED_V6}, server: x",
    f"rip={INJECTED_V4},", f"rip={INJECTED_V6}, lip={INJECTED_V4}", f"[{INJECTED_V4}]", f"user=<x>, rip={INJECTED_V4}",
    f"({INJECTED_V4})", f"unknown[{INJECTED_V4}]", f"[client {INJECTED_V4}:22] ", f'"{INJECTED_V4}"',
    f"'x'@'{INJECTED_V4}'", f"(Remote IP: {INJECTED_V4})", f"remote_addr={INJECTED_V4}", f"relay=[{INJECTED_V4}]",
    f"ip=[::ffff:{INJECTED_V4}]", f"(?@{INJECTED_V4})", f"{INJECTED_V4}#53", f"IP: {INJECTED_V4}",
    f"H=(x) [{INJECTED_V4}]", f'Client "{INJECTED_V4}"',
)
# Digits a regex's \d may take but an address may not hold, and invisible characters.
UNICODE = ("\uff11\uff19\uff18.\uff15\uff11.\uff11\uff10\uff10.\uff16\uff16", "198\u200b.51.100.66",
           "\u202e66.100.51.198", "\u0661\u0669\u0668.51.100.66")
LONG = (" from 198.51.100.66 port 22" * 2500, "A" * 65536 + f" from {INJECTED_V4} port 22",
        f"[{INJECTED_V4}] " * 4000)
# What a line break looks like once a service or rsyslog has written it.
BREAKS = ("\n", "\r\n", "\r", "\x00", "#012", "\\n", " ", "")

_REPEATED = re.compile(r"message repeated [0-9]+ times: \[ ?(.*)\]$")
# Captures that hold no client text.
OWN_CAPTURES = {"recidive": {"jail", "filter"}}


@dataclass(frozen=True)
class Spot:
    """One attacker field found in a sample's message."""

    field: AttackerField
    start: int
    end: int


@dataclass(frozen=True)
class Target:
    """A failing sample line's message, the address the service wrote in it, and the attacker's fields."""

    sample: Sample
    host: str  # normalised, as the annotation gives it
    message: str
    host_start: int
    host_end: int
    spots: tuple[Spot, ...]
    uncovered: tuple[str, ...]  # captures of client text that no entry of FIELDS attacks
    regex: int  # which of the filter's failregex matched it


def target_of(name: str, sample: Sample) -> Target:
    """Locate the address and the attacker fields of a failing sample, by the filter's own match
    in the mode the annotation names, and by FIELDS."""
    flt = compiled(name, sample.mode or "normal")
    event = event_from_line(sample.line, NOW)
    assert not isinstance(event, LineError), f"{sample.file}:{sample.lineno}: {event.reason}"
    message = event.message
    start, end = 0, len(message)
    repeated = _REPEATED.match(message)
    if repeated is not None:
        start, end = repeated.span(1)
    m = re.compile(flt.failregex_pattern).match(message, start, end)
    assert m is not None, f"{sample.file}:{sample.lineno}: the filter's regexes do not match {message!r}"
    index = next(i for i in range(len(flt.failregex_alternatives)) if m.group(f"_{i}") is not None)
    alternative = flt.failregex_alternatives[index]
    host_start, host_end = m.span(alternative.host_group)
    inner = message[start:end]
    spots, covered = {}, set()
    for field in FIELDS[name]:
        if field.only is not None and not field.only.search(inner):
            continue
        if field.capture is not None:
            group = dict(alternative.captures).get(field.capture)
            if group is not None and m.group(group) is not None:
                spots.setdefault(m.span(group), field)
                covered.add(field.capture)
        else:
            for found in field.where.finditer(inner):
                for group in range(1, field.where.groups + 1):
                    spots.setdefault((found.start(group) + start, found.end(group) + start), field)
    captured = {name for name, group in alternative.captures if m.group(group) is not None}
    uncovered = tuple(sorted(captured - covered - OWN_CAPTURES.get(name, set())))
    # A field that holds the service's address is not the client's alone: left as it is.
    found = tuple(Spot(field, s, e) for (s, e), field in sorted(spots.items()) if e <= host_start or s >= host_end)
    return Target(sample, str(ipaddress.ip_address(sample.host)), message, host_start, host_end, found, uncovered,
                  index)


def payloads(target: Target, spot: Spot) -> list[str]:
    """What a client may send for one field (before the service renders it)."""
    m = target.message
    value = m[spot.start:spot.end]
    host_text = m[target.host_start:target.host_end]
    forged_addresses = [f"[{a}]" for a in INJECTED_TEXT] if host_text.startswith("[") else list(INJECTED_TEXT)
    forged_messages = [m[:target.host_start] + a + m[target.host_end:] for a in forged_addresses]
    out = list(ADDRESSES) + list(UNICODE)
    for fragment in FRAGMENTS:
        out += [fragment, value + fragment, fragment + value]
    for a in forged_addresses + [f"::ffff:{INJECTED_V4}"]:
        if spot.end <= target.host_start:
            # The service's own text from the field up to and past its address, again.
            between, tail = m[spot.end:target.host_start], m[target.host_end:]
            out += [value + between + a + tail, value + between + a, between + a + tail, value + between + a + " "]
        else:
            out += [value + " " + m[:target.host_start] + a + m[target.host_end:spot.start]]
    for forged in forged_messages:
        for brk in BREAKS:
            out += [value + brk + forged, brk + forged, f"{value}{brk}Nov 24 14:00:01 web1 x[1]: {forged}"]
        out += [value + "\x00" + forged[:spot.start], forged + "\x00"]
    return list(dict.fromkeys(out))


def rewritten(sample: Sample, old_message: str, new_message: str) -> str:
    """The sample line as it would read had the service written `new_message`."""
    if sample.line.startswith("{"):
        entry = json.loads(sample.line)
        entry["MESSAGE"] = new_message
        return json.dumps(entry, ensure_ascii=False)
    assert sample.line.endswith(old_message), f"{sample.file}:{sample.lineno}: the message does not end the line"
    return sample.line[:len(sample.line) - len(old_message)] + new_message


def failing_samples() -> list:
    return [pytest.param(log.stem, sample, id=f"{log.stem}-{sample.lineno}")
            for log in sorted(HERE.glob("*.log")) for sample in read_samples(log) if sample.host is not None]


class Verdicts:
    """One filter in one mode, judging rewritten lines on all three paths."""

    def __init__(self, name: str, mode: str) -> None:
        self.filter = compiled(name, mode)
        self.found: list[Verdict] = []
        self.tester = FilterTester(self.filter, NOW, report=lambda lineno, line, verdict: self.found.append(verdict))

    def addresses(self, cases: list[tuple[str, str]], original: LogEvent) -> list[dict[str, str | None]]:
        """For each (line, message): the address each path reports (None: nothing)."""
        reported = []
        for line, message in cases:
            event = event_from_line(line, NOW)
            daemon = None if isinstance(event, LineError) else self.filter.match(event)
            # As journald hands an entry over: the message raw, NUL and line breaks included.
            journal = self.filter.match(LogEvent(original.time, original.source, message, original.fields,
                                                 original.trusted))
            reported.append({"daemon": str(daemon.address) if daemon else None,
                             "journal": str(journal.address) if journal else None})
        # test-filter reads the lines as one log; each line is one record, whatever it holds.
        self.found.clear()
        self.tester.run([line + "\n" for line, _ in cases])
        assert len(self.found) == len(cases)
        for verdict, paths in zip(self.found, reported, strict=True):
            paths["test-filter"] = str(verdict.address) if verdict.kind == "fail" else None
        return reported


_verdicts: dict[tuple[str, str], Verdicts] = {}


def wrong_addresses(name: str, target: Target, chosen: Callable[[Spot], list[str]]) -> list[str]:
    """Every case, in every mode and on every path, where the filter reported another address."""
    original = event_from_line(target.sample.line, NOW)
    cases, what = [], []
    for spot in target.spots:
        logged = {}
        for payload in chosen(spot):
            text = spot.field.render(payload)
            if text is not None:
                logged.setdefault(text, payload)
        for text, payload in logged.items():
            message = target.message[:spot.start] + text + target.message[spot.end:]
            cases.append((rewritten(target.sample, target.message, message), message))
            what.append(f"{spot.field.name} = {payload[:300]!r} (logged as {text[:300]!r})")
    wrong = []
    for mode in modes_of(find_filter(name)):
        if (name, mode) not in _verdicts:
            _verdicts[name, mode] = Verdicts(name, mode)
        for case, paths in zip(what, _verdicts[name, mode].addresses(cases, original), strict=True):
            wrong += [f"{mode}, {path}: {case} -> {address}" for path, address in paths.items()
                      if address not in (None, target.host)]
    return wrong


def test_every_shipped_filter_says_where_its_clients_write() -> None:
    shipped = {path.stem for path in find_filter("sshd").parent.glob("*.toml")}
    assert shipped == set(FIELDS), f"attacker_fields.FIELDS lacks {sorted(shipped - set(FIELDS))}"


@pytest.mark.parametrize("name,sample", failing_samples())
def test_attacker_fields_never_make_a_filter_report_another_address(name: str, sample: Sample) -> None:
    target = target_of(name, sample)
    assert not target.uncovered, f"{sample.file}:{sample.lineno}: FIELDS[{name!r}] has no entry for the " \
                                 f"captures {target.uncovered}"
    assert ipaddress.ip_address(target.host) not in INJECTED, "the sample's own address is the injected one"
    wrong = wrong_addresses(name, target, lambda spot: payloads(target, spot))
    assert not wrong, f"{sample.file}:{sample.lineno} (host={target.host}), {len(wrong)} cases:\n  " + \
        "\n  ".join(wrong[:12]) + f"\n{sample.line}"


def test_very_long_attacker_fields_never_make_a_filter_report_another_address() -> None:
    """64 KiB of the attacker's text in one field of each filter's first failing line."""
    wrong = []
    for log in sorted(HERE.glob("*.log")):
        for sample in read_samples(log):
            target = target_of(log.stem, sample) if sample.host is not None else None
            if target is not None and target.spots:
                wrong += [f"{log.stem}:{sample.lineno}: {case}"
                          for case in wrong_addresses(log.stem, target, lambda spot: list(LONG))]
                break
    assert not wrong, "\n".join(wrong[:20])


# The property-based half: attacker fields generated by hypothesis, from pieces that imitate the
# services' address context (and the line's own text with the address replaced), for the
# filters of the services attacked most.
PROPERTY_FILTERS = ("sshd", "nginx-http-auth", "nginx-botsearch", "postfix", "postfix-sasl", "dovecot")
DANGEROUS = (
    *INJECTED_TEXT, f"::ffff:{INJECTED_V4}", f"[{INJECTED_V4}]", f"[{INJECTED_V6}]", f"[IPv6:{INJECTED_V6}]",
    "from", " from ", "port", " port 22", " port 22 ssh2", "rhost=", " rhost=", "user=", "ruser=", "client: ",
    ", client: ", "rip=", ", rip=", ", lip=", "unknown", "unknown[", "[", "]", "(", ")", "<", ">", '"', "'", ":",
    ": ", ",", ", ", "=", " ", "  ", "\n", "\r\n", "\r", "\x00", "\t", "#012", "\\n", "[preauth]", "ssh2",
    "invalid user ", "\u00e9", "\uff11\uff19\uff18", "\u202e", "\u200b", "\ud7ff", "\U0001f600",
)


def attacker_text(target: Target, spot: Spot) -> st.SearchStrategy[str]:
    """Client text built from dangerous fragments, whole address contexts of these services,
    pieces of the line itself with its address replaced, or anything at all."""
    m = target.message
    forged = [m[:target.host_start] + a + m[target.host_end:] for a in INJECTED_TEXT]
    context = [piece for piece in re.split(r"(\s+|[\[\]()<>,:=\"'])", forged[0]) if piece] + forged
    if spot.end <= target.host_start:
        context += [m[spot.end:target.host_start] + a + m[target.host_end:] for a in INJECTED_TEXT]
    else:
        context += [m[:target.host_start] + a + m[target.host_end:spot.start] for a in INJECTED_TEXT]
    piece = st.one_of(st.sampled_from(DANGEROUS), st.sampled_from(FRAGMENTS + ADDRESSES), st.sampled_from(context),
                      st.text(max_size=4))
    return st.lists(piece, max_size=8).map("".join)


_property_targets: dict[str, list[list[Target]]] = {}


def by_regex(name: str) -> list[list[Target]]:
    """The filter's failing sample lines that have attacker fields, grouped by the regex that
    matches them, so that every regex is attacked as often as any other."""
    if name not in _property_targets:
        groups: dict[tuple[str | None, int], list[Target]] = {}
        for sample in read_samples(HERE / f"{name}.log"):
            if sample.host is not None and (target := target_of(name, sample)).spots:
                groups.setdefault((sample.mode, target.regex), []).append(target)
        _property_targets[name] = list(groups.values())
    return _property_targets[name]


@pytest.mark.parametrize("name", PROPERTY_FILTERS)
@given(data=st.data())
def test_generated_attacker_fields_never_make_a_filter_report_another_address(name: str, data) -> None:
    lines = data.draw(st.sampled_from(by_regex(name)), label="regex")
    target = data.draw(st.sampled_from(lines), label="line")
    spot = data.draw(st.sampled_from(target.spots), label="field")
    payload = data.draw(attacker_text(target, spot), label="client text")
    one = Target(target.sample, target.host, target.message, target.host_start, target.host_end, (spot,), (),
                 target.regex)
    wrong = wrong_addresses(name, one, lambda _: [payload])
    assert not wrong, "\n".join(wrong) + f"\n{target.sample.line}"
