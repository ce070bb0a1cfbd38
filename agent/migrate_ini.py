"""Fail2Ban's jail configuration as `jailwarden import-fail2ban` reads it: jail.conf, jail.d/ and
jail.local merged by parsers/fail2ban_ini.py, broken files reported and skipped rather than fatal,
and where each value a jail sees was set, for warnings.

Nothing here runs anything a file says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parsers.fail2ban_ini import DEFAULT, Fail2BanConfig, Setting, config_files


@dataclass(slots=True, frozen=True)
class Location:
    """Where a jail's value was set: its own section, or [DEFAULT] (then `jail` names the user)."""

    file: str
    section: str
    key: str
    jail: str | None = None

    def __str__(self) -> str:
        used_by = f" (jail {self.jail})" if self.jail and self.jail != self.section else ""
        return f"{self.file}: [{self.section}] {self.key}{used_by}"


class JailConfig(Fail2BanConfig):
    """`directory`'s jail configuration in Fail2Ban's order; files that cannot be read are left
    out and listed in `problems`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(config_files(directory / "jail"), strict=False)
        self.directory = directory
        # Fail2Ban adds these before interpolating jails (jail.conf uses them in ignorecommand and actions).
        self.defaults["fail2ban_confpath"] = Setting(str(directory), "(Fail2Ban)")
        self.defaults["fail2ban_version"] = Setting("unknown", "(Fail2Ban)")

    def has_own(self, section: str, key: str) -> bool:
        return section != DEFAULT and key in self.own_options(section)

    def location(self, section: str, key: str) -> Location:
        setting = self.setting(section, key)
        file = setting.file if setting is not None else str(self.directory / "jail.conf")
        if self.has_own(section, key):
            return Location(file, section, key, section)
        return Location(file, DEFAULT, key, section if section != DEFAULT else None)
