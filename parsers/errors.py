"""The error every filter loader raises: which file, which place in it, and why."""

from __future__ import annotations


class FilterError(Exception):
    """A filter that cannot be used, with the file, the place in it and the reason."""

    def __init__(self, file: str, where: str, reason: str) -> None:
        super().__init__(f"{file}: {where}: {reason}" if where else f"{file}: {reason}")
        self.file = file
        self.where = where
        self.reason = reason
