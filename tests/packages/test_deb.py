"""The Debian packages: what `make deb` builds (jailwarden, and jailwarden-rsyslog with the rsyslog
snippet: files, modes, conffiles, dependencies, lintian), the systemd unit's hardening, and a real
install, use, upgrade and purge on a clean Debian 12 root."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from .conftest import REPO, VERSION


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def deb_members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """Path (without the leading ./) -> tar entry of the package's data."""
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as archive:
        return {member.name.removeprefix("./").rstrip("/"): member for member in archive.getmembers()}


def deb_file(deb: Path, name: str) -> bytes:
    """The content of one file of the package's data."""
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as archive:
        return archive.extractfile(f"./{name}").read()


def deb_control_file(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-I", str(deb), name], capture_output=True, text=True).stdout


SNIPPET = "etc/rsyslog.d/60-jailwarden.conf"


@pytest.fixture(scope="session")
def rsyslog_deb(deb: Path) -> Path:
    """jailwarden-rsyslog, built by the same `make deb` as jailwarden."""
    package = deb.with_name(f"jailwarden-rsyslog_{VERSION}_all.deb")
    assert package.is_file(), f"make deb made no {package}"
    return package


def test_package_holds_the_agent_privately_with_its_entry_point_and_docs(deb):
    members = deb_members(deb)
    for module in ("agent/cli.py", "agent/daemon.py", "parsers/filter.py", "firewall/ipset.py", "firewall/nftables.py",
                   "parsers/filters/sshd.toml"):
        assert f"usr/lib/jailwarden/{module}" in members, module
    # Private, not in the global site-packages where `agent` would collide; no byte-code shipped.
    assert not [name for name in members if "dist-packages" in name or "site-packages" in name]
    assert not [name for name in members if "__pycache__" in name or name.endswith(".pyc")]
    entry = members["usr/sbin/jailwarden"]
    assert entry.mode & 0o777 == 0o755 and entry.uname == "root"
    for name in ("lib/systemd/system/jailwarden.service", "usr/share/man/man8/jailwarden.8.gz",
                 "usr/share/man/man5/jailwarden.toml.5.gz", "usr/share/bash-completion/completions/jailwarden",
                 "etc/jailwarden/jailwarden.toml"):
        assert members[name].mode & 0o777 == 0o644, name
    assert members["etc/jailwarden/jail.d"].isdir() and members["etc/jailwarden/filter.d"].isdir()


def test_configuration_files_are_conffiles(deb):
    assert deb_control_file(deb, "conffiles").split() == ["/etc/jailwarden/jailwarden.toml"]


def test_rsyslog_snippet_is_a_conffile_of_jailwarden_rsyslog_only(deb, rsyslog_deb):
    """The snippet loads omrelp, so it comes with the package that pulls in rsyslog-relp; a host
    with only jailwarden (journal only, or syslog-ng) gets neither rsyslog nor the snippet."""
    assert SNIPPET not in deb_members(deb)
    assert "jailwarden-rsyslog" in deb_field(deb, "Suggests")
    members = deb_members(rsyslog_deb)
    snippet = members[SNIPPET]
    assert snippet.isfile() and snippet.mode & 0o777 == 0o644 and snippet.uname == "root"
    assert not [name for name in members if members[name].isfile() and name != SNIPPET
                and not name.startswith("usr/share/doc/jailwarden-rsyslog/")]
    assert deb_file(rsyslog_deb, SNIPPET) == (REPO / "packaging/rsyslog/60-jailwarden.conf").read_bytes()
    assert deb_control_file(rsyslog_deb, "conffiles").split() == [f"/{SNIPPET}"]
    depends = [item.strip() for item in deb_field(rsyslog_deb, "Depends").split(",")]
    assert {"rsyslog", "rsyslog-relp", f"jailwarden (= {VERSION})"} <= set(depends)
    assert deb_field(rsyslog_deb, "Architecture") == "all" and deb_field(rsyslog_deb, "Version") == VERSION


def test_depends_on_the_distribution_libraries_and_no_firewall_tools(deb):
    depends = {re.split(r"[ (]", item.strip())[0] for item in deb_field(deb, "Depends").split(",")}
    assert {"python3", "python3-systemd", "python3-pyroute2", "python3-iptables", "libnftables1"} <= depends
    # The code runs no ipset/nft command and no longer uses cachetools.
    assert not depends & {"ipset", "nftables", "python3-cachetools"}
    assert deb_field(deb, "Architecture") == "all" and deb_field(deb, "Version") == VERSION


def test_removal_tears_down_and_purge_removes_state(deb):
    prerm, postrm = deb_control_file(deb, "prerm"), deb_control_file(deb, "postrm")
    # The service is stopped (dh_installsystemd) before the agent's objects are removed.
    assert prerm.index("deb-systemd-invoke stop") < prerm.index("jailwarden teardown")
    assert 'if [ "$1" = "remove" ]' in prerm
    assert "rm -rf /var/lib/jailwarden" in postrm and '"$1" = "purge"' in postrm
    # An upgrade restarts the agent without stopping it first in prerm: bans stay in the kernel.
    assert "restart" in deb_control_file(deb, "postinst")


def test_lintian_reports_no_errors(deb, rsyslog_deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian is missing (`make packaging-deps` installs it)")
    result = subprocess.run(["lintian", str(deb), str(rsyslog_deb)], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)


UNIT = REPO / "packaging/systemd/jailwarden.service"


def test_unit_is_hardened_and_scores_low_exposure():
    text = UNIT.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=/usr/sbin/jailwarden reload",
                    "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "SupplementaryGroups=systemd-journal",
                    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                    "StateDirectory=jailwarden", "RuntimeDirectory=jailwarden",
                    "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6", "SystemCallFilter=@system-service"):
        assert setting in text, setting
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is missing")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if score is None:
        pytest.skip(f"systemd-analyze security --offline gave no score: {result.stderr.strip()[-300:]}")
    print(f"exposure {score.group(1)}")
    assert float(score.group(1)) <= 3.0


SSHD_SAMPLE = """\
Dec  2 06:00:01 host sshd[123]: Failed password for root from 203.0.113.7 port 4242 ssh2
Dec  2 06:00:02 host sshd[123]: Failed password for invalid user bob from 2001:db8::7 port 4243 ssh2
Dec  2 06:00:03 host sshd[123]: Accepted publickey for alice from 198.51.100.2 port 4244 ssh2
"""


def test_installs_runs_and_purges_on_a_clean_debian_12(deb, rsyslog_deb, debian_root):
    """apt resolves the dependencies from Debian itself; the command works on Debian's Python
    and libraries; rsyslog accepts its configuration with the snippet; purge leaves nothing of
    jailwarden behind."""
    for package in (deb, rsyslog_deb):
        shutil.copy(package, debian_root.path / "tmp" / package.name)
    (debian_root.path / "tmp/auth.log").write_text(SSHD_SAMPLE)
    install = debian_root.run(f"apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                              f"/tmp/{deb.name} /tmp/{rsyslog_deb.name}")
    if install.returncode != 0 and "Could not resolve" in install.stdout + install.stderr:
        pytest.skip(f"the Debian mirror cannot be reached from here: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    for library in ("python3-systemd", "python3-pyroute2", "python3-iptables", "libnftables1", "rsyslog",
                    "rsyslog-relp"):
        assert debian_root.run(f"dpkg-query -W {library}").returncode == 0, library
    # jailwarden-rsyslog has no maintainer scripts of its own: rsyslog's dpkg trigger on
    # /etc/rsyslog.d restarts a running rsyslog when the snippet arrives (and when it goes, below).
    assert install.stdout.index("Setting up jailwarden-rsyslog") < install.stdout.rindex(
        "Processing triggers for rsyslog"), install.stdout[-3000:]
    # A level-1 validation loads the modules and parses every action: omrelp from rsyslog-relp
    # loads, and the snippet's action is accepted with all its parameters.
    validation = debian_root.run("rsyslogd -N1")
    assert validation.returncode == 0 and "error" not in validation.stdout + validation.stderr, validation.stderr

    version = debian_root.run("jailwarden --version")
    assert version.stdout.strip() == f"jailwarden {VERSION}", version.stderr
    check = debian_root.run("jailwarden check-config")
    assert check.returncode == 0 and "OK, 1 jail enabled: sshd" in check.stdout, check.stderr
    verdicts = debian_root.run("jailwarden test-filter --json sshd /tmp/auth.log")
    assert verdicts.returncode == 0, verdicts.stderr
    assert re.findall(r'"host": "([^"]+)"', verdicts.stdout) == ["203.0.113.7", "2001:db8::7"]
    # What the agent would load at start, on the distribution's pyroute2 / python-iptables.
    imports = debian_root.run("python3 -I -c 'import sys; sys.path.insert(0, \"/usr/lib/jailwarden\"); "
                              "import agent.daemon, firewall.ipset, firewall.nftables, firewall.iptables, "
                              "firewall.route; print(\"ok\")'")
    assert imports.stdout.strip() == "ok", imports.stderr

    # Purge in a network namespace of its own: the removal's teardown must not touch this machine.
    purge = debian_root.run("apt-get purge -y -qq jailwarden jailwarden-rsyslog", network=False)
    assert purge.returncode == 0, purge.stdout[-3000:] + purge.stderr[-3000:]
    assert "jail sshd: firewall backend" in purge.stdout + purge.stderr  # the teardown ran
    assert "Processing triggers for rsyslog" in purge.stdout  # rsyslog restarted without the snippet
    left = [path for path in ("etc/jailwarden", SNIPPET, "usr/lib/jailwarden", "usr/sbin/jailwarden",
                              "var/lib/jailwarden", "lib/systemd/system/jailwarden.service", "usr/share/doc/jailwarden",
                              "usr/share/doc/jailwarden-rsyslog") if (debian_root.path / path).exists()]
    assert not left
    for package in ("jailwarden", "jailwarden-rsyslog"):
        assert debian_root.run(f"dpkg-query -W {package}").returncode != 0, package
    assert debian_root.run("rsyslogd -N1").returncode == 0  # rsyslog, still installed, is fine without it


def _newer_version_of(deb: Path, work: Path) -> Path:
    """The same package as version VERSION+1 (unpacked, its control file's Version, and the
    jailwarden version jailwarden-rsyslog depends on, raised, packed again): what an upgrade
    installs over it."""
    package = deb.name.split("_")[0]
    tree = work / package
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    text = re.sub(r"(?m)^Version: .*$", f"Version: {VERSION}+1", control.read_text())
    control.write_text(text.replace(f"jailwarden (= {VERSION})", f"jailwarden (= {VERSION}+1)"))
    newer = work / f"{package}_{VERSION}+1_all.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(tree), str(newer)], check=True, capture_output=True)
    return newer


def test_an_upgrade_keeps_changed_conffiles_the_stored_bans_and_the_firewall(deb, rsyslog_deb, debian_root, tmp_path):
    """prerm upgrade must not tear the firewall down (only remove does), the state stays, and
    jailwarden-rsyslog, tied to jailwarden's version, is upgraded along with it."""
    packages = [deb, rsyslog_deb]
    newer = [_newer_version_of(package, tmp_path) for package in packages]
    for package in packages + newer:
        shutil.copy(package, debian_root.path / "tmp" / package.name)
    install = debian_root.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                              + " ".join(f"/tmp/{package.name}" for package in packages))
    if install.returncode != 0 and "Could not resolve" in install.stdout + install.stderr:
        pytest.skip(f"the Debian mirror cannot be reached from here: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    config, snippet = debian_root.path / "etc/jailwarden/jailwarden.toml", debian_root.path / SNIPPET
    for conffile in (config, snippet):
        conffile.write_text(conffile.read_text() + "\n# the administrator's own line\n")
    stored = debian_root.run(
        "python3 -I -c 'import sys; sys.path.insert(0, \"/usr/lib/jailwarden\"); import ipaddress; "
        "from agent.bans import Ban; from agent.store import Changes, Store; "
        "s = Store(\"/var/lib/jailwarden/jailwarden.db\"); a = ipaddress.ip_address(\"203.0.113.7\"); "
        "s.commit(Changes(bans={(\"sshd\", a): Ban(\"sshd\", a, 1.0, 4e9, 1, \"test\")})); s.close()'")
    assert stored.returncode == 0, stored.stderr

    upgrade = debian_root.run("apt-get install -y -qq -o Dpkg::Options::=--force-confold "
                              + " ".join(f"/tmp/{package.name}" for package in newer), network=False)
    assert upgrade.returncode == 0, upgrade.stdout[-3000:] + upgrade.stderr[-3000:]
    assert "firewall backend" not in upgrade.stdout + upgrade.stderr  # no teardown on upgrade
    for package in ("jailwarden", "jailwarden-rsyslog"):
        assert debian_root.run(f"dpkg-query -W -f '${{Version}}' {package}").stdout == f"{VERSION}+1", package
    for conffile in (config, snippet):
        assert "# the administrator's own line" in conffile.read_text(), conffile
    bans = debian_root.run("python3 -I -c 'import sys; sys.path.insert(0, \"/usr/lib/jailwarden\"); "
                           "from agent.store import Store; s = Store(\"/var/lib/jailwarden/jailwarden.db\"); "
                           "print([str(b.address) for b in s.load(2.0).bans])'")
    assert bans.stdout.strip() == "['203.0.113.7']", bans.stderr
