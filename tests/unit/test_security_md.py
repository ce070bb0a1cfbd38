"""SECURITY.md keeps its word: every promise names the tests that check it, and every test it
names exists, so a renamed or deleted test cannot leave a promise unchecked unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "SECURITY.md").read_text()
REFERENCE = re.compile(r"`((?:unit|integration|e2e|filters|fuzz|packages)/[\w/]*?(?:\.py)?)(?:::(\w+))?`")


def promises() -> dict[str, str]:
    sections = re.split(r"^### ", TEXT.split("## Promises", 1)[1].split("## Not promised", 1)[0], flags=re.MULTILINE)
    return {section.splitlines()[0]: section for section in sections[1:]}


def test_every_promise_says_which_tests_check_it() -> None:
    assert len(promises()) >= 10
    for title, section in promises().items():
        assert "Tested by:" in section and REFERENCE.search(section.split("Tested by:", 1)[1]), title


def test_every_test_named_exists() -> None:
    named = REFERENCE.findall(TEXT)
    assert len(named) > 40
    for path, test in named:
        target = ROOT / "tests" / path
        assert target.exists(), f"SECURITY.md names {path}, which does not exist"
        if test:
            assert re.search(rf"^(async )?def {test}\(", target.read_text(), re.MULTILINE), \
                f"SECURITY.md names {path}::{test}, which is not a test there"
