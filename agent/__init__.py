"""jailwarden agent: deciding who to ban (core) and the I/O around it (edges)."""
