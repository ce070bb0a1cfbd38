# The two set-up commands of the README. Both install what is missing first and are fast
# when everything is already there.
VENV := .venv
PY := $(VENV)/bin/python
CONFIG := packaging/etc/jailwarden.toml

.PHONY: run test bench deps

deps:
	@sh packaging/deps.sh $(VENV)

run: deps
	$(VENV)/bin/jailwarden check-config --config $(CONFIG)
	@echo "jailwarden: running in dry-run mode (bans are logged, the firewall is left alone); Ctrl-C stops it"
	$(VENV)/bin/jailwarden run --dry-run --config $(CONFIG)

test: deps
	$(PY) -m pytest -q -rs tests

# All benchmarks, each against Fail2Ban where it has a counterpart (~12 min); reports in tests/bench/data/.
bench: deps
	$(PY) tests/bench/bench_sshd.py
	$(PY) tests/bench/bench_journal.py
	$(PY) tests/bench/bench_syslog.py
	$(PY) tests/bench/bench_firewall.py
	$(PY) tests/bench/bench_flood.py
	$(PY) tests/bench/bench_store.py
