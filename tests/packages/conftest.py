"""Fixtures for the package tests: the .deb and .rpm built once per session by `make deb` and
`make rpm` (which install their build tools through packaging/deps.sh --packaging), and a clean
Debian 12 root made with debootstrap, cached in tests/.cache/debian12/root and used through an
overlay so every test starts from the clean root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r'__version__ = "(.+)"', (REPO / "agent/__init__.py").read_text()).group(1)
CACHE = REPO / "tests/.cache/debian12"
SUITE = "bookworm"


def _make(target: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), target], capture_output=True, text=True, timeout=900)


def _build(target: str, artefact: Path) -> Path:
    if os.geteuid() != 0 and not shutil.which("dpkg-buildpackage"):
        pytest.skip(f"`make {target}` installs its build tools as root only; not root and they are missing")
    result = _make(target)
    if result.returncode != 0:
        pytest.fail(f"make {target} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    assert artefact.is_file(), f"make {target} made no {artefact}"
    return artefact


@pytest.fixture(scope="session")
def deb() -> Path:
    return _build("deb", REPO / f"dist/jailwarden_{VERSION}_all.deb")


@pytest.fixture(scope="session")
def rpm() -> Path:
    return _build("rpm", REPO / f"dist/jailwarden-{VERSION}-1.noarch.rpm")


def debian_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), or None."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)(.*)$", text, re.M):
            uri = match.group(1)
            if "security" not in uri and "security" not in match.group(2):
                return uri
    return None


def clean_root() -> Path:
    """The cached clean Debian 12 root, made with debootstrap when missing (~30 s)."""
    root = CACHE / "root"
    if (root / "usr/bin/apt-get").exists():
        return root
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is missing (`make packaging-deps` installs it)")
    mirror = debian_mirror()
    if mirror is None:
        pytest.skip("no Debian mirror in this machine's apt sources for debootstrap")
    partial = CACHE / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(partial), mirror],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"debootstrap {SUITE} from {mirror} failed (no access to the mirror?): "
                    f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    partial.rename(root)
    return root


class Chroot:
    """A throw-away copy of the clean root: an overlay on the cached one (a full copy where
    overlayfs cannot be mounted), with /proc and the host's resolv.conf for apt."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.lower, self.work = lower, work
        self.path = work / "merged"
        self.mounts: list[Path] = []

    def __enter__(self) -> Chroot:
        for name in ("upper", "work", "merged"):
            (self.work / name).mkdir()
        options = f"lowerdir={self.lower},upperdir={self.work / 'upper'},workdir={self.work / 'work'}"
        if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.path)],
                          capture_output=True).returncode == 0:
            self.mounts.append(self.path)
        else:
            subprocess.run(["cp", "-a", f"{self.lower}/.", str(self.path)], check=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(self.path / "proc")], check=True)
        self.mounts.append(self.path / "proc")
        shutil.copy("/etc/resolv.conf", self.path / "etc/resolv.conf")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)

    def run(self, command: str, *, network: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """`command` in the root with bash; without `network`, in a new network namespace too, so
        nothing it does to a firewall can reach this machine's."""
        argv = ["chroot", str(self.path), "bash", "-c", command]
        if not network:
            argv = ["unshare", "--net", *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def debian_root() -> Iterator[Chroot]:
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, chroot and mounts")
    for tool in ("chroot", "unshare", "mount"):
        if not shutil.which(tool):
            pytest.skip(f"missing tool: {tool}")
    lower = clean_root()
    with tempfile.TemporaryDirectory(prefix="jw-debroot-") as work, Chroot(lower, Path(work)) as chroot:
        yield chroot
