# The two set-up commands of the README. Both install what is missing first and are fast
# when everything is already there.
VENV := .venv
PY := $(VENV)/bin/python
CONFIG := packaging/etc/jailwarden.toml

.PHONY: run test fuzz bench deps deb rpm packaging-deps

deps:
	@sh packaging/deps.sh $(VENV)

run: deps
	$(VENV)/bin/jailwarden check-config --config $(CONFIG)
	@echo "jailwarden: running in dry-run mode (bans are logged, the firewall is left alone); Ctrl-C stops it"
	$(VENV)/bin/jailwarden run --dry-run --config $(CONFIG)

test: deps
	$(PY) -m pytest -q -rs tests

# The hypothesis tests (fuzzing and the filters' injection properties) with a long, random budget:
# JW_FUZZ_EXAMPLES examples per test (20,000 by default: about 40 min on 2 cores; 3,000 took 5.5 min).
# What a run finds is kept in ~/.cache/jailwarden/hypothesis and tried first by the next one.
fuzz: deps
	$(PY) -m pytest -q -rs --hypothesis-profile=fuzz tests/fuzz tests/filters/test_injection.py

# All benchmarks, each against Fail2Ban where it has a counterpart (~16 min); reports in tests/bench/data/.
bench: deps
	$(PY) tests/bench/bench_sshd.py
	$(PY) tests/bench/bench_journal.py
	$(PY) tests/bench/bench_syslog.py
	$(PY) tests/bench/bench_firewall.py
	$(PY) tests/bench/bench_flood.py
	$(PY) tests/bench/bench_store.py
	$(PY) tests/bench/bench_fleet.py
	$(PY) tests/bench/bench_syslog_flood.py

# Packages, into dist/. Each builds from a copy of the working tree's product files in build/,
# so what is packaged is what is checked out (no caches, no venv).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' agent/__init__.py)
PRODUCT := agent parsers firewall packaging/bin packaging/etc packaging/rsyslog packaging/man \
	packaging/completion packaging/systemd README.md
DEB_TREE := build/deb/jailwarden-$(VERSION)

packaging-deps:
	@sh packaging/deps.sh --packaging

deb: packaging-deps
	rm -rf build/deb && mkdir -p $(DEB_TREE) dist
	tar -c --exclude=__pycache__ --exclude='*.pyc' $(PRODUCT) | tar -x -C $(DEB_TREE)
	cp -r packaging/debian $(DEB_TREE)/debian
	cp packaging/systemd/jailwarden.service $(DEB_TREE)/debian/jailwarden.service
	cd $(DEB_TREE) && dpkg-buildpackage -us -uc -b
	cp build/deb/jailwarden_$(VERSION)_all.deb build/deb/jailwarden-rsyslog_$(VERSION)_all.deb \
		build/deb/jailwarden_$(VERSION)_*.buildinfo build/deb/jailwarden_$(VERSION)_*.changes dist/
	lintian --fail-on error dist/jailwarden_$(VERSION)_all.deb dist/jailwarden-rsyslog_$(VERSION)_all.deb

RPM_TOP := $(CURDIR)/build/rpm

rpm: packaging-deps
	rm -rf $(RPM_TOP) && mkdir -p $(RPM_TOP)/SOURCES dist
	tar -cz --exclude=__pycache__ --exclude='*.pyc' --transform 's,^,jailwarden-$(VERSION)/,' \
		-f $(RPM_TOP)/SOURCES/jailwarden-$(VERSION).tar.gz $(PRODUCT)
	rpmbuild -bb --define "_topdir $(RPM_TOP)" --define "version $(VERSION)" --nodeps packaging/rpm/jailwarden.spec
	cp $(RPM_TOP)/RPMS/noarch/jailwarden-$(VERSION)-*.noarch.rpm \
		$(RPM_TOP)/RPMS/noarch/jailwarden-rsyslog-$(VERSION)-*.noarch.rpm dist/
