"""What `backend = "auto"` means on this host: nftables when the host's firewall is in nftables
already (any table in the ruleset: nftables.service, firewalld, iptables-nft rules, or the
`inet jailwarden` table of an earlier run), ipset otherwise. Read in-process through
libnftables, never by running `nft`.
"""

from __future__ import annotations

from . import BackendError
from ._nftables_ruleset import FAMILY, TABLE
from .libnftables import NftError, open_nftables, run_json


def detect_backend() -> tuple[str, str]:
    """(backend name, why) for this host's network namespace."""
    try:
        handle = open_nftables()
        listing = run_json(handle, [{"list": {"tables": {}}}])
    except (BackendError, NftError, OSError) as error:
        return "ipset", f"the nftables ruleset cannot be read ({error})"
    tables = [f"{entry['table'].get('family')} {entry['table'].get('name')}"
              for entry in listing.get("nftables", []) if "table" in entry]
    if f"{FAMILY} {TABLE}" in tables:
        return "nftables", f"table {FAMILY} {TABLE} of an earlier run is there"
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        return "nftables", f"the host's firewall is in nftables (tables: {shown})"
    return "ipset", "no nftables table is in use"
