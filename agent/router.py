"""The router: which filters want an event, found by dictionary lookups on the program's
identity (journal fields, syslog tag), never by running every filter's regexes."""

from __future__ import annotations

from collections.abc import Iterable

from agent.events import LogEvent
from parsers.filter import Filter

# The field a journal alternative is indexed by: the most selective one it names.
_INDEX_PREFERENCE = ("_SYSTEMD_UNIT", "_EXE", "_COMM", "SYSLOG_IDENTIFIER")


def _index_field(group: dict[str, frozenset[str]]) -> str:
    for name in _INDEX_PREFERENCE:
        if name in group:
            return name
    return min(group)


class Router:
    """Filters indexed by the identity fields they name."""

    def __init__(self, filters: Iterable[Filter]) -> None:
        self.filters = list(dict.fromkeys(filters))
        self._journal: dict[str, dict[str, list[Filter]]] = {}
        self._tags: dict[str, list[Filter]] = {}
        for flt in self.filters:
            for tag in flt.syslog:
                self._tags.setdefault(tag, []).append(flt)
            # A filter without journal fields identifies journal entries by their tag.
            for group in flt.journal_routes:
                field = _index_field(group)
                by_value = self._journal.setdefault(field, {})
                for value in group[field]:
                    filters = by_value.setdefault(value, [])
                    if flt not in filters:
                        filters.append(flt)

    def candidates(self, event: LogEvent) -> list[Filter]:
        """The filters that may want this event (each still checks the whole identity)."""
        fields = event.fields
        if event.source != "journal":
            return self._tags.get(fields.get("SYSLOG_IDENTIFIER"), [])
        found: list[Filter] = []
        for field, by_value in self._journal.items():
            value = fields.get(field)
            if value is not None:
                hits = by_value.get(value)
                if hits:
                    found = hits if not found else found + [f for f in hits if f not in found]
        return found

    def journal_matches(self) -> list[dict[str, list[str]]]:
        """The union of every filter's journal identity, as groups for the journal reader's
        server-side matching: fields within a group are ANDed (values of one field ORed), and
        groups are alternatives. Journald then skips entries no filter wants."""
        groups: list[dict[str, list[str]]] = []
        for flt in self.filters:
            for group in flt.journal_routes:
                match = {field: sorted(values) for field, values in sorted(group.items())}
                if match not in groups:
                    groups.append(match)
        return groups
