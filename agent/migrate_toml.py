"""The TOML that `jailwarden import-fail2ban` writes: tables of `key = value` lines and comments."""

from __future__ import annotations

import math
import textwrap

from agent.config_values import format_duration

_WIDTH = 110


class Document:
    """Tables in the order opened; keys and comments in each in the order added."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, list[str]]] = [("", [])]

    def table(self, header: str) -> None:
        self.tables.append((header, []))

    def set(self, key: str, value: object, comment: str = "") -> None:
        self.tables[-1][1].append(f"{key} = {value_text(value)}" + (f"  # {one_line(comment)}" if comment else ""))

    def comment(self, text: str, prefix: str = "# ") -> None:
        """`text` as comment lines, wrapped; lines after the first are indented under the text."""
        lines = textwrap.wrap(one_line(text), _WIDTH - len(prefix), break_on_hyphens=False,
                              break_long_words=False) or [""]
        self.tables[-1][1].extend([prefix + lines[0]] + ["#" + " " * (len(prefix) - 1) + line for line in lines[1:]])

    def text(self) -> str:
        blocks = ["\n".join(([header] if header else []) + lines) for header, lines in self.tables]
        return "\n\n".join(block for block in blocks if block) + "\n"


def duration(seconds: float) -> str:
    return "permanent" if seconds == math.inf else format_duration(seconds)


def one_line(text: str) -> str:
    """Comments hold no newlines or control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def value_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {value_text(item)}" for key, item in value.items()) + " }"
    text = str(value)
    escaped = "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
                      for c in text)
    return f'"{escaped}"'
