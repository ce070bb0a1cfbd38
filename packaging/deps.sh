#!/bin/sh
# Installs what jailwarden needs to build, run and test from a source checkout, and nothing
# that is already there. The one list of system packages; later work extends it here.
# Usage: packaging/deps.sh [VENV_DIR]      (root on Debian 12 / Ubuntu; idempotent)
#        packaging/deps.sh --packaging   only what `make deb` / `make rpm` and the package tests need
set -eu

# Build: libsystemd-dev, pkg-config and gcc compile systemd-python; python3-venv makes the venv.
# Runtime: iptables carries libxtables/libiptc that python-iptables loads; ipset and nftables
# carry the kernel-side libraries (libnftables) the firewall backends bind to.
# Tests: systemd (systemd-journald), rsyslog (with rsyslog-relp for the snippet's RELP) and
# bsdutils (logger) as real log clients, redis-server and redis-sentinel as the fleet tests'
# Redis, and openssh-server with sshpass for a real sshd to attack; python3-pyroute2,
# python3-iptables, python3-nftables and python3-redis so the firewall and fleet tests also run
# on the distribution's releases of those libraries (Debian 12: pyroute2 0.7.2, python-iptables
# 1.0.1, redis 4.3.4), which the packages use; php-cli (php) runs the README's PHP examples of
# applications reporting failures. The tests start their own rsyslogd, sshd, redis-server and
# redis-sentinel; on a host whose init starts services, installing these starts the system's as
# usual (the tests never use or stop those).
APT_PACKAGES="python3 python3-venv python3-dev gcc pkg-config libsystemd-dev iptables ipset nftables \
systemd rsyslog rsyslog-relp bsdutils redis-server redis-sentinel openssh-server sshpass python3-pyroute2 \
python3-iptables python3-nftables python3-redis php-cli"

# Packaging: debhelper, dh-python and fakeroot build the .deb (dpkg-buildpackage), lintian checks
# it, rpm carries rpmbuild for the .spec, debootstrap makes the clean Debian 12 root of the
# package install test, and systemd-container's systemd-nspawn boots that root with systemd as
# its PID 1 to run the unit as a real service.
PACKAGING_PACKAGES="dpkg-dev debhelper dh-python python3-all fakeroot lintian rpm debootstrap systemd-container"

install_missing() {
    missing=""
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $pkg"
        fi
    done
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: missing system packages:$missing -- run as root or install them with apt-get" >&2
        exit 1
    fi
    echo "deps: installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
}

if [ "${1:-}" = "--packaging" ]; then
    install_missing $PACKAGING_PACKAGES
    exit 0
fi

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)

install_missing $APT_PACKAGES

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "deps: jailwarden needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
    echo "deps: install a newer one (e.g. python3.11, python3.11-venv, python3.11-dev) and run" \
         "'PYTHON=python3.11 make test'" >&2
    exit 1
fi

# The venv is rebuilt only when the project's declared dependencies changed since the last install.
stamp="$VENV/.jailwarden-installed"
if [ ! -x "$VENV/bin/python" ]; then
    echo "deps: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$here/setup.cfg" -nt "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
    echo "deps: installing jailwarden and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
    touch "$stamp"
fi
