"""Regex safety: no shipped filter backtracks for long on lines an attacker writes, and a user's
filter that does is found when it is loaded (agent.regexprobe, parsers.adversarial).

Every shipped filter, in every mode, is run on adversarial lines grown step by step to 64 KiB
(the longest message a source passes on): lines built from each regex's own structure (a
prefix that leads it up to a repeat, then a long run of what the repeat takes, ending where
a match fails late) and lines of the filter's sample log (tests/filters/NAME.log) whose
variable words (user names, URLs, user agents) are stretched to the full length. Each line
must take at most BUDGET, and from 16 KiB to 64 KiB its time must grow like its length (4x),
not like its square (16x): a regex that is quadratic but quick on short lines is caught
before a longer line makes it slow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import main
from agent.regexprobe import MAX_MESSAGE, Timing, check_user_filter, probe, probe_regexes, time_line, trials
from parsers.fail2ban_filter import MAX_LINE
from parsers.filterfile import SHIPPED_DIR, find_filter, load_filter, load_reference, modes_of
from tests.filters.test_samples import sample_messages

SAMPLES = Path(__file__).parents[1] / "filters"
# Seconds a 64 KiB line may take in one regex. The shipped regexes take a few ms on a 2-core
# VM (about 30 ms for those whose look-ahead tries a list of names at each character), a slow
# CI machine several times that; a quadratic regex takes seconds.
BUDGET = 0.25
# Time at 64 KiB over time at 16 KiB: 4 for a linear regex, 16 for a quadratic one. Judged
# only where the 64 KiB line takes more than NOISE_FLOOR: shorter times are mostly timer
# noise, and harmless.
GROWTH = 8.0
NOISE_FLOOR = 0.003
SMALL = 16 * 1024  # the run length the growth is measured from
# Loading a user's filter must stay fast, whatever its regexes do (seconds, on a slow machine).
LOAD_SECONDS = 5.0


@dataclass
class Record:
    """The times one regex took on one adversarial line, at 16 KiB and at the longest length."""

    small: Timing | None = None
    last: Timing | None = None

    @property
    def growth(self) -> float:
        if self.small is None or self.last is None or self.small.seconds <= 0:
            return 0.0
        return self.last.seconds / self.small.seconds

    def describe(self) -> str:
        small = f", {self.small.seconds * 1000:.2f} ms at {self.small.length:,} (x{self.growth:.1f})" \
            if self.small is not None and self.small.length != self.last.length else ""
        return f"{self.last.describe()}{small}"


def any_account(name: str) -> int:
    return 1000


_times: dict[str, dict[tuple, Record]] = {}


def filter_times(name: str) -> dict[tuple, Record]:
    """The filter's regexes (of all its modes, timed once) on their adversarial lines: a record
    per regex and line, keyed by (regex's place, line's shape)."""
    if name not in _times:
        path = find_filter(name)
        regexes = {rx.where: rx for mode in modes_of(path)
                   for rx in load_filter(path, mode=mode, accounts=any_account).regexes}
        records: dict[tuple, Record] = {}

        def record(timing: Timing) -> None:
            shape = timing.shape
            entry = records.setdefault((timing.regex.where, shape.prefix, shape.unit, shape.suffix), Record())
            if timing.length - shape.fixed == SMALL:
                entry.small = timing
            entry.last = timing

        probe_regexes(list(regexes.values()), BUDGET, sample_messages(name), MAX_MESSAGE, record)
        _times[name] = records
    return _times[name]


def timed_again(timing: Timing | None) -> Timing | None:
    """The timing taken again, fastest of three: a pause of the machine is not the regex's doing."""
    if timing is None:
        return None
    seconds = min(timing.seconds, time_line(timing.regex, timing.message, repeat=3))
    return Timing(timing.regex, timing.shape, timing.length, seconds)


def problems(records: list[Record]) -> list[Record]:
    """The records whose line took longer than BUDGET or grew faster than GROWTH, confirmed."""
    found = []
    for entry in records:
        over = entry.last.seconds > BUDGET
        growing = entry.last.seconds > NOISE_FLOOR and entry.growth > GROWTH
        if over or growing:
            entry = Record(timed_again(entry.small), timed_again(entry.last))
            if entry.last.seconds > BUDGET or (entry.last.seconds > NOISE_FLOOR and entry.growth > GROWTH):
                found.append(entry)
    return sorted(found, key=lambda e: e.last.seconds, reverse=True)


def cases():
    for log in sorted(SAMPLES.glob("*.log")):
        for mode in modes_of(find_filter(log.stem)):
            yield pytest.param(log.stem, mode, id=f"{log.stem}-{mode}")


@pytest.mark.parametrize("name,mode", list(cases()))
def test_shipped_filter_takes_linear_time_on_adversarial_lines(name: str, mode: str) -> None:
    mine = {rx.where for rx in load_filter(find_filter(name), mode=mode, accounts=any_account).regexes}
    records = [entry for (where, *_), entry in filter_times(name).items() if where in mine]
    assert records, f"{name}: no adversarial line was made"
    bad = problems(records)
    worst = "\n".join(f"  {entry.describe()}" for entry in bad[:10])
    assert not bad, (f"{name} ({mode}): {len(bad)} of {len(records)} adversarial lines took over "
                     f"{BUDGET * 1000:.0f} ms or grew more than x{GROWTH:g} from {SMALL:,} characters to "
                     f"{MAX_MESSAGE:,}:\n{worst}")


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED_DIR.glob("*.toml")))
def test_every_regex_of_a_shipped_filter_gets_lines_built_from_its_structure(name: str) -> None:
    """The probe reads each regex's structure; were that lost (re's private parser moved), only
    the sample lines would be left, and the check above would quietly prove less."""
    path = find_filter(name)
    for mode in modes_of(path):
        regexes = load_filter(path, mode=mode, accounts=any_account).regexes
        built = {rx.where for trial in trials(regexes) for rx in trial.regexes}
        missing = {rx.where for rx in regexes} - built
        assert not missing, f"{name} ({mode}): no lines for {sorted(missing)}"


# ---- user filters, checked when loaded ----


def local_filter(tmp_path: Path, name: str, regex: str) -> Path:
    """A filter in a local filter.d, as /etc/jailwarden/filter.d holds them."""
    directory = tmp_path / "filter.d"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(f"syslog = [\"app\"]\nfailregex = ['''{regex}''']\n")  # a literal string: no escapes
    return path


def load_local(tmp_path: Path, name: str):
    return load_reference(name, search=[tmp_path / "filter.d", SHIPPED_DIR])


def checked(flt) -> tuple[str | None, float]:
    started = time.perf_counter()
    warning = check_user_filter(flt)
    return warning, time.perf_counter() - started


@pytest.mark.parametrize("regex,what", [
    (r"Login failed for (?P<user>(?:\w+)+) from <HOST>$", "a repeat of a repeat (exponential)"),
    (r"Rejected (?:[\w.-]+\s?)* from <HOST>$", "words with optional separators, repeated (exponential)"),
    (r"Client (?:[\w.:]+\s?)+\[<HOST>\] rejected$", "nested repeats before the address (exponential)"),
    (r"Failed login for (?P<user>.*) \(.*\) from <HOST>$", ".*x.*y, the second failing late (quadratic)"),
    (r"Denied (?P<user>.*) \(.*\) .*from <HOST>$", "three unbounded repeats in a row (cubic)"),
])
def test_user_filter_that_backtracks_is_warned_about_and_not_linear(tmp_path, regex: str, what: str) -> None:
    path = local_filter(tmp_path, "app", regex)
    flt = load_local(tmp_path, "app")
    assert flt.linear
    warning, seconds = checked(flt)
    assert warning is not None, what
    assert not flt.linear
    assert str(path) in warning and f"failregex[0] '{regex[:60]}" in warning
    assert " took " in warning and "-character line" in warning
    assert seconds < LOAD_SECONDS, f"{what}: the check took {seconds:.1f} s"


def test_local_copy_of_a_shipped_filter_passes_and_stays_linear(tmp_path) -> None:
    (tmp_path / "filter.d").mkdir()
    (tmp_path / "filter.d" / "sshd.toml").write_text((SHIPPED_DIR / "sshd.toml").read_text())
    flt = load_local(tmp_path, "sshd")
    assert Path(flt.file).parent == tmp_path / "filter.d"
    warning, seconds = checked(flt)
    assert warning is None
    assert flt.linear
    assert seconds < LOAD_SECONDS


@pytest.mark.parametrize("regex", [
    r"Login failed for (?P<user>\S+) from <HOST>$",
    r"Login failed for (?P<user>.*) from <HOST> port \d+$",
    r"Denied \[(?P<user>[^\]]*)\] from <HOST>",
])
def test_user_filter_with_linear_regexes_passes(tmp_path, regex: str) -> None:
    local_filter(tmp_path, "app", regex)
    flt = load_reference(str(tmp_path / "filter.d" / "app.toml"))
    warning, seconds = checked(flt)
    assert warning is None and flt.linear
    assert seconds < LOAD_SECONDS


def test_shipped_filters_are_not_probed_at_load(tmp_path) -> None:
    flt = load_reference("sshd", search=[tmp_path, SHIPPED_DIR])
    warning, seconds = checked(flt)
    assert warning is None and flt.linear
    assert seconds < 0.05


def test_fail2ban_filter_is_probed_up_to_the_length_it_searches(tmp_path) -> None:
    directory = tmp_path / "fail2ban" / "filter.d"
    directory.mkdir(parents=True)
    (directory / "slowapp.conf").write_text(
        "[Definition]\n_daemon = slowapp\nfailregex = ^Denied (?:\\w+\\s?)* from <HOST>$\n")
    flt = load_reference("fail2ban:slowapp", fail2ban_dir=tmp_path / "fail2ban")
    warning, seconds = checked(flt)
    assert warning is not None and "slowapp.conf" in warning and "failregex[0] '^Denied" in warning
    assert not flt.linear
    assert seconds < LOAD_SECONDS
    (directory / "fastapp.conf").write_text("[Definition]\n_daemon = fastapp\nfailregex = ^Denied \\S+ from <HOST>$\n")
    fast = load_reference("fail2ban:fastapp", fail2ban_dir=tmp_path / "fail2ban")
    assert check_user_filter(fast) is None and fast.linear is False  # Fail2Ban's are never linear
    lengths = []
    probe(fast, record=lambda timing: lengths.append(timing.length))
    assert max(lengths) == MAX_LINE  # a longer line is not searched at all


def test_check_config_prints_the_warning_for_a_slow_local_filter(tmp_path, capsys) -> None:
    local_filter(tmp_path, "app", r"Rejected (?:[\w.-]+\s?)* from <HOST>$")
    main_file = tmp_path / "jailwarden.toml"
    main_file.write_text('[jails.app]\nfilter = "app"\n[jails.sshd]\nfilter = "sshd"\n')
    code = main(["check-config", "--config", str(main_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "backtrack" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"warning: jail app: filter {tmp_path / 'filter.d' / 'app.toml'}: ")
    assert "failregex[0] 'Rejected" in warnings[0] and "-character line" in warnings[0]
    assert "OK, 2 jails enabled" in out
