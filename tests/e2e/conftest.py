"""The end-to-end tests reuse the integration fixtures: a private journald and real daemons."""

from integration.conftest import journal_namespace  # noqa: F401 - a fixture, found by name
