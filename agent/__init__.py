"""jailwarden agent: deciding who to ban (core) and the I/O around it (edges)."""

__version__ = "0.1.0"
