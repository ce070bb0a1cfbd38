"""The checkpoint file of versions before the store: the journal position and the failure
windows in one JSON file. The agent now keeps them in sqlite (agent/store.py); this module reads
such a file so the store can import it once (and writes one, for the tests of that import)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.addresses import parse_address
from agent.jail import Jail
from agent.sources.journal import Position

log = logging.getLogger("jailwarden.state")

FORMAT = 2  # 2: the journal position in whole microseconds


class StateError(Exception):
    """A checkpoint file that cannot be read, with the path and the reason."""


@dataclass(slots=True)
class Checkpoint:
    journal: Position | None = None
    windows: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # jail -> address -> times

    @classmethod
    def of(cls, journal: Position | None, jails: dict[str, Jail]) -> Checkpoint:
        return cls(journal, {name: {str(address): times for address, times in jail.windows().items()}
                             for name, jail in jails.items()})

    def restore(self, jails: dict[str, Jail], now: float) -> int:
        """Put the saved windows back into the jails of the same name; returns how many."""
        restored = 0
        for name, windows in self.windows.items():
            jail = jails.get(name)
            if jail is None:
                continue
            for address, times in windows.items():
                jail.restore(parse_address(address), times, now)
                restored += 1
        return restored


def load(path: Path) -> Checkpoint | None:
    """The saved checkpoint, or None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        journal = data.get("journal")
        position = Position(str(journal["cursor"]), int(journal["usec"])) if journal else None
        windows = {str(jail): {str(parse_address(address)): [float(t) for t in times]
                               for address, times in addresses.items()}
                   for jail, addresses in data.get("windows", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise StateError(f"{path}: not a jailwarden checkpoint: {error}") from None
    return Checkpoint(position, windows)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a crash leaves the old checkpoint or the new one, never a mix."""
    journal = checkpoint.journal
    data = {
        "format": FORMAT,
        "journal": {"cursor": journal.cursor, "usec": journal.usec} if journal else None,
        "windows": checkpoint.windows,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
