"""Small Fail2Ban configuration trees written for the tests (no file of Fail2Ban's is copied)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from parsers.fail2ban import Fail2BanFilter, load_fail2ban_filter

# A shared include in the style of Fail2Ban's common.conf, reduced to what the tests use.
COMMON = r"""
[INCLUDES]
after = common.local

[DEFAULT]
_daemon = \S*
__pid_re = (?:\[\d+\])
__prefix_line = \s*(?:\S+\s+)?(?:%(_daemon)s%(__pid_re)s?:\s+)?
datepattern = {^LN-BEG}
"""

# An sshd-like filter: prefregex with the program prefix as multi-line id, modes, a
# journalmatch; the failregexes are written for these tests.
SSHLIKE = r"""
[INCLUDES]
before = common.conf

[DEFAULT]
_daemon = sshd

[Definition]
prefregex = ^<F-MLFID>%(__prefix_line)s</F-MLFID>(?:error: )?<F-CONTENT>.+</F-CONTENT>$
cmnfailre = ^Failed \S+ for (?:invalid user )?<F-USER>.+</F-USER> from <HOST>(?: port \d+)?(?: ssh2)?$
            ^Invalid user <F-USER>.*?</F-USER> from <HOST>(?: port \d+)?$
            ^<F-NOFAIL>pam_unix\(sshd:auth\): authentication failure;</F-NOFAIL>.* ruser=<F-ALT_USER>\S*</F-ALT_USER> rhost=<HOST>(?: user=<F-USER>\S*</F-USER>)?$
            ^<F-MLFFORGET><F-MLFGAINED>Accepted \w+</F-MLFGAINED></F-MLFFORGET> for <F-USER>\S+</F-USER> from <HOST>
mdre-normal =
mdre-aggressive = ^Connection closed by <HOST> port \d+ \[preauth\]$
failregex = %(cmnfailre)s
            <mdre-<mode>>
mode = normal
ignoreregex =
journalmatch = _SYSTEMD_UNIT=ssh.service + _COMM=sshd
"""  # noqa: E501


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (paths relative to filter.d) under root/filter.d; return root."""
    for name, text in files.items():
        path = root / "filter.d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def sshlike(root: Path, reference: str = "fail2ban:sshlike", **kwargs) -> Fail2BanFilter:
    write_tree(root, {"common.conf": COMMON, "sshlike.conf": SSHLIKE})
    return load_fail2ban_filter(reference, root, **kwargs)


def definition(root: Path, body: str, name: str = "test", common: bool = True, **kwargs) -> Fail2BanFilter:
    """A filter `name` whose [Definition] is `body` (with common.conf included before it)."""
    files = {f"{name}.conf": ("[INCLUDES]\nbefore = common.conf\n\n" if common else "")
             + "[Definition]\n" + textwrap.dedent(body).lstrip("\n")}
    if common:
        files["common.conf"] = COMMON
    write_tree(root, files)
    kwargs.setdefault("require_identity", False)
    return load_fail2ban_filter(f"fail2ban:{name}", root, **kwargs)
