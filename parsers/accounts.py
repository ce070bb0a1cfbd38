"""Account names among a filter's `_UID` values, for TOML filters and Fail2Ban journalmatch alike.

Daemons such as postfix or postgres run as a user whose uid each installation picks; naming
the account keeps their identity pinned to a uid, so trusted, on every distribution. The
caller looks the names up (parsers do no I/O); a name without an account here matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from parsers.errors import FilterError

AccountLookup = Callable[[str], int | None]
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)


def uids(file: str, where: str, values: Iterable[str], accounts: AccountLookup | None) -> frozenset[str]:
    """The `_UID` values with account names replaced by their uids; names without an account
    on this host are left out (without `accounts`, kept as text, which matches no entry)."""
    found = set()
    for value in values:
        if value.isdigit():
            found.add(value)
        elif not _ACCOUNT.fullmatch(value):
            raise FilterError(file, where, f"{value!r} is neither a uid nor an account name")
        elif accounts is None:
            found.add(value)
        elif (uid := accounts(value)) is not None:
            found.add(str(uid))
    return frozenset(found)
