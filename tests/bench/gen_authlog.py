"""Generates a deterministic /var/log/auth.log-style file for the sshd filter benchmark.

The same seed and line count give the same bytes on every run and every machine: all
choices come from one ``random.Random(seed)`` and nothing iterates over a set or dict
whose order could differ between runs.

About a fifth of the lines come from sshd (failures of every common kind, successful
logins, disconnects, scanners; ``sshd[PID]`` before a mid-morning upgrade to OpenSSH
9.8+, ``sshd-session[PID]`` after it) from roughly 5,000 documentation addresses; the
rest is the usual auth.log noise (cron, sudo, su, systemd, logind, dbus, kernel and UFW
lines). Some addresses are traps: they appear only in lines a sshd filter must not count
(UFW ``SRC=``, sudo and su ``rhost=``, a cron command echoing an sshd message, user names
that contain `` from ADDR``, successful logins), so a filter reporting them is wrong.

Usage: python gen_authlog.py OUT [--lines N] [--seed S]
Writes OUT and OUT.meta.json (seed, lines, size, sha256, generator hash).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

DEFAULT_LINES = 1_000_000
DEFAULT_SEED = 20241124

HOSTNAME = "web1"
DAY_PREFIX = "Nov 24"
SECONDS_PER_DAY = 86_400
# Kernel uptime at 00:00:00 of the generated day (about 40 days since boot).
UPTIME_AT_MIDNIGHT = 3_456_789.0
SERVER_V4 = "192.0.2.10"
SSHD_SHARE = 0.20
# Fraction of the day after which sshd is OpenSSH 9.8+ and sessions log as sshd-session.
UPGRADE_AT = 0.40
V6_COUNT = 4_230
MAPPED_COUNT = 8

ATTACK_USERS = (
    "root", "admin", "test", "oracle", "ubuntu", "git", "postgres", "user", "guest", "pi",
    "ftpuser", "deploy", "jenkins", "hadoop", "mysql", "www-data", "support", "debian",
    "centos", "ec2-user", "nagios", "ansible", "minecraft", "steam", "dev", "developer",
    "tomcat", "elastic", "redis", "ftp", "mail", "backup", "sysadmin", "operator", "vagrant",
    "docker", "kafka", "zabbix", "administrator", "Admin", "ADMIN", "testuser", "student",
    "teamspeak", "ts3", "odoo", "sftp", "weblogic", "solr", "nexus", "gitlab", "bitnami",
    "user1", "user2", "user01", "test1", "test123", "admin1", "admin123", "admin2024",
    "oracle1", "ubuntu22", "pi4", "123456", "1234", "0", "a", "sa", "x", "demo", "temp",
)
VALID_TARGETS = ("root", "ubuntu", "admin", "git", "postgres", "deploy")
SPACED_USERS = (
    "john smith", "admin user", "test user", "ftp user", "root admin", "Guest Account",
    "web master", "a b c",
)
LEGIT_USERS = (("alice", 1000), ("bob", 1001), ("carol", 1002), ("deploy", 1003), ("backup", 1004))
KEY_TYPES = ("RSA", "ED25519", "ECDSA")
CRON_COMMANDS = (
    "cd / && run-parts --report /etc/cron.hourly",
    "[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi",
    "/usr/local/bin/backup.sh >/dev/null 2>&1",
    "command -v debian-sa1 > /dev/null && debian-sa1 1 1",
    "/usr/bin/certbot -q renew",
)
SUDO_COMMANDS = (
    "/usr/bin/apt update", "/usr/bin/systemctl restart nginx", "/usr/bin/journalctl -u ssh",
    "/usr/bin/tail -f /var/log/auth.log", "/usr/sbin/ufw status", "/bin/bash",
    "/usr/bin/docker ps", "/usr/bin/vim /etc/ssh/sshd_config",
)
SYSTEMD_UNITS = (
    ("apt-daily.service", "Daily apt download activities"),
    ("logrotate.service", "Rotate log files"),
    ("man-db.service", "Daily man-db regeneration"),
    ("sysstat-collect.service", "system activity accounting tool"),
    ("certbot.service", "Certbot"),
    ("phpsessionclean.service", "Clean php session files"),
    ("fstrim.service", "Discard unused blocks on filesystems from /etc/fstab"),
)
DBUS_SERVICES = (
    ("org.freedesktop.hostname1", "dbus-org.freedesktop.hostname1.service", "hostnamectl"),
    ("org.freedesktop.timedate1", "dbus-org.freedesktop.timedate1.service", "timedatectl"),
    ("org.freedesktop.locale1", "dbus-org.freedesktop.locale1.service", "localectl"),
    ("org.freedesktop.PackageKit", "packagekit.service", "apt-get"),
)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

Line = tuple[str, str]  # (syslog tag without the colon, message)


@dataclass(slots=True)
class Addresses:
    """The address pools, each a list in a fixed order."""

    attackers: list[str]
    attacker_cum_weights: list[float]
    scanners: list[str]
    legit_clean: list[str]
    legit_typo: list[str]
    traps: list[str]


@dataclass(slots=True)
class State:
    """Counters that make the log consistent: process ids, sessions, uptime."""

    rng: Random
    addresses: Addresses
    next_pid: int = 2_000
    next_session: int = 4_100
    sshd_master_pid: int = 811
    upgraded: bool = False
    # (line index at which to emit, tie-breaker, lines) for session ends written later.
    pending: list[tuple[int, int, list[Line]]] = field(default_factory=list)
    pending_seq: int = 0

    def pid(self) -> int:
        self.next_pid += self.rng.randint(1, 40)
        if self.next_pid > 4_194_000:
            self.next_pid = 2_000
        return self.next_pid

    def later(self, at_line: int, lines: list[Line]) -> None:
        self.pending_seq += 1
        heapq.heappush(self.pending, (at_line, self.pending_seq, lines))


def build_addresses(rng: Random) -> Addresses:
    """All usable v4 documentation hosts, several thousand v6, a few v4-mapped forms."""
    v4 = [f"{net}.{host}" for net in ("192.0.2", "198.51.100", "203.0.113") for host in range(1, 255)]
    traps = [SERVER_V4, "192.0.2.250", "192.0.2.251", "203.0.113.250", "203.0.113.251",
             "203.0.113.252", "203.0.113.253", "203.0.113.254"]
    legit_clean = [f"198.51.100.{h}" for h in range(10, 16)]
    legit_typo = [f"198.51.100.{h}" for h in range(16, 20)]
    reserved = set(traps) | set(legit_clean) | set(legit_typo)
    other_v4 = [a for a in v4 if a not in reserved]

    v6: list[str] = []
    seen: set[str] = set()
    while len(v6) < V6_COUNT:
        shape = rng.random()
        if shape < 0.45:  # a host in some /64, interface id small
            addr = f"2001:db8:{rng.randrange(1, 0x10000):x}:{rng.randrange(0x10000):x}::{rng.randrange(1, 0x10000):x}"
        elif shape < 0.85:  # SLAAC-like random interface id
            groups = [rng.randrange(0x10000) for _ in range(6)]
            addr = "2001:db8:" + ":".join(f"{g:x}" for g in groups)
        else:  # short forms, e.g. 2001:db8::1f
            addr = f"2001:db8::{rng.randrange(1, 0x10000):x}"
        canonical = str(ipaddress.IPv6Address(addr))  # sshd prints the compressed form
        if canonical not in seen:
            seen.add(canonical)
            v6.append(canonical)
    traps += v6[:4]
    legit_clean += v6[4:8]
    legit_typo += v6[8:10]
    other_v6 = v6[10:]
    mapped = [f"::ffff:203.0.113.{h}" for h in rng.sample(range(100, 200), MAPPED_COUNT)]

    pool = other_v4 + other_v6
    rng.shuffle(pool)
    scanners = pool[:600]  # only ever connect and close before authenticating
    attackers = pool[600:] + mapped
    rng.shuffle(attackers)
    # Heavy-tailed: a few addresses do most of the attacking, every address a few times.
    cum: list[float] = []
    total = 0.0
    for rank in range(len(attackers)):
        total += 1.0 / (rank + 3) + 0.004
        cum.append(total)
    return Addresses(attackers, cum, scanners, legit_clean, legit_typo, traps)


def fingerprint(rng: Random) -> str:
    return "SHA256:" + "".join(rng.choice(B64) for _ in range(43))


def port(rng: Random) -> int:
    return rng.randrange(1024, 65536)


def attack_user(rng: Random) -> str:
    roll = rng.random()
    if roll < 0.30:
        return "root"
    if roll < 0.33:
        return rng.choice(SPACED_USERS)
    if roll < 0.50:
        return f"{rng.choice(('user', 'test', 'admin', 'dev', 'web', 'ftp'))}{rng.randrange(1000)}"
    return rng.choice(ATTACK_USERS)


# sshd connections: each returns the lines of one connection (one pid, one address).

def sshd_invalid_user(st: State, addr: str, p: int) -> list[Line]:
    rng = st.rng
    user = attack_user(st.rng)
    if user == "root":
        user = "r00t"
    lines = [f"Invalid user {user} from {addr} port {p}"]
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        method = rng.choice(("password", "password", "password", "keyboard-interactive/pam", "none"))
        if method != "none":
            lines.append("pam_unix(sshd:auth): check pass; user unknown")
            lines.append("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                         f"tty=ssh ruser= rhost={addr} ")
        lines.append(f"Failed {method} for invalid user {user} from {addr} port {p} ssh2")
    end = rng.random()
    if end < 0.5:
        lines.append(f"Received disconnect from {addr} port {p}:11: Bye Bye [preauth]")
        lines.append(f"Disconnected from invalid user {user} {addr} port {p} [preauth]")
    elif end < 0.9:
        lines.append(f"Connection closed by invalid user {user} {addr} port {p} [preauth]")
    else:
        lines.append(f"Connection reset by invalid user {user} {addr} port {p} [preauth]")
    return lines


def sshd_valid_user_brute(st: State, addr: str, p: int) -> list[Line]:
    rng = st.rng
    user = rng.choice(VALID_TARGETS) if rng.random() < 0.4 else "root"
    method = "password" if rng.random() < 0.85 else "keyboard-interactive/pam"
    attempts = rng.choice((1, 2, 3, 6, 6))
    lines = [(f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
              f"ruser= rhost={addr}  user={user}")]
    for i in range(attempts):
        if i and rng.random() < 0.3:
            lines.append(f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                         f"tty=ssh ruser= rhost={addr}  user={user}")
        lines.append(f"Failed {method} for {user} from {addr} port {p} ssh2")
    if attempts == 6:
        lines.append(f"error: maximum authentication attempts exceeded for {user} from {addr} "
                     f"port {p} ssh2 [preauth]")
        lines.append(f"Disconnecting authenticating user {user} {addr} port {p}: "
                     "Too many authentication failures [preauth]")
        if rng.random() < 0.5:
            lines.append(f"PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh "
                         f"ruser= rhost={addr}  user={user}")
    elif rng.random() < 0.5:
        lines.append(f"Connection closed by authenticating user {user} {addr} port {p} [preauth]")
    else:
        lines.append(f"Received disconnect from {addr} port {p}:11: Bye Bye [preauth]")
        lines.append(f"Disconnected from authenticating user {user} {addr} port {p} [preauth]")
    return lines


def sshd_publickey_probe(st: State, addr: str, p: int) -> list[Line]:
    rng = st.rng
    if rng.random() < 0.5:
        user = rng.choice(VALID_TARGETS)
        who, closing = user, f"authenticating user {user}"
    else:
        user = attack_user(rng)
        who, closing = f"invalid user {user}", f"invalid user {user}"
    lines = [] if who == user else [f"Invalid user {user} from {addr} port {p}"]
    for _ in range(rng.choice((1, 2, 3))):
        lines.append(f"Failed publickey for {who} from {addr} port {p} ssh2: "
                     f"{rng.choice(KEY_TYPES)} {fingerprint(rng)}")
    if rng.random() < 0.3:
        lines.append(f"error: maximum authentication attempts exceeded for {who} from {addr} "
                     f"port {p} ssh2 [preauth]")
        lines.append(f"Disconnecting {closing} {addr} port {p}: Too many authentication failures [preauth]")
    else:
        lines.append(f"Connection closed by {closing} {addr} port {p} [preauth]")
    return lines


def sshd_not_allowed(st: State, addr: str, p: int) -> list[Line]:
    rng = st.rng
    user = rng.choice(("root", "ubuntu", "postgres", "git", "mysql", "www-data"))
    lines = [f"User {user} from {addr} not allowed because not listed in AllowUsers"]
    if rng.random() < 0.7:
        lines.append(f"Failed password for invalid user {user} from {addr} port {p} ssh2")
    lines.append(f"Connection closed by invalid user {user} {addr} port {p} [preauth]")
    return lines


def sshd_injection(st: State, addr: str, p: int) -> list[Line]:
    """User names crafted so a careless regex takes the wrong address (a legit one)."""
    rng = st.rng
    victim = rng.choice(st.addresses.legit_clean)
    user = rng.choice((f"x from {victim}", f"root from {victim} port 22", f"admin from {victim} port 22 ssh2"))
    return [
        f"Invalid user {user} from {addr} port {p}",
        f"Failed password for invalid user {user} from {addr} port {p} ssh2",
        f"Connection closed by invalid user {user} {addr} port {p} [preauth]",
    ]


def sshd_scanner(st: State, addr: str, p: int) -> list[Line]:
    roll = st.rng.random()
    if roll < 0.6:
        return [f"Connection closed by {addr} port {p} [preauth]"]
    if roll < 0.85:
        return [f"Received disconnect from {addr} port {p}:11: Bye Bye [preauth]",
                f"Disconnected from {addr} port {p} [preauth]"]
    return [f"Connection reset by {addr} port {p} [preauth]"]


def sshd_login(st: State, addr: str, p: int, typo: bool, line_index: int, tag: str) -> list[Line]:
    rng = st.rng
    user, uid = rng.choice(LEGIT_USERS)
    lines = []
    if typo:
        lines.append(f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
                     f"ruser= rhost={addr}  user={user}")
        lines.append(f"Failed password for {user} from {addr} port {p} ssh2")
    if typo or rng.random() < 0.3:
        lines.append(f"Accepted password for {user} from {addr} port {p} ssh2")
    else:
        lines.append(f"Accepted publickey for {user} from {addr} port {p} ssh2: "
                     f"{rng.choice(KEY_TYPES)} {fingerprint(rng)}")
    lines.append(f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)")
    session = st.next_session = st.next_session + 1
    logind = st.rng.choice((612, 612, 613))
    st.later(line_index + 20, [(f"systemd-logind[{logind}]", f"New session {session} of user {user}.")])
    closing = [
        (tag, f"Received disconnect from {addr} port {p}:11: disconnected by user"),
        (tag, f"Disconnected from user {user} {addr} port {p}"),
        (tag, f"pam_unix(sshd:session): session closed for user {user}"),
        (f"systemd-logind[{logind}]", f"Session {session} logged out. Waiting for processes to exit."),
        (f"systemd-logind[{logind}]", f"Removed session {session}."),
    ]
    st.later(line_index + rng.randrange(200, 40_000), closing)
    return lines


def sshd_connection(st: State, line_index: int) -> list[Line]:
    rng = st.rng
    pid = st.pid()
    tag = f"sshd-session[{pid}]" if st.upgraded else f"sshd[{pid}]"
    p = port(rng)
    roll = rng.random()
    if roll < 0.03:
        addr = rng.choice(st.addresses.legit_clean + st.addresses.legit_typo)
        body = sshd_login(st, addr, p, False, line_index, tag)
    elif roll < 0.04:
        addr = rng.choice(st.addresses.legit_typo)
        body = sshd_login(st, addr, p, True, line_index, tag)
    elif roll < 0.045:
        addr = rng.choice(st.addresses.traps)
        body = sshd_scanner(st, addr, p)
    elif roll < 0.16:
        addr = rng.choice(st.addresses.scanners)
        body = sshd_scanner(st, addr, p)
    else:
        a = st.addresses
        addr = rng.choices(a.attackers, cum_weights=a.attacker_cum_weights)[0]
        kind = rng.random()
        if kind < 0.45:
            body = sshd_invalid_user(st, addr, p)
        elif kind < 0.75:
            body = sshd_valid_user_brute(st, addr, p)
        elif kind < 0.87:
            body = sshd_publickey_probe(st, addr, p)
        elif kind < 0.95:
            body = sshd_not_allowed(st, addr, p)
        elif kind < 0.953:
            body = sshd_injection(st, addr, p)
        else:
            body = sshd_scanner(st, addr, p)
    return [(tag, msg) for msg in body]


def sshd_restart(st: State, upgrade: bool) -> list[Line]:
    old = f"sshd[{st.sshd_master_pid}]"
    st.sshd_master_pid = st.pid()
    new = f"sshd[{st.sshd_master_pid}]"
    st.upgraded = st.upgraded or upgrade
    return [
        (old, "Received signal 15; terminating."),
        ("systemd[1]", "Stopping ssh.service - OpenBSD Secure Shell server..."),
        ("systemd[1]", "ssh.service: Deactivated successfully."),
        ("systemd[1]", "Stopped ssh.service - OpenBSD Secure Shell server."),
        ("systemd[1]", "Starting ssh.service - OpenBSD Secure Shell server..."),
        (new, "Server listening on 0.0.0.0 port 22."),
        (new, "Server listening on :: port 22."),
        ("systemd[1]", "Started ssh.service - OpenBSD Secure Shell server."),
    ]


# The other programs of auth.log.

def cron_session(st: State, line_index: int) -> list[Line]:
    rng = st.rng
    tag = f"CRON[{st.pid()}]"
    user, uid = ("root", 0) if rng.random() < 0.8 else rng.choice(LEGIT_USERS)
    lines = [(tag, f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)")]
    if rng.random() < 0.4:
        lines.append((tag, f"({user}) CMD ({rng.choice(CRON_COMMANDS)})"))
    st.later(line_index + rng.randrange(1, 60), [(tag, f"pam_unix(cron:session): session closed for user {user}")])
    return lines


def cron_trap(st: State) -> list[Line]:
    """A user's cron job echoing text that looks like sshd; the program is CRON, not sshd."""
    trap = st.rng.choice(st.addresses.traps)
    user = st.rng.choice(LEGIT_USERS)[0]
    return [(f"CRON[{st.pid()}]",
             f"({user}) CMD (logger Failed password for root from {trap} port 22 ssh2)")]


def sudo_event(st: State) -> list[Line]:
    rng = st.rng
    user, uid = rng.choice(LEGIT_USERS)
    tty = f"pts/{rng.randrange(4)}"
    lines: list[Line] = []
    if rng.random() < 0.12:
        rhost = rng.choice(st.addresses.traps) if rng.random() < 0.25 else ""
        lines.append(("sudo", (f"pam_unix(sudo:auth): authentication failure; logname={user} uid={uid} "
                               f"euid=0 tty=/dev/{tty} ruser={user} rhost={rhost}  user={user}")))
        if rng.random() < 0.3:
            lines.append(("sudo", (f"{user} : 1 incorrect password attempt ; TTY={tty} ; "
                                   f"PWD=/home/{user} ; USER=root ; COMMAND={rng.choice(SUDO_COMMANDS)}")))
            return lines
    lines.append(("sudo", (f"{user:>8} : TTY={tty} ; PWD=/home/{user} ; USER=root ; "
                           f"COMMAND={rng.choice(SUDO_COMMANDS)}")))
    lines.append(("sudo", f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})"))
    lines.append(("sudo", "pam_unix(sudo:session): session closed for user root"))
    return lines


def su_event(st: State) -> list[Line]:
    rng = st.rng
    user, uid = rng.choice(LEGIT_USERS)
    tag = f"su[{st.pid()}]"
    tty = f"pts/{rng.randrange(4)}"
    if rng.random() < 0.2:
        rhost = rng.choice(st.addresses.traps) if rng.random() < 0.3 else ""
        return [
            (tag, (f"pam_unix(su:auth): authentication failure; logname={user} uid={uid} euid=0 "
                   f"tty=/dev/{tty} ruser={user} rhost={rhost}  user=root")),
            (tag, f"FAILED SU (to root) {user} on {tty}"),
        ]
    return [
        (tag, f"(to root) {user} on {tty}"),
        (tag, f"pam_unix(su-l:session): session opened for user root(uid=0) by {user}(uid={uid})"),
        (tag, "pam_unix(su-l:session): session closed for user root"),
    ]


def logind_event(st: State) -> list[Line]:
    rng = st.rng
    session = st.next_session = st.next_session + 1
    user = rng.choice(LEGIT_USERS)[0]
    return [
        ("systemd-logind[612]", f"New session c{session} of user {user}."),
        ("systemd-logind[612]", f"Session c{session} logged out. Waiting for processes to exit."),
        ("systemd-logind[612]", f"Removed session c{session}."),
    ]


def systemd_event(st: State) -> list[Line]:
    rng = st.rng
    if rng.random() < 0.5:
        unit, desc = rng.choice(SYSTEMD_UNITS)
        return [
            ("systemd[1]", f"Starting {unit} - {desc}..."),
            ("systemd[1]", f"{unit}: Deactivated successfully."),
            ("systemd[1]", f"Finished {unit} - {desc}."),
        ]
    user, uid = rng.choice(LEGIT_USERS)
    pid = st.pid()
    return [
        (f"systemd[{pid}]", f"pam_unix(systemd-user:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        ("systemd[1]", f"Started user@{uid}.service - User Manager for UID {uid}."),
        ("systemd[1]", f"Started session-{st.next_session}.scope - Session {st.next_session} of User {user}."),
    ]


def dbus_event(st: State) -> list[Line]:
    name, unit, comm = st.rng.choice(DBUS_SERVICES)
    tag = "dbus-daemon[580]"
    return [
        (tag, (f"[system] Activating via systemd: service name='{name}' unit='{unit}' requested by "
               f"':1.{st.rng.randrange(10, 9999)}' (uid=0 pid={st.pid()} comm=\"{comm}\" label=\"unconfined\")")),
        (tag, f"[system] Successfully activated service '{name}'"),
    ]


def kernel_event(st: State) -> list[Line]:
    """Kernel messages; the timestamp placeholder is filled in when written."""
    rng = st.rng
    if rng.random() < 0.8:
        if rng.random() < 0.9:
            src = f"203.0.113.{rng.randrange(1, 255)}"
        else:
            src = rng.choice(st.addresses.traps)
        dpt = rng.choice((22, 22, 23, 3389, 445, 5900, 8080))
        msg = (f"[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} "
               f"DST={SERVER_V4} LEN=44 TOS=0x00 PREC=0x00 TTL={rng.randrange(30, 250)} ID={rng.randrange(65536)} "
               f"PROTO=TCP SPT={port(rng)} DPT={dpt} WINDOW=1024 RES=0x00 SYN URGP=0")
    else:
        msg = rng.choice((
            ("audit: type=1400 audit(0.0:1): apparmor=\"DENIED\" operation=\"open\" class=\"file\" "
             "profile=\"/usr/sbin/cupsd\" name=\"/etc/ssl/openssl.cnf\" pid=1234 comm=\"cupsd\" "
             "requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0"),
            "TCP: request_sock_TCP: Possible SYN flooding on port 22. Sending cookies.  Check SNMP counters.",
            "nf_conntrack: nf_conntrack: table full, dropping packet",
            "EXT4-fs (vda1): resizing filesystem from 5242619 to 10485499 blocks",
        ))
    return [("kernel", msg)]


OTHER_EVENTS: tuple[tuple[float, Callable[[State], list[Line]]], ...] = (
    (0.22, sudo_event),
    (0.06, su_event),
    (0.10, logind_event),
    (0.14, systemd_event),
    (0.08, dbus_event),
    (0.40, kernel_event),
)


def generate(lines: int, seed: int) -> Iterator[str]:
    """Yields exactly ``lines`` log lines, each ending in a newline."""
    rng = Random(seed)
    st = State(rng, build_addresses(rng))
    other_events = [fn for _, fn in OTHER_EVENTS]
    other_weights = [w for w, _ in OTHER_EVENTS]
    # Blocks average ~5 sshd lines (counting session ends written later) and ~2.2 other
    # lines; choose sshd blocks so that about SSHD_SHARE of the lines are sshd's.
    sshd_block_share = SSHD_SHARE / 5 / (SSHD_SHARE / 5 + (1 - SSHD_SHARE) / 2.2)
    upgrade_line = int(lines * UPGRADE_AT)
    reload_lines = [int(lines * 0.15), int(lines * 0.77)]
    emitted = 0
    queue: list[Line] = [("sshd[811]", "Server listening on :: port 22."),
                         ("sshd[811]", "Server listening on 0.0.0.0 port 22.")]  # popped from the end
    while emitted < lines:
        if not queue:
            if st.pending and st.pending[0][0] <= emitted:
                queue = heapq.heappop(st.pending)[2]
            elif not st.upgraded and emitted >= upgrade_line:
                queue = sshd_restart(st, upgrade=True)
            elif reload_lines and emitted >= reload_lines[0]:
                reload_lines.pop(0)
                queue = sshd_restart(st, upgrade=False)
            elif rng.random() < sshd_block_share:
                queue = sshd_connection(st, emitted)
            elif rng.random() < 0.35:
                queue = cron_session(st, emitted) if rng.random() > 0.0005 else cron_trap(st)
            else:
                queue = rng.choices(other_events, other_weights)[0](st)
            queue.reverse()
            continue
        tag, msg = queue.pop()
        second = emitted * SECONDS_PER_DAY // lines
        hh, rest = divmod(second, 3600)
        mm, ss = divmod(rest, 60)
        if tag == "kernel":
            uptime = UPTIME_AT_MIDNIGHT + emitted * SECONDS_PER_DAY / lines
            msg = f"[{uptime:.6f}] {msg}"
        yield f"{DAY_PREFIX} {hh:02d}:{mm:02d}:{ss:02d} {HOSTNAME} {tag}: {msg}\n"
        emitted += 1


def generator_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def write_authlog(out: Path, lines: int = DEFAULT_LINES, seed: int = DEFAULT_SEED) -> dict:
    """Writes the log and its meta file atomically; returns the meta record."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as f:
        chunk: list[str] = []
        for line in generate(lines, seed):
            chunk.append(line)
            if len(chunk) == 10_000:
                data = "".join(chunk).encode("utf-8")
                digest.update(data)
                size += len(data)
                f.write(data)
                chunk.clear()
        data = "".join(chunk).encode("utf-8")
        digest.update(data)
        size += len(data)
        f.write(data)
    os.replace(tmp, out)
    meta = {"seed": seed, "lines": lines, "bytes": size, "sha256": digest.hexdigest(),
            "generator_sha256": generator_digest()}
    meta_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def is_current(out: Path, lines: int, seed: int) -> bool:
    """True when OUT exists and was written by this generator with this seed and size."""
    try:
        meta = json.loads(meta_path(out).read_text())
        size = out.stat().st_size
    except (OSError, ValueError):
        return False
    return (meta.get("seed") == seed and meta.get("lines") == lines and meta.get("bytes") == size
            and meta.get("generator_sha256") == generator_digest())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="file to write, e.g. tests/bench/data/auth.log")
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    meta = write_authlog(args.out, args.lines, args.seed)
    print(f"{args.out}: {meta['lines']} lines, {meta['bytes']} bytes, sha256 {meta['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
