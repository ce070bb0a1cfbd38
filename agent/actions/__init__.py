"""Actions: what a ban sets off besides the firewall (a webhook, a mail, AbuseIPDB and blocklist.de
reports, plug-ins), run off the ban path by agent/actions/runner.py. Each action is one module,
registered here by name.

An action is a class built as `Action(**options)` from its `[actions.NAME]` table (raising
ActionError, TypeError or ValueError for options it cannot take), with `on_ban(notice)` and
`on_unban(notice)`, plain or async, and optionally `close()`, called when the agent stops. A
delivery that fails raises ActionFailed (or any exception) and is tried again later. No shell,
no command strings: a plug-in is a Python class, named by `type = "package.module:Class"` or by
an entry point in the group `jailwarden.actions`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from importlib.metadata import entry_points

from agent.bans import Ban
from agent.evidence import Line

ACTIONS = {
    "webhook": "agent.actions.webhook:WebhookAction",
    "abuseipdb": "agent.actions.abuseipdb:AbuseIPDBAction",
    "mail": "agent.actions.mail:MailAction",
    "blocklist-de": "agent.actions.blocklist_de:BlocklistDeAction",
}
ENTRY_POINT_GROUP = "jailwarden.actions"


class ActionError(Exception):
    """An action that cannot be built: unknown type, unloadable plug-in, bad options."""


class ActionFailed(Exception):
    """One delivery failed. `retry_after`: seconds the far end asked us to wait; `permanent`:
    trying again cannot help (the far end refused the request itself)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass(slots=True, frozen=True)
class BanNotice:
    """What an action is told: `kind` "ban" or "unban" of `address` (text: an address or a
    network) in `jail`; `end` is None for a permanent ban.

    A ban a jail decided also has its `failures` and the last few `lines` that led to it, each
    "ISO-TIME MESSAGE" (for the admin: as logged), and `public_lines`, the same fit to leave the
    host (see agent/evidence.py). Bans by hand, from the fleet or by prefix have none.
    """

    kind: str
    jail: str
    address: str
    start: float
    end: float | None
    offence: int
    reason: str
    failures: int = 0
    lines: tuple[str, ...] = ()
    public_lines: tuple[str, ...] = ()

    @classmethod
    def of(cls, kind: str, ban: Ban, failures: int = 0, evidence: tuple[Line, ...] = ()) -> BanNotice:
        return cls(kind, ban.jail, str(ban.address), ban.start, None if ban.end == math.inf else ban.end,
                   ban.offence, ban.reason, failures, tuple(line.text() for line in evidence),
                   tuple(line.public for line in evidence))


def action_class(reference: str) -> type:
    """A shipped action's name, "module:Class", or the name of an entry point in the group
    jailwarden.actions. ActionError says which it tried and why it failed."""
    target = ACTIONS.get(reference)
    if target is None and ":" not in reference:
        found = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == reference]
        if not found:
            raise ActionError(f"no action {reference!r}: not shipped ({', '.join(ACTIONS)}), not module:Class, "
                              f"and no entry point of that name in group {ENTRY_POINT_GROUP}")
        try:
            return found[0].load()
        except Exception as error:  # noqa: BLE001 - a plug-in's import can fail any way
            raise ActionError(f"action {reference!r}: loading entry point {found[0].value}: {error!r}") from None
    module, _, attribute = (target or reference).partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception as error:  # noqa: BLE001
        raise ActionError(f"action {reference!r}: cannot load {module}:{attribute}: {error!r}") from None
