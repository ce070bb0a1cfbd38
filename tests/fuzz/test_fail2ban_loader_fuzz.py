"""Fuzzing the Fail2Ban filter loader (parsers/fail2ban.py and what it reads with:
fail2ban_ini, fail2ban_options, fail2ban_regex, dates, fail2ban_identity, fail2ban_reference).

Whatever filter.d holds and however a jail names the filter ("fail2ban:NAME[key=value]"),
loading gives a filter or raises FilterError (file, place, reason); no other exception escapes,
and a loaded filter judges any line without raising. Files are generated as text (anything,
or INI made of the keys, references, tags and regex pieces Fail2Ban's filters use) in a
filter.d tree whose files include each other (loops too). A filter whose references or tags
expand into each other many times over must be refused, not expanded: that case has tests of
its own at the end, run in a child process with a memory limit.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, example, given, settings, strategies as st

from agent.events import LogEvent
from parsers.errors import FilterError
from parsers.fail2ban import load_fail2ban_filter

NOW = 1795529641.0
NAMES = ("fuzz", "common", "other", "fuzz.d/extra")
OPTION = st.sampled_from([
    "failregex", "ignoreregex", "prefregex", "maxlines", "datepattern", "journalmatch", "usedns", "_daemon", "mode",
    "before", "after", "known/failregex", "__prefix_line", "cmnfailre", "mdre-normal", "mdre-aggressive", "logtype",
    "x", "X", "a b", "", "%", "<x>",
])
SECTION = st.sampled_from(["Definition", "INCLUDES", "DEFAULT", "Init", "Init?family=inet6", "x", "", "Definition]",
                           "KNOWN/Definition"])
PIECE = st.sampled_from([
    "^", "$", "<HOST>", "<ADDR>", "<IP4>", "<IP6>", "<DNS>", "<CIDR>", "<SUBNET>", "<F-ID>", "</F-ID>", "<F-USER>",
    "</F-USER>", "<F-MLFID>", "</F-MLFID>", "<F-NOFAIL>", "</F-NOFAIL>", "<F-MLFFORGET>", "<F-MLFGAINED>",
    "<F-CONTENT>", "</F-CONTENT>", "<F-ALT_USER>", "<F-X>", "</F-X>", "<SKIPLINES>", "<mode>", "<mdre-<mode>>",
    "<x>", "<known/failregex>", "<Definition/x>", "%(x)s", "%(known/failregex)s", "%(__prefix_line)s",
    "%(__name__)s", "%(default/x)s", "%%", "%", "%(", "(?P<host>", "(?P<x>", "(?P=x)", "(?(x)a|b)", "\\1", "(?i)",
    "(?x)", "(?:", "(", ")", "[", "]", "{1,3}", "{", "*", "+?", "|", "\\", "\\S+", ".*", " from ", " port \\d+",
    "{^LN-BEG}", "{DATE}", "%Y", "%m", "%d", "%H:%M:%S", "%ExY", "%z", "%Z", "%f", "%s", "Epoch", "TAI64N",
    "{UNB}", "_SYSTEMD_UNIT=ssh.service", "+", "_COMM=sshd", "_UID=0", "_UID=root", '"', "'", "sshd", "(?:sshd|x)",
    "\\S*", "1", "0", "101", "-1", "yes", "no", "warn", "raw", "\n    ", "\n", " ", ";", "#", "=", ":",
    "common.conf", "other.conf", "fuzz.local", "/etc/passwd", "../x.conf", "fuzz.d/extra.conf",
])
VALUE = st.one_of(st.lists(PIECE, max_size=10).map("".join), st.text(max_size=20))


@st.composite
def ini_file(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"[{draw(SECTION)}]")
        for _ in range(draw(st.integers(0, 5))):
            lines.append(f"{draw(OPTION)} {draw(st.sampled_from(['=', ':', ' = ']))} {draw(VALUE)}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines) + "\n"


# Pieces of regexes that compile, and a few that do not.
REGEX_PIECE = st.sampled_from([
    "\\S+", "\\S*", ".*", ".+?", " from ", " port \\d+", "(?:ssh2)?", "(?P<user>\\S+)", "<F-USER>\\S+</F-USER>",
    "[a-z]+", "\\d{1,5}", "(?:a|b)", "%(__prefix_line)s", "%(x)s", "<x>", "<mode>", "\\s*", "(?i:x)", "\\[", "\\]",
    "<F-NOFAIL>x</F-NOFAIL>", "<F-MLFID>\\S+</F-MLFID>", "<SKIPLINES>", "<F-CONTENT>.+</F-CONTENT>", "\\b", "x",
    "(", ")", "[", "*", "(?P<host>", "\\1", "<F-X>",
])
HOST_TAG = st.sampled_from(["<HOST>", "<ADDR>", "<IP4>", "<IP6>", "<DNS>", "<CIDR>", "<SUBNET>", "<F-ID>x</F-ID>",
                            "(?P<host>\\S+)", "<HOST>:\\d+", "\\[<HOST>\\]", ""])
FAILREGEX = st.builds(lambda before, host, after: "^" + "".join(before) + host + "".join(after) + "$",
                      st.lists(REGEX_PIECE, max_size=5), HOST_TAG, st.lists(REGEX_PIECE, max_size=3))


@st.composite
def filter_file(draw) -> str:
    """A filter shaped as Fail2Ban's are: includes, defaults, a [Definition] with failregex
    lines and some of the other keys, maybe [Init]; then anything."""
    lines = []
    if draw(st.booleans()):
        lines += ["[INCLUDES]", f"{draw(st.sampled_from(['before', 'after']))} = "
                                f"{draw(st.sampled_from(['common.conf', 'other.conf', 'fuzz.conf', 'x.conf']))}"]
    if draw(st.booleans()):
        lines += ["[DEFAULT]", "_daemon = " + draw(st.sampled_from(["sshd", "sshd|x", "(?:sshd)", "", "\\S*"])),
                  "__prefix_line = \\s*(?:\\S+ )?%(_daemon)s(?:\\[\\d+\\])?:\\s+"]
    lines.append("[Definition]")
    regexes = draw(st.lists(FAILREGEX, min_size=1, max_size=3))
    lines.append("failregex = " + "\n            ".join(regexes))
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"{draw(OPTION)} = {draw(st.one_of(VALUE, FAILREGEX))}")
    if draw(st.booleans()):
        lines += ["[Init]", f"{draw(OPTION)} = {draw(VALUE)}"]
    return "\n".join(lines) + "\n"


FILE = st.one_of(ini_file(), filter_file(), st.text(max_size=200), st.binary(max_size=100))
REFERENCE = st.one_of(
    st.just("fail2ban:fuzz"), st.just("fail2ban:fuzz"), st.just("fail2ban:fuzz"),
    st.builds(lambda options: f"fail2ban:fuzz[{options}]",
              st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["mode", "logtype", "_daemon", "x",
                                                                           "failregex", "maxlines", "a-b.c"]),
                                 st.one_of(VALUE, VALUE.map(lambda v: f'"{v}"'))), max_size=3).map(", ".join)),
    st.builds(lambda text: "fail2ban:" + text, st.text(max_size=20)),
    st.sampled_from(["fail2ban:", "fail2ban:../fuzz", "fail2ban:/etc/x", "fail2ban:fuzz[", "fail2ban:fuzz]",
                     "fail2ban:fuzz.d/extra", "fail2ban:" + "a" * 300, "fail2ban:fuzz\x00"]),
)
LINE = st.one_of(st.text(max_size=80), st.sampled_from([
    "Nov 24 14:00:01 web1 sshd[1]: Failed password for root from 203.0.113.5 port 22 ssh2",
    "2026-11-24 14:00:01 x 203.0.113.5", "1795529641 203.0.113.5", "@400000006a1c2d5e0b8d7a2c 203.0.113.5",
]))


MINIMAL = "[Definition]\nfailregex = ^x <HOST>$\n"


def load(files: dict[str, bytes], reference: str, mode: str | None, require_identity: bool):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for name, content in files.items():
            path = root / "filter.d" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            flt = load_fail2ban_filter(reference, root, mode=mode, require_identity=require_identity)
        except FilterError as error:
            assert isinstance(error.file, str) and isinstance(error.where, str)
            assert isinstance(error.reason, str) and error.reason.strip(), error
            event(f"refused: {error.reason[:25]}")
            return None
        event("loaded")
        return flt


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # re's warning on regexes such as "[["
@settings(max_examples=settings.default.max_examples * 2)
@given(main=filter_file(),
       files=st.dictionaries(st.sampled_from([f"{name}.{suffix}" for name in NAMES for suffix in ("conf", "local")]),
                             FILE.map(lambda text: text if isinstance(text, bytes) else text.encode("utf-8",
                                                                                                   "surrogatepass")),
                             max_size=3),
       reference=REFERENCE, mode=st.one_of(st.none(), st.sampled_from(["normal", "aggressive", "x", ""])),
       require_identity=st.booleans(), lines=st.lists(LINE, max_size=4))
# Found by this test: OSError, ValueError and RecursionError escaped the loader.
@example(main=MINIMAL, files={}, reference="fail2ban:" + "a" * 300, mode=None, require_identity=False, lines=[])
@example(main=MINIMAL, files={}, reference="fail2ban:\x00", mode=None, require_identity=False, lines=[])
@example(main="[INCLUDES]\nbefore = " + "a" * 300 + ".conf\n" + MINIMAL, files={}, reference="fail2ban:fuzz",
         mode=None, require_identity=False, lines=[])
@example(main=MINIMAL, files={"fuzz.local": b"[INCLUDES]\nbefore = fuzz.conf\n"}, reference="fail2ban:fuzz",
         mode=None, require_identity=False, lines=[])
@example(main="[INCLUDES]\nbefore = fuzz.d/extra.conf\n" + MINIMAL,
         files={"fuzz.d/extra.conf": b"[INCLUDES]\nbefore = ../fuzz.conf\n"}, reference="fail2ban:fuzz", mode=None,
         require_identity=False, lines=[])
def test_any_filter_files_load_or_are_refused_with_file_place_and_reason(main, files, reference, mode,
                                                                        require_identity, lines) -> None:
    flt = load({"fuzz.conf": main.encode("utf-8", "surrogatepass"), **files}, reference, mode, require_identity)
    if flt is None:
        return
    for line in lines:
        assert flt.examine_line(line, NOW).kind in ("fail", "ignored", "miss", "other", "error")
        flt.match(LogEvent(NOW, "journal", line, {"SYSLOG_IDENTIFIER": "sshd", "_HOSTNAME": "web1"}, trusted=True))


# Expansion bombs: a few hundred bytes that expand to gigabytes. Each load runs in a child
# process whose address space is limited, so that a loader that expands them fails this test
# (killed, or out of memory) instead of taking the machine down.
BOMBS = {
    "tags doubling 40 times": "[Definition]\n" + "".join(f"t{i} = <t{i + 1}><t{i + 1}>\n" for i in range(40))
                              + "t40 = x\nfailregex = ^<t0> <HOST>$\n",
    "references 60-fold, 9 deep": "[Definition]\n" + "".join(f"a{i} = {f'%(a{i + 1})s' * 60}\n" for i in range(9))
                                  + "a9 = x\nfailregex = ^%(a0)s <HOST>$\n",
    "tags 60-fold, 9 deep": "[Definition]\n" + "".join(f"t{i} = {f'<t{i + 1}>' * 60}\n" for i in range(9))
                            + "t9 = x\nfailregex = ^<t0> <HOST>$\n",
}


def _load_limited(text: str, directory: str, results) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    path = Path(directory) / "filter.d" / "bomb.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        load_fail2ban_filter("fail2ban:bomb", Path(directory), require_identity=False)
        results.put("loaded")
    except FilterError as error:
        results.put(f"FilterError: {error.reason}")
    except Exception as error:  # reported to the parent, which fails the test
        results.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_references_and_tags_that_expand_many_times_over_are_refused(text: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_load_limited, args=(text, str(tmp_path), results))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("loading the filter took more than 30 s")
    assert child.exitcode == 0, f"the loader died (exit code {child.exitcode})"
    outcome = results.get(timeout=5)
    assert outcome.startswith("FilterError: ") and "grows beyond" in outcome, outcome
