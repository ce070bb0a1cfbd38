"""Secrets (keys, passwords, tokens) read from files that only their owner may read."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretError(Exception):
    """A secret file that is missing, empty or readable by others."""


def read_secret(path: Path, what: str) -> bytes:
    """The contents of a secret file, which only its owner (root) may read."""
    try:
        mode = os.stat(path).st_mode
        data = Path(path).read_bytes().strip()
    except OSError as error:
        raise SecretError(f"{what} {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    if not data:
        raise SecretError(f"{what} {path} is empty")
    return data
