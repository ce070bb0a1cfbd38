"""Sources: where `LogEvent`s come from. Each source is one module, registered here by name.

A source is built as `Source(config, sink)`, where `config` is its section of the config
(`agent.config.JournalConfig`, `SyslogConfig`) and `sink(event)` hands one event to the
pipeline; it is called on the event loop and returns once the event's effects are applied.
`await source.start()` opens sockets or readers (raising `SourceError` with what and where
when it cannot), `await source.stop()` closes them, and `source.stats()` returns counters
(received, dropped, malformed, ...) by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from agent.events import LogEvent

Sink = Callable[[LogEvent], None]


class SourceError(Exception):
    """A source that cannot start: what it tried, where, and why."""


class Source(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


# Imported only when enabled: the journal source needs systemd-python, which a syslog-only
# host may lack.
SOURCES = {
    "journal": "agent.sources.journal:JournalSource",
    "syslog": "agent.sources.syslog:SyslogSource",
}


def source_class(name: str) -> type:
    module, _, attribute = SOURCES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
